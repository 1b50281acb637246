"""Restore: ``pg_restore`` side by side into ``<db>__restoring``, verify, then cut over by renaming.

See the package docstring for the recipe; this module implements
:class:`~airflow_checkpoint_provider.core.recovery.ComponentRestore` for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import IO, Any, BinaryIO

import psycopg
from psycopg import sql

from airflow_checkpoint_provider.core.engines.postgres import _capture as K
from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres import _secrets as S
from airflow_checkpoint_provider.core.engines.postgres._cutover import CutoverError, Server, Switch
from airflow_checkpoint_provider.core.engines.postgres._names import (
    _ROLLBACK_RE,
    _ROLLBACK_SQL_RE,
    MAX_NAME_BYTES,
    RESTORING_SUFFIX,
    fit_name,
    is_rollback_name,
    restoring_name,
    rollback_name,
    short_checkpoint_id,
)
from airflow_checkpoint_provider.core.engines.postgres._health import health as _health
from airflow_checkpoint_provider.core.engines.postgres._health import split_qname
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    CaptureError,
    CheckpointError,
    EngineError,
    FormatError,
    NotFoundError,
    ToolError,
    UnsafeArchiveError,
)
from airflow_checkpoint_provider.core.journal import ComponentJournal, NullJournal
from airflow_checkpoint_provider.core.manifest import Artifact, utcnow
from airflow_checkpoint_provider.core.restore import HealthCheck, PlanItem, RestoreOutcome
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE

log = logging.getLogger("airflow_checkpoint_provider.core.engines.postgres.restore")

COMPONENT = "postgres"
MODES = ("side_by_side", "in_place")
#: ``application_name`` of the pg_restore sessions (visible in pg_stat_activity).
PG_RESTORE_APPLICATION_NAME = "airflow-checkpoint-pg_restore"
#: session settings of the side-by-side pg_restore sessions. Safe: the cut-over's own (synchronous)
#: commit flushes the WAL of everything restored before it.
DEFAULT_SESSION_OPTIONS = {"synchronous_commit": "off"}

_DUMP_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")
_TOC_LINE_RE = re.compile(r"^(\d+); \d+ \d+ (.*)\Z")
_RELATION_RE = re.compile(r"^(MATERIALIZED VIEW DATA|MATERIALIZED VIEW|FOREIGN TABLE|TABLE DATA|TABLE|VIEW|"
                          r"SEQUENCE SET|SEQUENCE OWNED BY|SEQUENCE) (.*)\Z")
_DB_ENTRY_PREFIXES = ("DATABASE ", "DATABASE PROPERTIES ", "COMMENT - DATABASE ", "ACL - DATABASE ",
                      "SECURITY LABEL - DATABASE ")
_IDENT = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")'
_CREATE_DB_RE = re.compile(rf"^CREATE DATABASE ({_IDENT}) WITH (.*)\Z", re.S)
_CONN_LIMIT_RE = re.compile(r"CONNECTION LIMIT = (-?\d{1,10})")
_ROLE_IN_DB_RE = re.compile(rf"ALTER ROLE ({_IDENT}) IN DATABASE ({_IDENT}) ((?:SET|RESET) .*)", re.S)
_CREATE_OPT_RE = re.compile(r"([A-Z_]+) = ('(?:[^']|'')*'|[A-Za-z0-9_]+)")
#: CREATE DATABASE options taken over from the dump; TEMPLATE is always template0, TABLESPACE and
#: OID are left out (they name things of the source server).
_KEPT_CREATE_OPTIONS = ("ENCODING", "LOCALE_PROVIDER", "LOCALE", "LC_COLLATE", "LC_CTYPE", "ICU_LOCALE",
                        "ICU_RULES", "BUILTIN_LOCALE")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class RestoreVerificationError(EngineError):
    """The restored database does not match the checkpoint's fingerprints."""


def _human(n: int | None) -> str:
    if n is None:
        return "size unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# --------------------------------------------------------------------------- dump files


def untar_dump_directory(src: BinaryIO, dest: str, *, source: str, only_toc: bool = False) -> list[str]:
    """Extract a ``pg_dump/directory`` artifact (a tar of the dump directory's files) into ``dest``.

    Strict: only regular files with plain names (``toc.dat``, ``3350.dat``, ...) directly in
    ``dest``, ``toc.dat`` first, no name twice; files are created with O_EXCL | O_NOFOLLOW
    and mode 0600. Anything else raises :class:`UnsafeArchiveError` naming the entry, before
    anything is written for it. ``only_toc`` stops after ``toc.dat``.
    """
    names: list[str] = []
    try:
        with tarfile.open(fileobj=src, mode="r|", bufsize=CHUNK_SIZE) as tar:
            for member in tar:
                problem = None
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    problem = "is not a regular file"
                elif not _DUMP_FILE_RE.fullmatch(member.name):
                    problem = "is not a plain file name (no directories, no '..', no special characters)"
                elif member.name in names:
                    problem = "appears twice"
                elif not names and member.name != "toc.dat":
                    problem = "comes first, but a pg_dump directory tar starts with toc.dat"
                if problem:
                    raise UnsafeArchiveError(
                        f"{source}: entry {member.name!r} {problem}",
                        hint="refusing to extract this dump; it was not written by this tool or was tampered with",
                    )
                fd = os.open(os.path.join(dest, member.name),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                             0o600)
                with os.fdopen(fd, "wb") as out:
                    data = tar.extractfile(member)
                    assert data is not None
                    left = member.size
                    while left:
                        chunk = data.read(min(left, CHUNK_SIZE))
                        if not chunk:
                            raise FormatError(f"{source}: entry {member.name!r} is truncated",
                                              hint="the artifact is damaged; verify the checkpoint")
                        out.write(chunk)
                        left -= len(chunk)
                names.append(member.name)
                if only_toc:
                    break
    except tarfile.TarError as exc:
        raise FormatError(f"{source}: not a readable tar of a pg_dump directory ({exc})",
                          hint="the artifact is damaged; verify the checkpoint") from None
    if "toc.dat" not in names:
        raise FormatError(f"{source}: the pg_dump directory has no toc.dat",
                          hint="the artifact is damaged or incomplete; verify the checkpoint")
    return names


