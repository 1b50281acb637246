"""Planning: what the restore would change, its conflicts, and the problems that forbid it."""

from __future__ import annotations

import shutil

from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres._common import (
    COMPONENT,
    _human,
    _Item,
    _major,
)
from airflow_checkpoint_provider.core.engines.postgres._dump import (
    _unquote,
)
from airflow_checkpoint_provider.core.engines.postgres._names import (
    _ROLLBACK_RE,
    rollback_name,
)
from airflow_checkpoint_provider.core.engines.postgres._rollbacks import _rollback_base
from airflow_checkpoint_provider.core.engines.postgres._tool import _ToolMixin
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    EngineError,
)
from airflow_checkpoint_provider.core.restore import PlanItem


def _tempdir() -> str:
    import tempfile

    return tempfile.gettempdir()


class _PlanMixin(_ToolMixin):
    """Planning: what the restore would change, its conflicts, and the problems that forbid it. Mixed into :class:`~.restore.PostgresRestore`."""

    def plan(self) -> tuple[list[PlanItem], list[str]]:
        problems = list(self._problems)
        label = self.target.label
        tool = None
        try:
            tool = self._tool()
        except EngineError as exc:
            problems.append(str(exc))
        try:
            conn = self._admin("planning the restore")
        except EngineError as exc:
            return [], problems + [str(exc)]
        with conn:
            num = C.server_version_num(conn)
            rolsuper, createdb, signal = C.one(
                self._exec(
                    conn,
                    """
                SELECT r.rolsuper, r.rolcreatedb, pg_catalog.pg_has_role('pg_signal_backend', 'MEMBER')
                FROM pg_catalog.pg_roles r WHERE r.rolname = current_user""",
                    action="reading the role",
                )
            )
            dbs = self._databases(conn)
            roles = {
                r[0]
                for r in self._exec(conn, "SELECT rolname FROM pg_catalog.pg_roles", action="listing roles").fetchall()
            }
        server = C.version_string(num)
        if self.mode == "side_by_side" and not (rolsuper or createdb) and self.items:
            problems.append(
                f"{label}: user {self.target.user!r} may not create databases; a side-by-side restore "
                "creates <db>__restoring HINT: ALTER ROLE ... CREATEDB (or use a superuser), or restore "
                "with mode='in_place'"
            )
        items: list[PlanItem] = []
        for item in self.items:
            art = item.artifact
            where = f"{label}/{item.target_db}"
            dump_major, pgdump_version = _major(art.engine_version), art.meta.get("pg_dump_version")
            if dump_major and dump_major > C.major_of(num):
                problems.append(
                    f"{where}: the dump of {item.source} comes from PostgreSQL {art.engine_version}, the "
                    f"target runs {server}; restoring into an older major version is not supported "
                    f"HINT: restore into a PostgreSQL {C.major_label(dump_major)} server or newer"
                )
            if tool and pgdump_version and (_major(pgdump_version) or 0) > C.major_of(tool.num):
                problems.append(
                    f"{where}: pg_restore {tool.version} ({tool.path}) is older than the pg_dump "
                    f"{pgdump_version} that wrote the dump and may not read it HINT: pass pg_restore= the "
                    f"path of a pg_restore of major version {str(pgdump_version).split('.')[0]} or newer"
                )
            elif tool:
                try:
                    self._inspect(item)
                except CheckpointError as exc:
                    problems.append(str(exc))
            row = dbs.get(item.target_db)
            conflicts: list[str] = []
            notes: list[str] = []
            if row:
                if not row["owner"] and not rolsuper:
                    problems.append(
                        f"{where}: user {self.target.user!r} does not own database {item.target_db!r} "
                        "and cannot replace it HINT: restore with its owner or a superuser"
                    )
                if self.mode == "side_by_side":
                    conflicts.append(
                        f"{item.target_db} exists ({_human(row['size'])}); it will be renamed to a "
                        f"rollback copy {rollback_name(item.target_db, self.checkpoint_id)[:-14]}<UTC "
                        "time> and kept"
                    )
                    if row["sessions"]:
                        conflicts.append(
                            f"{row['sessions']} active session(s) on {item.target_db} will be "
                            "terminated at the cut-over"
                        )
                else:
                    conflicts.append(
                        f"{item.target_db} exists ({_human(row['size'])}); its objects that the "
                        "checkpoint holds are dropped and recreated in place (no rollback copy: the "
                        "safety checkpoint is the way back)"
                    )
                    if row["sessions"]:
                        conflicts.append(
                            f"{row['sessions']} active session(s) on {item.target_db}: their locks can "
                            "block the in-place restore"
                        )
                if row["sessions"] and not (rolsuper or signal):
                    notes.append(
                        f"user {self.target.user!r} can only end its own sessions (no superuser, no pg_signal_backend)"
                    )
            leftover = dbs.get(item.staging)
            if leftover and self.mode == "side_by_side":
                conflicts.append(
                    f"leftover {item.staging} ({_human(leftover['size'])}) from an earlier failed "
                    "restore will be dropped"
                )
            copies = sorted(n for n in dbs if _ROLLBACK_RE.match(n) and _rollback_base(n, dbs) == item.target_db)
            if copies:
                total = sum(dbs[n]["size"] or 0 for n in copies)
                one = len(copies) == 1
                conflicts.append(
                    f"{len(copies)} rollback cop{'y' if one else 'ies'} of {item.target_db} "
                    f"exist{'s' if one else ''} ({_human(total)}): {', '.join(copies)}; kept "
                    "(drop_rollback() removes one)"
                )
            rows = art.fingerprints.get("rows") or {}
            known = [v for v in rows.values() if isinstance(v, int)]
            notes.append(
                f"{art.kind} of PostgreSQL {art.engine_version or '?'} (pg_dump {pgdump_version or '?'}): "
                f"{len(rows)} tables, {sum(known)} rows ({art.fingerprints.get('row_counts', 'exact')}), "
                f"{_human(art.raw_size)} raw; target PostgreSQL {server}" + (f", {tool.text}" if tool else "")
            )
            if item.info is not None and item.info.create_options:
                notes.append("created with " + " ".join(f"{k}={v}" for k, v in item.info.create_options))
            notes += self._property_notes(item, roles, replaced=bool(row) and self.mode == "side_by_side")
            if self.no_owner:
                notes.append(f"objects will be owned by {self.target.user!r} (no_owner=True)")
            need_disk = item.fmt == "directory" or self.jobs > 1 or self.mode == "in_place"
            if need_disk and art.raw_size:
                parent = self.workdir or _tempdir()
                free = shutil.disk_usage(parent).free
                if free < art.raw_size * 1.05:
                    problems.append(
                        f"{where}: the dump needs {_human(art.raw_size)} of temporary space in {parent}, "
                        f"which has {_human(free)} free HINT: pass workdir= a directory with more space"
                        + (", or jobs=1 to stream a custom-format dump" if item.fmt == "custom" else "")
                    )
            action = (
                ("replace" if row else "create")
                if self.mode == "side_by_side"
                else ("restore in place" if row else "create")
            )
            items.append(
                PlanItem(
                    COMPONENT,
                    f"{item.source} ({art.name})",
                    item.target_db,
                    action,
                    staging_name=item.staging if self.mode == "side_by_side" else "",
                    conflicts=conflicts,
                    notes=notes,
                )
            )
        return items, problems

    def drift(self) -> list[str]:
        """Schema drift of each existing target database against the checkpoint (core/drift.py):
        the tables and columns the restore would add back, remove or retype."""
        from airflow_checkpoint_provider.core.drift import schema_changes
        from airflow_checkpoint_provider.core.engines.postgres.capture import fingerprint

        try:
            with self._admin("comparing schemas") as conn:
                existing = set(self._databases(conn))
        except EngineError as exc:
            return [f"{self.target.label}: the live schema could not be read ({exc.message}); drift unknown"]
        lines: list[str] = []
        for item in self.items:
            if item.target_db not in existing:
                continue  # a new database: nothing drifts
            where = f"{self.target.label}/{item.target_db}"
            fp = item.artifact.fingerprints
            try:
                live = fingerprint(self.target, item.target_db, exact_counts=False, **item.filters)
            except CheckpointError as exc:
                lines.append(f"{where}: the live schema could not be read ({exc.message}); drift unknown")
                continue
            recorded = fp.get("columns")
            if isinstance(recorded, dict):
                lines += schema_changes(where, recorded, live["columns"])
                continue
            # a manifest from before per-column records: tables from the row counts, then the schema hash
            tables: dict[str, dict[str, str]] = {t: {} for t in fp.get("rows") or {}}
            found = schema_changes(where, tables, {t: {} for t in live["rows"]})
            if not found and fp.get("schema_sha256") and fp["schema_sha256"] != live["schema_sha256"]:
                found = [
                    f"{where}: the schema changed since the checkpoint (schema_sha256 differs; this checkpoint "
                    "records no per-column schema)"
                ]
            lines += found
        return lines

    def _property_notes(self, item: _Item, roles: set[str], *, replaced: bool) -> list[str]:
        """What the plan says about the database-level properties the checkpoint holds."""
        info = item.info
        if info is None:
            return []
        props = []
        if info.connection_limit is not None:
            props.append(f"CONNECTION LIMIT {info.connection_limit}")
        if info.settings:
            props.append(f"{len(info.settings)} setting(s) (ALTER DATABASE ... SET)")
        if info.role_settings:
            props.append(f"{len(info.role_settings)} per-role setting(s) (ALTER ROLE ... IN DATABASE ... SET)")
        notes = []
        if props:
            notes.append(
                "database properties restored from the checkpoint: "
                + ", ".join(props)
                + ("; the replaced database keeps its own on its rollback copy" if replaced else "")
            )
        missing = sorted({_unquote(r) for r, _ in info.role_settings} - roles)
        if missing:
            notes.append(
                f"role(s) {', '.join(missing)} do not exist on the target: their per-database settings "
                "will not be applied (create the roles first to keep them)"
            )
        return notes
