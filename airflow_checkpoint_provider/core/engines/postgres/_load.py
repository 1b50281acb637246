"""Loading side by side, database properties, and the verification against the fingerprints."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import psycopg
from psycopg import sql

from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres._common import (
    RestoreVerificationError,
    _Item,
    log,
)
from airflow_checkpoint_provider.core.engines.postgres._dump import (
    DumpInfo,
)
from airflow_checkpoint_provider.core.engines.postgres._tool import _ToolMixin
from airflow_checkpoint_provider.core.engines.postgres.capture import (
    capture,
    fingerprint,
)
from airflow_checkpoint_provider.core.engines.postgres.health import split_qname
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
)
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.staging import Staging


class _LoadMixin(_ToolMixin):
    """Loading side by side, database properties, and the verification against the fingerprints. Mixed into :class:`~.restore.PostgresRestore`."""

    def abort(self) -> None:
        raise NotImplementedError  # :class:`~._switching._SwitchMixin` drops the copies

    def safety_capture(self, staging: Staging) -> list[Artifact]:
        with self._admin("listing databases for the safety checkpoint") as conn:
            existing = set(self._databases(conn))
        dbs = [i.target_db for i in self.items if i.target_db in existing]
        if not dbs:
            log.info(
                "safety checkpoint: none of %s exists on %s yet: nothing to capture",
                [i.target_db for i in self.items],
                self.target.label,
            )
            return []
        opts = dict(self.capture_options)
        if "pg_dump" not in opts and os.sep in self.pg_restore:
            sibling = os.path.join(os.path.dirname(self.pg_restore), "pg_dump")
            if os.access(sibling, os.X_OK):
                opts["pg_dump"] = sibling
        return capture(self.target, staging, databases=dbs, **opts)

    def prepare(self) -> None:
        """Side by side: load every database into ``<db>__restoring`` and verify it. In place: checks only."""
        if self._problems:
            raise CheckpointError(
                f"{self.target.label}: cannot restore: {'; '.join(self._problems)}",
                hint="plan() lists the problems; nothing was changed",
            )
        if self.mode == "in_place":
            self._tool()
            for item in self.items:
                self._inspect(item)
            return
        self.journal.phase("loading", staging=[i.staging for i in self.items])
        self._watchers.warm(min(len(self.items), 2))  # the cut-over's guards start meanwhile, off its clock
        try:
            for item in self.items:
                self._prepare_item(item)
        except BaseException:
            with contextlib.suppress(Exception):
                self.abort()
            self._watchers.close()
            raise
        self.journal.note(
            checkpoint_id=self.checkpoint_id,
            items=[
                {
                    "target": i.target_db,
                    "staging": i.staging,
                    "new_limit": i.info.connection_limit if i.info and i.info.connection_limit is not None else -1,
                }
                for i in self.items
            ],
        )
        self.journal.phase("verified")

    def _create_database(self, conn: psycopg.Connection, name: str, info: DumpInfo) -> list[str]:
        warnings: list[str] = []
        base = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        # values as pg_dump printed them: a quoted literal, or a keyword (the parser allows nothing else)
        opts = [sql.SQL(f" {k} = {v}") for k, v in info.create_options]
        try:
            conn.execute(sql.Composed([base, *opts]))
        except psycopg.Error as exc:
            if not opts or getattr(exc, "sqlstate", "") in ("42501", "42P04"):
                raise self._sql_error(exc, name, f"creating database {name}") from None
            text = " ".join(str(exc).split())
            warnings.append(
                f"{name} could not be created with the dump's "
                f"{' '.join(f'{k}={v}' for k, v in info.create_options)} ({text}); it was created with "
                "the server's default encoding and locale"
            )
            log.warning("%s/%s: %s", self.target.label, name, warnings[-1])
            self._exec(conn, base, db=name, action=f"creating database {name}")
        if not self.no_owner and info.owner:
            try:
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO ").format(sql.Identifier(name)) + sql.SQL(info.owner))
            except psycopg.Error as exc:
                warnings.append(f"could not give {name} to {info.owner}: {' '.join(str(exc).split())}")
        return warnings

    def _create_schemas(self, item: _Item, dbname: str) -> list[str]:
        """A ``tables=`` dump has no CREATE SCHEMA: create its tables' schemas that are missing."""
        if not item.filters["tables"]:
            return []
        schemas = set(item.info.relation_schemas if item.info else ())
        for qname in item.artifact.fingerprints.get("rows") or {}:
            parts = split_qname(qname)
            if parts:
                schemas.add(parts[0])
        created = []
        with C.connect(self.target, dbname, action="creating schemas") as conn:
            for schema in sorted(schemas):
                exists = self._exec(
                    conn, "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,), db=dbname
                ).fetchone()
                if not exists:
                    self._exec(
                        conn,
                        sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)),
                        db=dbname,
                        action=f"creating schema {schema}",
                    )
                    created.append(schema)
        return created

    def _apply_database_properties(self, item: _Item, dbname: str) -> list[str]:
        """The dump's ALTER DATABASE SET, COMMENT ON DATABASE and grants, onto ``dbname``."""
        info = item.info
        if info is None:
            return []
        warnings = []
        ident = sql.Identifier(dbname)
        statements = [sql.SQL("ALTER DATABASE {} ").format(ident) + sql.SQL(s) for s in info.settings]
        if info.comment:
            statements.append(sql.SQL("COMMENT ON DATABASE {} ").format(ident) + sql.SQL(info.comment))
        if not self.no_privileges:
            statements += [
                sql.SQL(before) + sql.SQL(" ON DATABASE ") + ident + sql.SQL(" " + after)
                for before, after in info.grants
            ]
        statements += [
            sql.SQL("ALTER ROLE ") + sql.SQL(role) + sql.SQL(" IN DATABASE ") + ident + sql.SQL(" " + tail)
            for role, tail in info.role_settings
        ]
        if not statements:
            return []
        with self._admin("applying database settings") as conn:
            for stmt in statements:
                try:
                    conn.execute(stmt)
                except psycopg.Error as exc:
                    warnings.append(f"{stmt.as_string(conn)}: {' '.join(str(exc).split())}")
        if info.skipped:
            warnings.append(f"not applied (database-level, source-specific): {'; '.join(info.skipped[:5])}")
        for text in warnings:
            log.warning("%s/%s: database property %s", self.target.label, dbname, text)
        return warnings

    def _prepare_item(self, item: _Item) -> None:
        t0 = time.monotonic()
        info = self._inspect(item)
        with self._admin("creating the side-by-side database") as conn:
            self._server(conn).drop_copy(item.staging)  # a leftover of an earlier failed run
            warnings = self._create_database(conn, item.staging, info)
        warnings += [f"created missing schema {s}" for s in self._create_schemas(item, item.staging)]
        self._pg_restore(item, item.staging, in_place=False)
        warnings += self._apply_database_properties(item, item.staging)
        t1 = time.monotonic()
        item.details["verification"] = self._verify(item, item.staging, in_place=False)
        item.details["verify_seconds"] = round(time.monotonic() - t1, 3)
        item.details["prepare_seconds"] = round(time.monotonic() - t0, 3)
        item.details["warnings"] = warnings + item.details["verification"].pop("warnings", [])
        item.prepared = True

    def _verify(self, item: _Item, dbname: str, *, in_place: bool) -> dict[str, Any]:
        art = item.artifact
        got = fingerprint(self.target, dbname, exact_counts=item.exact_counts, **item.filters)
        want_rows: dict[str, int | None] = art.fingerprints.get("rows") or {}
        got_rows: dict[str, int | None] = got["rows"]
        problems: list[str] = []
        warnings: list[str] = []
        for table in sorted(set(want_rows) - set(got_rows)):
            problems.append(f"table {table} is missing (the checkpoint recorded {want_rows[table]} rows)")
        extra = sorted(set(got_rows) - set(want_rows))
        for table in extra:
            (warnings if in_place else problems).append(
                f"table {table} ({got_rows[table]} rows) is not in the checkpoint"
            )
        if item.exact_counts:
            for table in sorted(set(want_rows) & set(got_rows)):
                if want_rows[table] != got_rows[table]:
                    problems.append(
                        f"table {table} has {got_rows[table]} rows, the checkpoint recorded {want_rows[table]}"
                    )
        want_schema = art.fingerprints.get("schema_sha256")
        if want_schema and got["schema_sha256"] != want_schema:
            text = (
                f"the schema differs from the checkpoint's (schema_sha256 {got['schema_sha256'][:12]}... "
                f"instead of {want_schema[:12]}...)"
            )
            if in_place and extra:
                warnings.append(text + ": not comparable while tables that are not in the checkpoint remain")
            else:
                problems.append(text)
        if problems:
            shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
            hint = (
                "the database was changed in place: restore the safety checkpoint (tag 'safety') taken before "
                "this restore"
                if in_place
                else f"{dbname} was dropped and the current database was not touched; verify the checkpoint and "
                "check that nothing else wrote to the side-by-side copy"
            )
            raise RestoreVerificationError(
                f"{self.target.label}/{dbname}: the restored data does not match artifact {art.name} of checkpoint "
                f"{self.checkpoint_id}: {shown}",
                hint=hint,
            )
        return {
            "tables": len(got_rows),
            "rows": sum(v for v in got_rows.values() if isinstance(v, int)),
            "row_counts": got["row_counts"],
            "schema_sha256": got["schema_sha256"],
            "warnings": warnings,
        }