def _split_sql(text: str) -> list[str]:
    """Statements of pg_restore's SQL output: psql meta-commands, comments and SETs dropped."""
    lines = [ln for ln in text.splitlines() if not ln.startswith("\\") and not ln.startswith("--")]
    text = "\n".join(lines)
    out, cur, quote = [], [], ""
    for ch in text:
        cur.append(ch)
        if quote:
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
        elif ch == ";":
            stmt = "".join(cur).strip()
            cur = []
            if stmt and not stmt.startswith(("SET ", "SELECT pg_catalog.set_config")):
                out.append(stmt[:-1].strip())
    return out


@dataclass
class DumpInfo:
    """What the dump's table of contents says (read with ``pg_restore -C -l``, no data read)."""

    entries: int = 0
    relation_schemas: set[str] = field(default_factory=set)  #: schemas of dumped tables, views, sequences
    create_options: list[tuple[str, str]] = field(default_factory=list)  #: (KEY, SQL literal or keyword)
    owner: str | None = None
    settings: list[str] = field(default_factory=list)  #: ``SET ...`` / ``RESET ...`` tails of ALTER DATABASE
    comment: str | None = None  #: ``IS '...'`` tail of COMMENT ON DATABASE
    grants: list[tuple[str, str]] = field(default_factory=list)  #: (before, after) around ``ON DATABASE <name>``
    connection_limit: int | None = None  #: ``ALTER DATABASE ... CONNECTION LIMIT = n`` (None: unlimited)
    role_settings: list[tuple[str, str]] = field(default_factory=list)  #: (role, ``SET ...``) of ALTER ROLE IN DATABASE
    skipped: list[str] = field(default_factory=list)

    def parse_listing(self, listing: str) -> list[str]:
        """Read ``pg_restore -C -l`` output; returns the lines of the database-level entries."""
        db_lines = []
        for line in listing.splitlines():
            m = _TOC_LINE_RE.match(line)
            if not m:
                continue
            self.entries += 1
            rest = m.group(2)
            if rest.startswith(_DB_ENTRY_PREFIXES):
                db_lines.append(line)
                continue
            rel = _RELATION_RE.match(rest)
            if rel and rel.group(1) in ("TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SEQUENCE"):
                parts = rel.group(2).split(" ")
                if len(parts) == 3 and parts[0] != "-":  # schema name owner; ambiguous when names hold spaces
                    self.relation_schemas.add(parts[0])
        return db_lines

    def parse_database_sql(self, text: str) -> None:
        statements = _split_sql(text)
        qname = None
        for stmt in statements:
            m = _CREATE_DB_RE.match(stmt)
            if m:
                qname = m.group(1)
                for key, value in _CREATE_OPT_RE.findall(m.group(2)):
                    if key in _KEPT_CREATE_OPTIONS:
                        self.create_options.append((key, value))
        if qname is None:
            return
        alter, comment = f"ALTER DATABASE {qname} ", f"COMMENT ON DATABASE {qname} "
        on_db, in_db = f" ON DATABASE {qname} ", f" IN DATABASE {qname} "
        for stmt in statements:
            if stmt.startswith("CREATE DATABASE "):
                continue
            limit = _CONN_LIMIT_RE.fullmatch(stmt[len(alter):]) if stmt.startswith(alter) else None
            role = _ROLE_IN_DB_RE.fullmatch(stmt) if stmt.startswith("ALTER ROLE ") and in_db in stmt else None
            if limit:
                self.connection_limit = int(limit.group(1))
            elif role and role.group(2) == qname:
                self.role_settings.append((role.group(1), role.group(3)))
            elif stmt.startswith(alter + "OWNER TO "):
                self.owner = stmt[len(alter + "OWNER TO "):].strip()
            elif stmt.startswith((alter + "SET ", alter + "RESET ")):
                self.settings.append(stmt[len(alter):])
            elif stmt.startswith(comment + "IS "):
                self.comment = stmt[len(comment):]
            elif stmt.startswith(("GRANT ", "REVOKE ")) and on_db in stmt:
                before, after = stmt.split(on_db, 1)
                self.grants.append((before, after))
            else:
                self.skipped.append(stmt if len(stmt) < 200 else stmt[:200] + "...")


# --------------------------------------------------------------------------- the restore


@dataclass
class _Item:
    artifact: Artifact
    source: str  #: the database in the checkpoint
    target_db: str  #: where it lands
    staging: str  #: ``<target>__restoring``
    fmt: str  #: ``custom`` / ``directory``
    info: DumpInfo | None = None
    prepared: bool = False
    cut_over: bool = False
    existed: bool = False
    rollback: str | None = None
    switch: Switch | None = None  #: what the cut-over did (journaled)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def filters(self) -> dict[str, tuple[str, ...]]:
        raw = self.artifact.meta.get("filters") or {}
        return {k: tuple(raw.get(k) or ()) for k in ("schemas", "exclude_schemas", "tables", "exclude_tables")}

    @property
    def exact_counts(self) -> bool:
        return bool(self.artifact.meta.get("exact_counts", self.artifact.fingerprints.get("row_counts") != "estimate"))


def _major(version: str | None) -> int | None:
    parsed = C.parse_tool_version(version or "") if version else None
    return C.major_of(parsed[1]) if parsed else None


