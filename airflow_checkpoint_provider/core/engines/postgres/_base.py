"""The PostgreSQL restore's state and plumbing: the databases chosen, the maintenance connection, catalogue queries."""

from __future__ import annotations

from typing import Any

import psycopg

from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres._common import (
    COMPONENT,
    DEFAULT_SESSION_OPTIONS,
    MODES,
    _Item,
)
from airflow_checkpoint_provider.core.engines.postgres._cutover import Server
from airflow_checkpoint_provider.core.engines.postgres._guard import Watchers
from airflow_checkpoint_provider.core.engines.postgres._names import (
    _ROLLBACK_SQL_RE,
    MAX_NAME_BYTES,
    drill_name,
    is_rollback_name,
    is_side_copy,
    restoring_name,
)
from airflow_checkpoint_provider.core.engines.postgres.capture import (
    KIND_CUSTOM,
    KIND_DIRECTORY,
    STORE,
)
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import (
    CaptureError,
    EngineError,
    NotFoundError,
)
from airflow_checkpoint_provider.core.journal import ComponentJournal, NullJournal
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.store import Store


class _RestoreBase:
    """The state and plumbing under :class:`~.restore.PostgresRestore` (see its docstring for the
    arguments): the databases chosen, the maintenance connection, catalogue queries."""

    component = COMPONENT

    def __init__(
        self,
        target: PostgresTarget,
        store: Store,
        checkpoint_id: str,
        artifacts: list[Artifact],
        *,
        mode: str = "side_by_side",
        databases: list[str] | None = None,
        rename: dict[str, str] | None = None,
        pg_restore: str = "pg_restore",
        jobs: int = 1,
        capture_options: dict[str, Any] | None = None,
        workdir: str | None = None,
        no_owner: bool = True,
        no_privileges: bool = False,
        session_options: dict[str, str] | None = None,
        cutover_timeout: float = 30.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise ValueError(f"jobs must be a positive integer, not {jobs!r}")
        self.target, self.store, self.checkpoint_id = target, store, checkpoint_id
        self.mode, self.jobs, self.pg_restore = mode, jobs, pg_restore
        self.capture_options = dict(capture_options or {})
        self.workdir, self.no_owner, self.no_privileges = workdir, no_owner, no_privileges
        self.session_options = (
            dict(session_options)
            if session_options is not None
            else dict(DEFAULT_SESSION_OPTIONS)
            if mode == "side_by_side"
            else {}
        )
        self.cutover_timeout = cutover_timeout
        self._tool_cache: C.ToolVersion | None = None
        self._server_num: int | None = None
        self._problems: list[str] = []
        self.items: list[_Item] = []
        #: set by the orchestration before prepare(); standalone use journals nothing
        self.journal: ComponentJournal = NullJournal(COMPONENT)
        self._watchers = Watchers()  #: the cut-over's connection guards, started while loading
        self._select(artifacts, databases, dict(rename or {}))

    def _select(self, artifacts: list[Artifact], databases: list[str] | None, rename: dict[str, str]) -> None:
        label = self.target.label
        mine = [a for a in artifacts if a.store == STORE]
        by_db: dict[str, Artifact] = {}
        for art in mine:
            if art.kind not in (KIND_CUSTOM, KIND_DIRECTORY):
                self._problems.append(
                    f"{label}: artifact {art.name} has kind {art.kind!r}, which this version cannot "
                    f"restore HINT: upgrade airflow-checkpoint-provider"
                )
                continue
            db = art.meta.get("database")
            if not isinstance(db, str) or not db:
                self._problems.append(
                    f"{label}: artifact {art.name} does not record its database (meta.database) "
                    "HINT: the manifest is not one this provider wrote; verify the checkpoint"
                )
                continue
            by_db[db] = art
        held = ", ".join(sorted(by_db)) or "none"
        if not by_db and not self._problems:
            self._problems.append(
                f"{label}: checkpoint {self.checkpoint_id} holds no PostgreSQL database "
                "HINT: pick a checkpoint that captured PostgreSQL, or leave postgres out"
            )
        chosen = list(by_db) if databases is None else list(dict.fromkeys(databases))
        for name in chosen:
            if name not in by_db:
                self._problems.append(
                    f"{label}: checkpoint {self.checkpoint_id} holds no PostgreSQL database "
                    f"{name!r}; it holds: {held} HINT: name one of those in databases="
                )
        for name in rename:
            if name not in by_db:
                self._problems.append(
                    f"{label}: rename names {name!r}, which checkpoint {self.checkpoint_id} does "
                    f"not hold; it holds: {held} HINT: the keys of rename= are checkpoint databases"
                )
            elif name not in chosen:
                self._problems.append(
                    f"{label}: rename names {name!r}, which is not among the databases to restore "
                    f"({', '.join(chosen)}) HINT: add it to databases= or drop it from rename="
                )
        seen: dict[str, str] = {}
        for name in chosen:
            if name not in by_db:
                continue
            art = by_db[name]
            dest = rename.get(name, name)
            problem = self._name_problem(dest)
            if problem:
                self._problems.append(problem)
                continue
            if dest in seen:
                self._problems.append(
                    f"{label}: databases {seen[dest]!r} and {name!r} would both be restored as "
                    f"{dest!r} HINT: give them different names with rename="
                )
                continue
            seen[dest] = name
            fmt = "directory" if art.kind == KIND_DIRECTORY else "custom"
            self.items.append(_Item(art, name, dest, restoring_name(dest), fmt))

    def use_drill_names(self) -> None:
        """Load a drill's copies as ``<db>__drill_<short checkpoint id>`` (core/drill.py), not ``__restoring``."""
        for item in self.items:
            item.staging = drill_name(item.target_db, self.checkpoint_id)

    def _name_problem(self, dest: str) -> str | None:
        label = self.target.label
        if not dest or "\x00" in dest or len(dest.encode()) > MAX_NAME_BYTES:
            return (
                f"{label}: {dest!r} cannot be a database name (1 to {MAX_NAME_BYTES} bytes, no NUL) "
                "HINT: choose another name with rename="
            )
        if is_side_copy(dest) or is_rollback_name(dest):
            return (
                f"{label}: {dest!r} looks like a side-by-side or rollback copy; refusing to restore onto it "
                "HINT: choose another name with rename="
            )
        if dest in ("template0", "template1"):
            return f"{label}: refusing to restore onto the template database {dest!r} HINT: choose another name"
        return None

    def _touched(self) -> set[str]:
        out: set[str] = set()
        for item in self.items:
            out |= {item.target_db, item.staging}
            if item.rollback:
                out.add(item.rollback)
        return out

    def _admin(self, action: str = "connecting to the maintenance database") -> psycopg.Connection:
        """An autocommit connection to a database this restore never renames or drops."""
        touched = self._touched()
        candidates = [d for d in dict.fromkeys([self.target.dbname, "postgres", "template1"]) if d not in touched]
        last: Exception | None = None
        for db in candidates:
            try:
                conn = C.connect(self.target, db, action=action)
            except NotFoundError as exc:
                last = exc
                continue
            if self._server_num is None:
                self._server_num = C.server_version_num(conn)
            return conn
        raise NotFoundError(
            f"{self.target.label}: found no maintenance database to work from (tried {', '.join(candidates)}): {last}",
            hint="set the connection's database (schema) to one this restore does not replace",
        )

    def _sql_error(self, exc: BaseException, dbname: str | None, action: str) -> EngineError:
        err = C.translate(exc, self.target, dbname, action)
        if type(err) is CaptureError:  # the generic failure: this is no capture
            return EngineError(err.message, hint=err.hint)
        return err

    def _exec(
        self,
        conn: psycopg.Connection,
        query: Any,
        params: Any = None,
        *,
        db: str | None = None,
        action: str = "running a statement",
    ) -> psycopg.Cursor:
        try:
            return conn.execute(query, params)
        except psycopg.Error as exc:
            raise self._sql_error(exc, db, action) from None

    def _databases(self, conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
        """Every database; sizes only of this restore's names and of rollback copies (a size walks files)."""
        rows = self._exec(
            conn,
            """
            SELECT d.datname, d.datallowconn, d.datconnlimit,
                   pg_catalog.pg_has_role(d.datdba, 'USAGE') AS owner,
                   CASE WHEN pg_catalog.has_database_privilege(d.datname, 'CONNECT')
                             AND (d.datname OPERATOR(pg_catalog.=) ANY (%(sized)s::text[])
                                  OR d.datname OPERATOR(pg_catalog.~) %(rollback)s)
                        THEN pg_catalog.pg_database_size(d.datname) END AS size,
                   (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a
                     WHERE a.datname OPERATOR(pg_catalog.=) d.datname AND a.backend_type = 'client backend'
                       AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()) AS sessions
            FROM pg_catalog.pg_database d""",
            {"sized": sorted(self._touched()), "rollback": _ROLLBACK_SQL_RE},
            action="listing databases",
        ).fetchall()
        return {
            r[0]: {"allow": r[1], "limit": int(r[2]), "owner": r[3], "size": r[4], "sessions": int(r[5])} for r in rows
        }

    def _server(self, conn: psycopg.Connection) -> Server:
        return Server(self.target, conn, timeout=self.cutover_timeout, watchers=self._watchers)