class PostgresRestore:
    """Restore the PostgreSQL databases of one checkpoint (a ``ComponentRestore``).

    :param target: the server to restore into (may differ from the captured one).
    :param store: the checkpoint store; artifacts are streamed out of it, sha256-checked.
    :param checkpoint_id: the (resolved) checkpoint id.
    :param artifacts: the checkpoint's artifacts; those of store ``postgres`` are used.
    :param mode: ``side_by_side`` (default) or ``in_place`` (see the package docstring).
    :param databases: restore only these databases of the checkpoint (by ``meta["database"]``).
    :param rename: ``{checkpoint db: target db}``: restore a database under another name.
    :param pg_restore: the pg_restore binary (its major version must be >= the dump's pg_dump).
    :param jobs: pg_restore ``--jobs``. With 1 a custom-format dump is streamed into pg_restore's
        stdin; otherwise (and for the directory format, and in place) it is written to a private
        temporary file or directory under ``workdir`` first, removed afterwards.
    :param capture_options: keyword arguments of :func:`capture` for the safety checkpoint.
    :param workdir: parent of the temporary dump files (default: the system temp dir).
    :param no_owner: ``pg_restore --no-owner`` (default): objects belong to the restoring role.
        ``False`` keeps the dump's owners (needs a superuser and the roles on the target).
    :param no_privileges: ``pg_restore --no-privileges``: skip GRANT/REVOKE (roles missing on the target).
    :param session_options: settings for the pg_restore sessions (``PGOPTIONS``); default
        ``synchronous_commit=off`` side by side, none in place.
    :param cutover_timeout: seconds to wait for terminated sessions to go away.
    """

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
        self.session_options = (dict(session_options) if session_options is not None else
                                dict(DEFAULT_SESSION_OPTIONS) if mode == "side_by_side" else {})
        self.cutover_timeout = cutover_timeout
        self._tool_cache: C.ToolVersion | None = None
        self._server_num: int | None = None
        self._problems: list[str] = []
        self.items: list[_Item] = []
        #: set by the orchestration before prepare(); standalone use journals nothing
        self.journal: ComponentJournal = NullJournal(COMPONENT)
        self._select(artifacts, databases, dict(rename or {}))

    # ---- selection --------------------------------------------------------------------------------

    def _select(self, artifacts: list[Artifact], databases: list[str] | None, rename: dict[str, str]) -> None:
        label = self.target.label
        mine = [a for a in artifacts if a.store == K.STORE]
        by_db: dict[str, Artifact] = {}
        for art in mine:
            if art.kind not in (K.KIND_CUSTOM, K.KIND_DIRECTORY):
                self._problems.append(f"{label}: artifact {art.name} has kind {art.kind!r}, which this version cannot "
                                      f"restore HINT: upgrade airflow-checkpoint-provider")
                continue
            db = art.meta.get("database")
            if not isinstance(db, str) or not db:
                self._problems.append(f"{label}: artifact {art.name} does not record its database (meta.database) "
                                      "HINT: the manifest is not one this provider wrote; verify the checkpoint")
                continue
            by_db[db] = art
        held = ", ".join(sorted(by_db)) or "none"
        if not by_db and not self._problems:
            self._problems.append(f"{label}: checkpoint {self.checkpoint_id} holds no PostgreSQL database "
                                  "HINT: pick a checkpoint that captured PostgreSQL, or leave postgres out")
        chosen = list(by_db) if databases is None else list(dict.fromkeys(databases))
        for name in chosen:
            if name not in by_db:
                self._problems.append(f"{label}: checkpoint {self.checkpoint_id} holds no PostgreSQL database "
                                      f"{name!r}; it holds: {held} HINT: name one of those in databases=")
        for name in rename:
            if name not in by_db:
                self._problems.append(f"{label}: rename names {name!r}, which checkpoint {self.checkpoint_id} does "
                                      f"not hold; it holds: {held} HINT: the keys of rename= are checkpoint databases")
            elif name not in chosen:
                self._problems.append(f"{label}: rename names {name!r}, which is not among the databases to restore "
                                      f"({', '.join(chosen)}) HINT: add it to databases= or drop it from rename=")
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
                self._problems.append(f"{label}: databases {seen[dest]!r} and {name!r} would both be restored as "
                                      f"{dest!r} HINT: give them different names with rename=")
                continue
            seen[dest] = name
            fmt = "directory" if art.kind == K.KIND_DIRECTORY else "custom"
            self.items.append(_Item(art, name, dest, restoring_name(dest), fmt))

    def _name_problem(self, dest: str) -> str | None:
        label = self.target.label
        if not dest or "\x00" in dest or len(dest.encode()) > MAX_NAME_BYTES:
            return (f"{label}: {dest!r} cannot be a database name (1 to {MAX_NAME_BYTES} bytes, no NUL) "
                    "HINT: choose another name with rename=")
        if dest.endswith(RESTORING_SUFFIX) or is_rollback_name(dest):
            return (f"{label}: {dest!r} looks like a side-by-side or rollback copy; refusing to restore onto it "
                    "HINT: choose another name with rename=")
        if dest in ("template0", "template1"):
            return f"{label}: refusing to restore onto the template database {dest!r} HINT: choose another name"
        return None

    # ---- plumbing ---------------------------------------------------------------------------------

    def _tool(self) -> C.ToolVersion:
        if self._tool_cache is None:
            self._tool_cache = C.tool_version(self.target, self.pg_restore, "pg_restore")
        return self._tool_cache

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
        raise NotFoundError(f"{self.target.label}: found no maintenance database to work from "
                            f"(tried {', '.join(candidates)}): {last}",
                            hint="set the connection's database (schema) to one this restore does not replace")

    def _sql_error(self, exc: BaseException, dbname: str | None, action: str) -> EngineError:
        err = C.translate(exc, self.target, dbname, action)
        if type(err) is CaptureError:  # the generic failure: this is no capture
            return EngineError(err.message, hint=err.hint)
        return err

    def _exec(self, conn: psycopg.Connection, query: Any, params: Any = None, *, db: str | None = None,
              action: str = "running a statement") -> psycopg.Cursor:
        try:
            return conn.execute(query, params)
        except psycopg.Error as exc:
            raise self._sql_error(exc, db, action) from None

    def _databases(self, conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
        """Every database; sizes only of this restore's names and of rollback copies (a size walks files)."""
        rows = self._exec(conn, """
            SELECT d.datname, d.datallowconn, d.datconnlimit,
                   pg_catalog.pg_has_role(d.datdba, 'USAGE') AS owner,
                   CASE WHEN pg_catalog.has_database_privilege(d.datname, 'CONNECT')
                             AND (d.datname OPERATOR(pg_catalog.=) ANY (%(sized)s::text[])
                                  OR d.datname OPERATOR(pg_catalog.~) %(rollback)s)
                        THEN pg_catalog.pg_database_size(d.datname) END AS size,
                   (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a
                     WHERE a.datname OPERATOR(pg_catalog.=) d.datname AND a.backend_type = 'client backend'
                       AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()) AS sessions
            FROM pg_catalog.pg_database d""", {"sized": sorted(self._touched()), "rollback": _ROLLBACK_SQL_RE},
            action="listing databases").fetchall()
        return {r[0]: {"allow": r[1], "limit": int(r[2]), "owner": r[3], "size": r[4], "sessions": int(r[5])}
                for r in rows}

    def _server(self, conn: psycopg.Connection) -> Server:
        return Server(self.target, conn, timeout=self.cutover_timeout)

    # ---- reading the dump -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _artifact(self, item: _Item) -> Iterator[BinaryIO]:
        with self.store.open_artifact(self.checkpoint_id, item.artifact.name) as src:
            yield src

    def _feed(self, item: _Item) -> Callable[[IO[bytes]], None]:
        def feed(out: IO[bytes]) -> None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(out.fileno(), _F_SETPIPE_SZ, 1024 * 1024)
            with self._artifact(item) as src:
                while True:
                    chunk = src.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    out.write(chunk)
        return feed

    def _materialize(self, item: _Item, work: str) -> str:
        """Write the artifact where pg_restore can seek in it: the dump file, or the extracted directory."""
        t0 = time.monotonic()
        with self._artifact(item) as src:
            if item.fmt == "custom":
                path = os.path.join(work, "dump")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK_SIZE)
            else:
                path = os.path.join(work, "dump.d")
                os.mkdir(path, 0o700)
                untar_dump_directory(src, path, source=f"{self.checkpoint_id}:{item.artifact.name}")
        item.details["extract_seconds"] = round(time.monotonic() - t0, 3)
        return path

    def _run_tool(self, argv: list[str], auth: S.ToolAuth | None, *, dbname: str,
                  feed: Callable[[IO[bytes]], None] | None = None, capture: bool = False) -> str:
        """Run pg_restore (``auth``: its secrets, None when it does not connect); stdin fed by
        ``feed`` (in a thread when capturing stdout). Returns stdout."""
        log.debug("argv: %s", argv)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=auth.env if auth else C.tool_env(), close_fds=True,
                                    pass_fds=auth.pass_fds if auth else ())
        except OSError as exc:
            raise ToolError(f"{self.target.label}/{dbname}: cannot start {argv[0]!r}: {exc}",
                            hint="check the pg_restore path and its permissions") from None
        errors = K._StderrCollector(proc.stderr)  # type: ignore[arg-type]
        errors.start()
        failure: list[BaseException] = []

        def run_feed() -> None:
            assert proc.stdin is not None and feed is not None
            try:
                feed(proc.stdin)
            except BrokenPipeError:
                pass  # pg_restore stopped reading: its exit code says why
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                failure.append(exc)
                K._stop(proc)
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        out = b""
        try:
            if feed and capture:
                feeder = threading.Thread(target=run_feed, daemon=True, name="pg_restore-feed")
                feeder.start()
                assert proc.stdout is not None
                out = proc.stdout.read()
                feeder.join()
            elif feed:
                run_feed()
            elif capture:
                assert proc.stdout is not None
                out = proc.stdout.read()
            rc = proc.wait()
            errors.join()
        except BaseException:
            K._stop(proc)
            raise
        finally:
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if failure:
            raise failure[0]
        if rc != 0:
            raise (auth.failure() if auth else None) or self._tool_failure(dbname, rc, errors.text())
        return out.decode("utf-8", "replace")

    def _tool_failure(self, dbname: str, rc: int, stderr: str) -> EngineError:
        err = C.scrub_target(stderr.strip(), self.target) or "(no output)"
        where = f"{self.target.label}/{dbname}"
        low = err.lower()
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        if "unsupported version" in low or "does not appear to be a valid archive" in low:
            wanted = self._dump_tool_version(None)
            return ToolError(f"{where}: pg_restore cannot read the dump:\n{err}",
                             hint="pass pg_restore= the path of a pg_restore "
                             + (f"of major version {wanted} or newer" if wanted else "at least as new as the dump's "
                                "pg_dump"))
        if any(m in low for m in ("password authentication failed", "no pg_hba.conf entry", "no password supplied")):
            return AuthenticationError(f"{where}: pg_restore could not log in as {self.target.user!r}:\n{err}",
                                       hint="check the login and password of the connection")
        if "role \"" in low and "does not exist" in low:
            return ToolError(f"{where}: pg_restore {how}: a role of the dump is missing on the target:\n{err}",
                             hint="create the role on the target server, or restore with no_privileges=True "
                             "(and no_owner=True)")
        if "permission denied" in low or "must be owner" in low:
            return AuthenticationError(f"{where}: pg_restore {how}: user {self.target.user!r} lacks a permission:"
                                       f"\n{err}", hint="restore with a role that owns the database (or a superuser)")
        if "terminating connection" in low or "server closed the connection" in low:
            return ToolError(f"{where}: pg_restore {how}: the server ended its session:\n{err}",
                             hint="an administrator command or a server restart interrupted the restore; retry")
        return ToolError(f"{where}: pg_restore {how}:\n{err}",
                         hint="read the pg_restore message above; the PostgreSQL server log may say more")

    def _dump_tool_version(self, item: _Item | None) -> str | None:
        items = [item] if item else self.items
        versions = [i.artifact.meta.get("pg_dump_version") for i in items if i.artifact.meta.get("pg_dump_version")]
        return str(max(versions, key=lambda v: _major(v) or 0)).split(".")[0] if versions else None

    def _with_options(self, env: dict[str, str], *, with_options: bool) -> dict[str, str]:
        """``env`` plus ``PGOPTIONS`` carrying the session options (when ``with_options``)."""
        env = dict(env)
        if with_options and self.session_options:
            def esc(value: str) -> str:
                return str(value).replace("\\", "\\\\").replace(" ", "\\ ")
            extra = " ".join(f"-c {esc(k)}={esc(v)}" for k, v in self.session_options.items())
            env["PGOPTIONS"] = f"{env['PGOPTIONS']} {extra}" if env.get("PGOPTIONS") else extra
        return env

    def _inspect(self, item: _Item) -> DumpInfo:
        """Read the dump's TOC with ``pg_restore -C -l`` (only the TOC is streamed); cached."""
        if item.info is not None:
            return item.info
        tool = self._tool()
        info = DumpInfo()
        source = f"{self.checkpoint_id}:{item.artifact.name}"
        with K._private_dir(None, "ckpt-pgrestore-") as work:
            if item.fmt == "directory":
                toc_dir = os.path.join(work, "toc")
                os.mkdir(toc_dir, 0o700)
                with self._artifact(item) as src:
                    untar_dump_directory(src, toc_dir, source=source, only_toc=True)
                args, feed = ["--format=directory", toc_dir], None
            else:
                args, feed = ["--format=custom"], self._feed(item)
            listing = self._run_tool([tool.path, "--create", "--list", *args], None, dbname=item.target_db,
                                     feed=feed, capture=True)
            db_lines = info.parse_listing(listing)
            if db_lines:
                list_file = os.path.join(work, "database.list")
                with open(list_file, "w", encoding="utf-8") as fh:
                    fh.write("\n".join(db_lines) + "\n")
                text = self._run_tool([tool.path, "--create", "--schema-only", f"--use-list={list_file}",
                                       "--file=-", *args], None, dbname=item.target_db,
                                      feed=self._feed(item) if feed else None, capture=True)
                info.parse_database_sql(text)
        item.info = info
        return info

    # ---- plan -------------------------------------------------------------------------------------

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
            rolsuper, createdb, signal = self._exec(conn, """
                SELECT r.rolsuper, r.rolcreatedb, pg_catalog.pg_has_role('pg_signal_backend', 'MEMBER')
                FROM pg_catalog.pg_roles r WHERE r.rolname = current_user""", action="reading the role").fetchone()
            dbs = self._databases(conn)
            roles = {r[0] for r in self._exec(conn, "SELECT rolname FROM pg_catalog.pg_roles",
                                              action="listing roles").fetchall()}
        server = C.version_string(num)
        if self.mode == "side_by_side" and not (rolsuper or createdb) and self.items:
            problems.append(f"{label}: user {self.target.user!r} may not create databases; a side-by-side restore "
                            "creates <db>__restoring HINT: ALTER ROLE ... CREATEDB (or use a superuser), or restore "
                            "with mode='in_place'")
        items: list[PlanItem] = []
        for item in self.items:
            art = item.artifact
            where = f"{label}/{item.target_db}"
            dump_major, pgdump_version = _major(art.engine_version), art.meta.get("pg_dump_version")
            if dump_major and dump_major > C.major_of(num):
                problems.append(f"{where}: the dump of {item.source} comes from PostgreSQL {art.engine_version}, the "
                                f"target runs {server}; restoring into an older major version is not supported "
                                f"HINT: restore into a PostgreSQL {C.major_label(dump_major)} server or newer")
            if tool and pgdump_version and (_major(pgdump_version) or 0) > C.major_of(tool.num):
                problems.append(f"{where}: pg_restore {tool.version} ({tool.path}) is older than the pg_dump "
                                f"{pgdump_version} that wrote the dump and may not read it HINT: pass pg_restore= the "
                                f"path of a pg_restore of major version {str(pgdump_version).split('.')[0]} or newer")
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
                    problems.append(f"{where}: user {self.target.user!r} does not own database {item.target_db!r} "
                                    "and cannot replace it HINT: restore with its owner or a superuser")
                if self.mode == "side_by_side":
                    conflicts.append(f"{item.target_db} exists ({_human(row['size'])}); it will be renamed to a "
                                     f"rollback copy {rollback_name(item.target_db, self.checkpoint_id)[:-14]}<UTC "
                                     "time> and kept")
                    if row["sessions"]:
                        conflicts.append(f"{row['sessions']} active session(s) on {item.target_db} will be "
                                         "terminated at the cut-over")
                else:
                    conflicts.append(f"{item.target_db} exists ({_human(row['size'])}); its objects that the "
                                     "checkpoint holds are dropped and recreated in place (no rollback copy: the "
                                     "safety checkpoint is the way back)")
                    if row["sessions"]:
                        conflicts.append(f"{row['sessions']} active session(s) on {item.target_db}: their locks can "
                                         "block the in-place restore")
                if row["sessions"] and not (rolsuper or signal):
                    notes.append(f"user {self.target.user!r} can only end its own sessions (no superuser, no "
                                 "pg_signal_backend)")
            leftover = dbs.get(item.staging)
            if leftover and self.mode == "side_by_side":
                conflicts.append(f"leftover {item.staging} ({_human(leftover['size'])}) from an earlier failed "
                                 "restore will be dropped")
            copies = sorted(n for n in dbs if _ROLLBACK_RE.match(n) and _rollback_base(n, dbs) == item.target_db)
            if copies:
                total = sum(dbs[n]["size"] or 0 for n in copies)
                one = len(copies) == 1
                conflicts.append(f"{len(copies)} rollback cop{'y' if one else 'ies'} of {item.target_db} "
                                 f"exist{'s' if one else ''} ({_human(total)}): {', '.join(copies)}; kept "
                                 "(drop_rollback() removes one)")
            rows = art.fingerprints.get("rows") or {}
            known = [v for v in rows.values() if isinstance(v, int)]
            notes.append(f"{art.kind} of PostgreSQL {art.engine_version or '?'} (pg_dump {pgdump_version or '?'}): "
                         f"{len(rows)} tables, {sum(known)} rows ({art.fingerprints.get('row_counts', 'exact')}), "
                         f"{_human(art.raw_size)} raw; target PostgreSQL {server}"
                         + (f", {tool.text}" if tool else ""))
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
                    problems.append(f"{where}: the dump needs {_human(art.raw_size)} of temporary space in {parent}, "
                                    f"which has {_human(free)} free HINT: pass workdir= a directory with more space"
                                    + (", or jobs=1 to stream a custom-format dump" if item.fmt == "custom" else ""))
            action = ("replace" if row else "create") if self.mode == "side_by_side" else (
                "restore in place" if row else "create")
            items.append(PlanItem(COMPONENT, f"{item.source} ({art.name})", item.target_db, action,
                                  staging_name=item.staging if self.mode == "side_by_side" else "",
                                  conflicts=conflicts, notes=notes))
        return items, problems

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
            notes.append("database properties restored from the checkpoint: " + ", ".join(props)
                         + ("; the replaced database keeps its own on its rollback copy" if replaced else ""))
        missing = sorted({_unquote(r) for r, _ in info.role_settings} - roles)
        if missing:
            notes.append(f"role(s) {', '.join(missing)} do not exist on the target: their per-database settings "
                         "will not be applied (create the roles first to keep them)")
        return notes

    # ---- safety checkpoint ------------------------------------------------------------------------

    def safety_capture(self, staging: Staging) -> list[Artifact]:
        with self._admin("listing databases for the safety checkpoint") as conn:
            existing = set(self._databases(conn))
        dbs = [i.target_db for i in self.items if i.target_db in existing]
        if not dbs:
            log.info("safety checkpoint: none of %s exists on %s yet: nothing to capture",
                     [i.target_db for i in self.items], self.target.label)
            return []
        opts = dict(self.capture_options)
        if "pg_dump" not in opts and os.sep in self.pg_restore:
            sibling = os.path.join(os.path.dirname(self.pg_restore), "pg_dump")
            if os.access(sibling, os.X_OK):
                opts["pg_dump"] = sibling
        return K.capture(self.target, staging, databases=dbs, **opts)

    # ---- prepare ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Side by side: load every database into ``<db>__restoring`` and verify it. In place: checks only."""
        if self._problems:
            raise CheckpointError(f"{self.target.label}: cannot restore: {'; '.join(self._problems)}",
                                  hint="plan() lists the problems; nothing was changed")
        if self.mode == "in_place":
            self._tool()
            for item in self.items:
                self._inspect(item)
            return
        self.journal.phase("loading", staging=[i.staging for i in self.items])
        try:
            for item in self.items:
                self._prepare_item(item)
        except BaseException:
            with contextlib.suppress(Exception):
                self.abort()
            raise
        self.journal.note(checkpoint_id=self.checkpoint_id, items=[
            {"target": i.target_db, "staging": i.staging,
             "new_limit": i.info.connection_limit if i.info and i.info.connection_limit is not None else -1}
            for i in self.items])
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
            warnings.append(f"{name} could not be created with the dump's "
                            f"{' '.join(f'{k}={v}' for k, v in info.create_options)} ({text}); it was created with "
                            "the server's default encoding and locale")
            log.warning("%s/%s: %s", self.target.label, name, warnings[-1])
            self._exec(conn, base, db=name, action=f"creating database {name}")
        if not self.no_owner and info.owner:
            try:
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO ").format(sql.Identifier(name))
                             + sql.SQL(info.owner))
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
                exists = self._exec(conn, "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s",
                                    (schema,), db=dbname).fetchone()
                if not exists:
                    self._exec(conn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)), db=dbname,
                               action=f"creating schema {schema}")
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
            statements += [sql.SQL(before) + sql.SQL(" ON DATABASE ") + ident + sql.SQL(" " + after)
                           for before, after in info.grants]
        statements += [sql.SQL("ALTER ROLE ") + sql.SQL(role) + sql.SQL(" IN DATABASE ") + ident + sql.SQL(" " + tail)
                       for role, tail in info.role_settings]
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

    def _pg_restore(self, item: _Item, dbname: str, *, in_place: bool) -> None:
        tool = self._tool()
        argv = [tool.path, "--no-password", "--exit-on-error", f"--format={item.fmt}"]
        if self.no_owner:
            argv.append("--no-owner")
        if self.no_privileges:
            argv.append("--no-privileges")
        if in_place:
            argv += ["--clean", "--if-exists"]
            if self.jobs == 1:
                argv.append("--single-transaction")
        if self.jobs > 1:
            argv.append(f"--jobs={self.jobs}")
        stream = item.fmt == "custom" and self.jobs == 1 and not in_place
        item.details["pg_restore"] = {"jobs": self.jobs, "input": "stdin" if stream else "file",
                                      "options": argv[1:]}
        log.info("pg_restore of %s into %s/%s (%s format, %d job(s), %s)", item.artifact.name, self.target.label,
                 dbname, item.fmt, self.jobs, "streamed" if stream else "from a temporary copy")
        t0 = time.monotonic()
        with S.tool_auth(self.target) as auth:
            auth.env = self._with_options(auth.env, with_options=not in_place)
            argv.insert(1, f"--dbname={auth.conninfo(dbname, PG_RESTORE_APPLICATION_NAME)}")
            if stream:
                self._run_tool(argv, auth, dbname=dbname, feed=self._feed(item))
            else:
                with K._private_dir(self.workdir, ".tmp-pgrestore-") as work:
                    path = self._materialize(item, work)
                    self._run_tool([*argv, path], auth, dbname=dbname)
        item.details["pg_restore_seconds"] = round(time.monotonic() - t0, 3)
        log.info("pg_restore into %s/%s finished in %.1fs", self.target.label, dbname, time.monotonic() - t0)

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

    # ---- verification -----------------------------------------------------------------------------

    def _verify(self, item: _Item, dbname: str, *, in_place: bool) -> dict[str, Any]:
        art = item.artifact
        got = K.fingerprint(self.target, dbname, exact_counts=item.exact_counts, **item.filters)
        want_rows: dict[str, int | None] = art.fingerprints.get("rows") or {}
        got_rows: dict[str, int | None] = got["rows"]
        problems: list[str] = []
        warnings: list[str] = []
        for table in sorted(set(want_rows) - set(got_rows)):
            problems.append(f"table {table} is missing (the checkpoint recorded {want_rows[table]} rows)")
        extra = sorted(set(got_rows) - set(want_rows))
        for table in extra:
            (warnings if in_place else problems).append(
                f"table {table} ({got_rows[table]} rows) is not in the checkpoint")
        if item.exact_counts:
            for table in sorted(set(want_rows) & set(got_rows)):
                if want_rows[table] != got_rows[table]:
                    problems.append(f"table {table} has {got_rows[table]} rows, the checkpoint recorded "
                                    f"{want_rows[table]}")
        want_schema = art.fingerprints.get("schema_sha256")
        if want_schema and got["schema_sha256"] != want_schema:
            text = (f"the schema differs from the checkpoint's (schema_sha256 {got['schema_sha256'][:12]}... "
                    f"instead of {want_schema[:12]}...)")
            if in_place and extra:
                warnings.append(text + ": not comparable while tables that are not in the checkpoint remain")
            else:
                problems.append(text)
        if problems:
            shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
            hint = ("the database was changed in place: restore the safety checkpoint (tag 'safety') taken before "
                    "this restore" if in_place else
                    f"{dbname} was dropped and the current database was not touched; verify the checkpoint and "
                    "check that nothing else wrote to the side-by-side copy")
            raise RestoreVerificationError(
                f"{self.target.label}/{dbname}: the restored data does not match artifact {art.name} of checkpoint "
                f"{self.checkpoint_id}: {shown}", hint=hint)
        return {"tables": len(got_rows), "rows": sum(v for v in got_rows.values() if isinstance(v, int)),
                "row_counts": got["row_counts"], "schema_sha256": got["schema_sha256"], "warnings": warnings}

    # ---- cut-over ---------------------------------------------------------------------------------

    def cutover(self) -> RestoreOutcome:
        """Switch every verified copy in (journaled; see ``_cutover``); undo them all if one fails."""
        if self.mode == "in_place":
            self.journal.note(mode="in_place")
            self.journal.phase("cutting_over")
            for item in self.items:
                self._restore_in_place(item)
            self.journal.phase("cut_over")
            return self._outcome()
        with self._admin("cutting over") as conn:
            srv = self._server(conn)
            switches = [self._switch_for(srv, item) for item in self.items]
            self.journal.note(switches=[asdict(sw) for sw in switches])
            self.journal.phase("cutting_over")
            done: list[_Item] = []
            try:
                for item, sw in zip(self.items, switches):
                    self._switch(srv, item, sw)
                    done.append(item)
            except BaseException as exc:
                self.journal.phase("rolling_back")
                failed = self._switch_back(srv, done)
                if failed and isinstance(exc, Exception):
                    raise CutoverError(
                        f"{self.target.label}: cut-over failed ({exc}) and putting back the databases cut over "
                        f"before it failed too: {'; '.join(failed)}",
                        hint="run `airflow-checkpoint recover-interrupted`; the rollback copies "
                        "(`airflow-checkpoint rollbacks list`) and the safety checkpoint hold the previous data",
                    ) from exc
                self.journal.phase("rolled_back")
                raise
        self.journal.phase("cut_over")
        return self._outcome()

    def _outcome(self) -> RestoreOutcome:
        outcome = RestoreOutcome(COMPONENT)
        for item in self.items:
            outcome.restored.append(item.target_db)
            if item.rollback:
                outcome.rollback.append(item.rollback)
            outcome.details[item.target_db] = {"source": item.source, "artifact": item.artifact.name,
                                               "mode": self.mode, "rollback": item.rollback, **item.details}
        return outcome

    def _switch_for(self, srv: Server, item: _Item) -> Switch:
        """What the cut-over of ``item`` will do, with the names and settings a replay needs."""
        if srv.settings(item.staging) is None:
            raise CutoverError(f"{self.target.label}/{item.target_db}: the side-by-side copy {item.staging} does "
                               "not exist", hint="run prepare() before cutover(); nothing was changed")
        current = srv.settings(item.target_db)
        limit = item.info.connection_limit if item.info and item.info.connection_limit is not None else -1
        if current is None:
            return Switch(item.target_db, item.staging, None, new_limit=limit)
        return Switch(item.target_db, item.staging, rollback_name(item.target_db, self.checkpoint_id),
                      allow=current[0], limit=current[1], new_limit=limit)

    def _switch(self, srv: Server, item: _Item, sw: Switch) -> None:
        where = f"{self.target.label}/{item.target_db}"
        t0 = time.monotonic()
        terminated = srv.switch(sw, self.journal)
        item.existed, item.rollback, item.switch, item.cut_over = sw.rollback is not None, sw.rollback, sw, True
        item.details.update({"terminated_sessions": terminated, "cutover_seconds": round(time.monotonic() - t0, 3),
                             "connection_limit": sw.new_limit})
        if sw.rollback:
            log.info("%s now serves checkpoint %s; the previous data is kept as %s (%d session(s) terminated, "
                     "cut-over %.2fs)", where, self.checkpoint_id, sw.rollback, terminated, time.monotonic() - t0)
        else:
            log.info("%s now serves checkpoint %s (it did not exist before)", where, self.checkpoint_id)
        if sw.rollback and sw.limit != sw.new_limit:
            log.info("%s: CONNECTION LIMIT is the checkpoint's %d (the replaced database had %d, kept on %s)",
                     where, sw.new_limit, sw.limit, sw.rollback)

    def _switch_back(self, srv: Server, items: list[_Item]) -> list[str]:
        """Undo the cut-over of ``items``, newest first; returns the failures."""
        failed = []
        for item in reversed(items):
            assert item.switch is not None
            try:
                srv.switch_back(item.switch, self.journal)
            except Exception as exc:  # noqa: BLE001 - reported by the caller
                log.exception("rolling back %s failed", item.target_db)
                failed.append(f"{item.target_db}: {exc}")
                continue
            item.cut_over, item.rollback = False, None
            log.info("%s/%s: rolled back; the previous data serves again", self.target.label, item.target_db)
        return failed

    def _restore_in_place(self, item: _Item) -> None:
        where = f"{self.target.label}/{item.target_db}"
        t0 = time.monotonic()
        info = self._inspect(item)
        warnings: list[str] = []
        with self._admin("preparing the in-place restore") as conn:
            if self._server(conn).settings(item.target_db) is None:
                warnings += self._create_database(conn, item.target_db, info)
                item.existed = False
            else:
                item.existed = True
        warnings += [f"created missing schema {s}" for s in self._create_schemas(item, item.target_db)]
        try:
            self._pg_restore(item, item.target_db, in_place=True)
        except CheckpointError as exc:
            state = ("nothing was changed (pg_restore ran in a single transaction)" if self.jobs == 1 else
                     "the database may be partly restored: restore the safety checkpoint (tag 'safety') taken "
                     "before this restore")
            raise type(exc)(f"{exc.message}\n{where}: {state}", hint=exc.hint) from None
        warnings += self._apply_database_properties(item, item.target_db)
        item.details["verification"] = self._verify(item, item.target_db, in_place=True)
        item.details["warnings"] = warnings + item.details["verification"].pop("warnings", [])
        item.details["cutover_seconds"] = round(time.monotonic() - t0, 3)
        item.cut_over, item.rollback = True, None

    # ---- rollback and abort -----------------------------------------------------------------------

    def rollback(self) -> None:
        """Put the replaced databases back (side by side); the restored copies are dropped."""
        if self.mode == "in_place" and any(i.cut_over for i in self.items):
            raise CutoverError(f"{self.target.label}: an in-place restore cannot be undone here",
                               hint="restore the safety checkpoint (tag 'safety') taken before this restore")
        items = [i for i in self.items if i.cut_over]
        if not items:
            return
        self.journal.phase("rolling_back")
        with self._admin("rolling back") as conn:
            failed = self._switch_back(self._server(conn), items)
        if failed:
            raise CutoverError(f"{self.target.label}: rollback failed: {'; '.join(failed)}",
                               hint="run `airflow-checkpoint recover-interrupted`; the rollback copies "
                               "(`airflow-checkpoint rollbacks list`) and the safety checkpoint hold the previous data")
        self.journal.phase("rolled_back")

    def abort(self) -> None:
        """Drop the ``__restoring`` copies of this restore (idempotent; never touches what serves).

        Tries every copy; raises naming those that could not be dropped."""
        pending = [i for i in self.items if not i.cut_over]
        if not pending:
            return
        left: list[str] = []
        try:
            with self._admin("dropping side-by-side copies") as conn:
                srv = self._server(conn)
                for item in pending:
                    try:
                        srv.drop_copy(item.staging)
                        item.prepared = False
                    except CheckpointError as exc:
                        left.append(f"{item.staging} ({exc.message})")
        except CheckpointError as exc:
            left = [f"{i.staging} ({exc.message})" for i in pending]
        if left:
            raise CutoverError(f"{self.target.label}: could not drop the side-by-side copies {', '.join(left)}",
                               hint="they hold no live data; `airflow-checkpoint cleanup` or the next restore "
                               "removes them")
        self.journal.phase("aborted")

    # ---- health -----------------------------------------------------------------------------------

    def health(self, tolerance: float) -> list[HealthCheck]:
        expectations = {i.target_db: {"rows": i.artifact.fingerprints.get("rows") or {},
                                      "row_counts": i.artifact.fingerprints.get("row_counts", "exact")}
                        for i in self.items}
        return _health(self.target, expectations, tolerance=tolerance)


def _unquote(ident: str) -> str:
    """A role name as pg_dump printed it (quoted if needed) -> the name."""
    return ident[1:-1].replace('""', '"') if ident.startswith('"') and ident.endswith('"') else ident


def _tempdir() -> str:
    import tempfile

    return tempfile.gettempdir()


def _rollback_base(name: str, others: Any) -> str | None:
    """The database a rollback copy was taken of: an existing database whose rollback name this is,
    else the name's own prefix (which is shortened for long names)."""
    m = _ROLLBACK_RE.match(name)
    if not m:
        return None
    suffix = name[len(m.group("base")):]
    for db in others:
        if db != name and not _ROLLBACK_RE.match(db) and fit_name(db, suffix) == name:
            return db
    return m.group("base")


# --------------------------------------------------------------------------- rollback copies


def list_rollbacks(target: PostgresTarget) -> list[dict[str, Any]]:
    """The rollback copies on the server, newest first: name, database, checkpoint (short id),
    created_at, size, sessions, allow_connections, database_exists."""
    with C.connect(target, action="listing rollback copies") as conn:
        try:
            rows = conn.execute("""
                SELECT d.datname, d.datallowconn,
                       CASE WHEN pg_catalog.has_database_privilege(d.datname, 'CONNECT')
                            THEN pg_catalog.pg_database_size(d.datname) END,
                       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a
                         WHERE a.datname OPERATOR(pg_catalog.=) d.datname)
                FROM pg_catalog.pg_database d ORDER BY 1""").fetchall()
        except psycopg.Error as exc:
            raise C.translate(exc, target, None, "listing rollback copies") from None
    names = [r[0] for r in rows]
    out = []
    for name, allow, size, sessions in rows:
        m = _ROLLBACK_RE.match(name)
        if not m:
            continue
        base = _rollback_base(name, names)
        ts = m.group("ts")
        out.append({
            "name": name,
            "database": base,
            "database_exists": base in names,
            "checkpoint": m.group("ckpt"),
            "created_at": f"{ts[:4]}-{ts[4:6]}-{ts[6:8]}T{ts[8:10]}:{ts[10:12]}:{ts[12:14]}Z",
            "size": int(size) if size is not None else None,
            "sessions": int(sessions),
            "allow_connections": bool(allow),
        })
    out.sort(key=lambda r: (r["created_at"], r["name"]), reverse=True)
    return out


def drop_rollback(target: PostgresTarget, name: str, *, force: bool = False) -> None:
    """Drop one rollback copy. Refuses names that are not rollback copies; ``force`` ends its sessions."""
    if not is_rollback_name(name):
        raise EngineError(f"{target.label}: {name!r} is not a rollback copy (those are named "
                          "<db>__rollback_<checkpoint>_<yyyymmddhhmmss>); refusing to drop it",
                          hint="list_rollbacks() shows the rollback copies")
    with C.connect(target, action="dropping a rollback copy") as conn:
        try:
            row = conn.execute("SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a "
                               "WHERE a.datname = d.datname) FROM pg_catalog.pg_database d WHERE d.datname = %s",
                               (name,)).fetchone()
            if row is None:
                left = [r["name"] for r in list_rollbacks(target)]
                raise NotFoundError(f"{target.label}: there is no rollback copy {name!r}",
                                    hint=f"rollback copies: {', '.join(left)}" if left else "there are none")
            if row[0] and not force:
                raise EngineError(f"{target.label}: rollback copy {name!r} has {row[0]} open session(s)",
                                  hint="close them, or pass force=True to terminate them")
            num = C.server_version_num(conn)
            if force and num < 130000:
                conn.execute("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
                             "WHERE datname = %s", (name,))
            query = sql.SQL("DROP DATABASE {}").format(sql.Identifier(name))
            if force and num >= 130000:
                query += sql.SQL(" WITH (FORCE)")
            conn.execute(query)
        except psycopg.Error as exc:
            err = C.translate(exc, target, name, f"dropping rollback copy {name}")
            raise EngineError(err.message, hint=err.hint) from None
    log.info("%s: dropped rollback copy %s", target.label, name)
