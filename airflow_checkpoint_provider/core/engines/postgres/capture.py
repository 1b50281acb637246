"""Capture: one pg_dump per database, streamed into staging inside an exported snapshot."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import psycopg

from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres import _secrets as S
from airflow_checkpoint_provider.core.engines.postgres._names import is_own_copy
from airflow_checkpoint_provider.core.engines.postgres.fingerprint import (
    Filters,
    Selection,
    check_selection,
    compute,
    fingerprint_in_transaction,
    open_snapshot_connection,
    select_relations,
    unreadable,
)
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    CheckpointError,
    NotFoundError,
    ToolError,
)
from airflow_checkpoint_provider.core.manifest import Artifact, format_ts, utcnow
from airflow_checkpoint_provider.core.staging import ArtifactSink, Staging

log = C.log

STORE = "postgres"
ENGINE = "postgresql"
KIND_CUSTOM = "pg_dump/custom"
KIND_DIRECTORY = "pg_dump/directory"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


# --------------------------------------------------------------------------- naming


def artifact_base(dbname: str) -> str:
    """The artifact-safe base name of a database: itself, or a cleaned name plus a short hash."""
    if _SAFE_NAME.fullmatch(dbname) and len(dbname) <= 100:
        return dbname
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", dbname).strip("._-")[:40] or "db"
    return f"{clean}-{hashlib.sha256(dbname.encode()).hexdigest()[:8]}"


def artifact_name(dbname: str, dump_format: str) -> str:
    suffix = ".dump" if dump_format == "custom" else ".dir.tar"
    return f"{STORE}/{artifact_base(dbname)}{suffix}"


# --------------------------------------------------------------------------- database selection


def resolve_databases(
    target: PostgresTarget,
    rows: list[tuple[str, bool, bool, bool]],
    databases: str | list[str] | None,
    *,
    include_own_copies: bool = False,
) -> list[str]:
    """Names to capture: see :func:`capture` for the rule. ``all`` leaves out this provider's own
    side-by-side, rollback and drill copies unless ``include_own_copies``."""
    available = C.connectable(rows)
    if databases is None or databases == "all":
        chosen = [d for d in available if d != "postgres" and (include_own_copies or not is_own_copy(d))]
        if not chosen:
            raise NotFoundError(
                f"{target.label}: databases='all' found nothing to capture (connectable: {available or 'none'}; "
                "'postgres' is only captured when named)",
                hint="name the databases explicitly, e.g. databases=['postgres']",
            )
        return chosen
    names = [databases] if isinstance(databases, str) else list(databases)
    if not names:
        raise ValueError("databases is an empty list; pass None or 'all' for every database")
    by_name = {r[0]: r for r in rows}
    out: list[str] = []
    for name in names:
        if name in out:
            continue
        row = by_name.get(name)
        if row is None:
            raise NotFoundError(
                f"{target.label}: database {name!r} does not exist; available: {', '.join(available) or 'none'}",
                hint="check the database name (names are case-sensitive)",
            )
        if name not in available:
            _, allow, template, can = row
            why = (
                "is a template"
                if template
                else (
                    "does not accept connections"
                    if not allow
                    else f"is not open to {target.user!r} (no CONNECT privilege)"
                )
            )
            raise NotFoundError(
                f"{target.label}: database {name!r} {why}; capturable: {', '.join(available)}",
                hint="capture another database, or grant CONNECT / ALLOW_CONNECTIONS",
            )
        out.append(name)
    return out


# --------------------------------------------------------------------------- subprocess plumbing


class _StderrCollector(threading.Thread):
    """Reads a pipe to the end, keeping the first and the last lines."""

    def __init__(self, pipe: IO[bytes], keep: int = 200) -> None:
        super().__init__(daemon=True, name="pg_dump-stderr")
        self.pipe = pipe
        self.head: list[str] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self.dropped = 0
        self.keep = keep

    def run(self) -> None:
        for raw in iter(self.pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if len(self.head) < self.keep:
                self.head.append(line)
            else:
                if len(self.tail) == self.tail.maxlen:
                    self.dropped += 1
                self.tail.append(line)

    def text(self) -> str:
        mid = [f"... ({self.dropped} lines left out) ..."] if self.dropped else []
        return "\n".join([*self.head, *mid, *self.tail])


def _pump(fd: int, sink: ArtifactSink, chunk: int = 1024 * 1024) -> int:
    """Copy a pipe into the sink through one reused buffer, in writes of up to ``chunk`` bytes."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    while True:
        filled = 0
        while filled < chunk:
            n = os.readv(fd, [view[filled:]])
            if not n:
                break
            filled += n
        if not filled:
            return total
        sink.write(view[:filled])  # zstd consumes (copies) the input before returning
        total += filled


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _private_dir(parent: str | None, prefix: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _work_parent(staging: Staging) -> str | None:
    """Where the directory-format dump goes: inside the staging area when local, else the tempdir."""
    local = staging.fs.local_path(staging.rel)
    return str(local) if local is not None and local.is_dir() else None


def _tar_directory(directory: str, sink: ArtifactSink) -> int:
    """Stream an uncompressed tar of the dump directory's files (no prefix) into the sink."""
    names = sorted(e.name for e in os.scandir(directory) if e.is_file(follow_symlinks=False))
    names.sort(key=lambda n: (n != "toc.dat", n))  # the TOC first
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for name in names:
            path = os.path.join(directory, name)
            st = os.stat(path)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = st.st_size, 0o600, int(st.st_mtime)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return len(names)


# --------------------------------------------------------------------------- one database


@dataclass(frozen=True)
class _Options:
    dump_format: str
    jobs: int
    filters: Filters
    exact_counts: bool
    compression_level: int
    tool: C.ToolVersion
    server_version: str


def _pg_dump_argv(opts: _Options, auth: S.ToolAuth, dbname: str, snapshot: str, outdir: str | None) -> list[str]:
    argv = [
        opts.tool.path,
        f"--dbname={auth.conninfo(dbname)}",
        "--no-password",
        f"--format={opts.dump_format}",
        "--compress=0",
        f"--snapshot={snapshot}",
    ]
    if outdir is not None:
        argv += [f"--jobs={opts.jobs}", f"--file={outdir}"]
    return argv + opts.filters.pg_dump_args()


def _capture_one(target: PostgresTarget, staging: Staging, dbname: str, opts: _Options) -> Artifact:
    where = f"{target.label}/{dbname}"
    name = artifact_name(dbname, opts.dump_format)
    kind = KIND_CUSTOM if opts.dump_format == "custom" else KIND_DIRECTORY
    conn = open_snapshot_connection(target, dbname, "opening the snapshot transaction")
    try:
        with S.tool_auth(target) as auth:
            try:
                exported_at = format_ts(utcnow())
                snapshot = C.one(conn.execute("SELECT pg_catalog.pg_export_snapshot()"))[0]
                check_selection(conn, opts.filters, where)
                selection = select_relations(conn, opts.filters)
                denied = unreadable(conn, selection)
            except psycopg.Error as exc:
                raise C.translate(exc, target, dbname, "exporting the snapshot") from None
            if denied:
                shown = ", ".join(denied[:20]) + (f" and {len(denied) - 20} more" if len(denied) > 20 else "")
                raise AuthenticationError(
                    f"{where}: permission denied: user {target.user!r} cannot SELECT from {shown}",
                    hint="grant SELECT on them (or pg_read_all_data), or leave them out with "
                    "exclude_tables/exclude_schemas",
                )
            with staging.artifact(
                name,
                store=STORE,
                kind=kind,
                engine=ENGINE,
                engine_version=opts.server_version,
                compression="zstd",
                level=opts.compression_level,
            ) as sink:
                sink.capture_start = exported_at
                if opts.dump_format == "custom":
                    _run_dump(target, dbname, opts, conn, selection, auth, sink, snapshot, None)
                else:
                    with _private_dir(_work_parent(staging), ".tmp-pgdump-") as work:
                        outdir = os.path.join(work, "dump")
                        _run_dump(target, dbname, opts, conn, selection, auth, sink, snapshot, outdir)
                sink.meta = {
                    "database": dbname,
                    "format": opts.dump_format,
                    "jobs": opts.jobs,
                    "pg_dump_version": opts.tool.version,
                    "filters": opts.filters.to_meta(),
                    "exact_counts": opts.exact_counts,
                }
                if opts.dump_format == "directory":
                    sink.meta["layout"] = "tar of the pg_dump directory's files, toc.dat first, no prefix"
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    assert sink.artifact is not None
    return sink.artifact


def _run_dump(
    target: PostgresTarget,
    dbname: str,
    opts: _Options,
    conn: psycopg.Connection,
    selection: Selection,
    auth: S.ToolAuth,
    sink: ArtifactSink,
    snapshot: str,
    outdir: str | None,
) -> None:
    """Run pg_dump in the snapshot while the fingerprints are computed in the same transaction."""
    argv = _pg_dump_argv(opts, auth, dbname, snapshot, outdir)
    log.info(
        "pg_dump of %s/%s (%s format%s) in snapshot %s",
        target.label,
        dbname,
        opts.dump_format,
        f", {opts.jobs} jobs" if outdir else "",
        snapshot,
    )
    log.debug("argv: %s", argv)
    result: dict[str, Any] = {}

    def fingerprints() -> None:
        try:
            result["value"] = compute(
                conn, selection, exact_counts=opts.exact_counts, server_version=opts.server_version
            )
        except BaseException as exc:
            result["error"] = exc

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if outdir is None else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=auth.env,
            close_fds=True,
            pass_fds=auth.pass_fds,
        )
    except OSError as exc:
        raise ToolError(
            f"{target.label}/{dbname}: cannot start {opts.tool.path!r}: {exc}",
            hint="check the pg_dump path and its permissions",
        ) from None
    worker = threading.Thread(target=fingerprints, daemon=True, name="pg-fingerprints")
    errors = _StderrCollector(proc.stderr)  # type: ignore[arg-type]
    errors.start()
    worker.start()
    started = time.monotonic()
    try:
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(proc.stdout.fileno(), _F_SETPIPE_SZ, 1024 * 1024)
            _pump(proc.stdout.fileno(), sink)
        rc = proc.wait()
        errors.join()
        if rc != 0:
            # A failed fingerprint query ends the snapshot's transaction, which can make pg_dump fail
            # too: then the query's error is the cause. Give it a moment to surface.
            worker.join(2)
            if isinstance(result.get("error"), psycopg.Error):
                raise C.translate(result["error"], target, dbname, "computing fingerprints")
            raise auth.failure() or C.translate_tool_failure(target, dbname, "pg_dump", rc, errors.text())
        log.info("pg_dump of %s/%s finished in %.1fs", target.label, dbname, time.monotonic() - started)
        if outdir is not None:
            n = _tar_directory(outdir, sink)
            log.info("streamed %d files of the directory dump into %s", n, sink.name)
        sink.mark_captured()
        worker.join()
    except BaseException:
        _stop(proc)
        if worker.is_alive():
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=10)
            worker.join(30)
        raise
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    if "error" in result:
        failure = result["error"]
        if isinstance(failure, psycopg.Error):
            raise C.translate(failure, target, dbname, "computing fingerprints") from None
        raise failure
    sink.fingerprints = result["value"]


# --------------------------------------------------------------------------- entry point


def capture(
    target: PostgresTarget,
    staging: Staging,
    *,
    databases: str | list[str] | None = None,
    dump_format: str = "custom",
    jobs: int = 1,
    schemas: str | tuple[str, ...] | list[str] = (),
    exclude_schemas: str | tuple[str, ...] | list[str] = (),
    tables: str | tuple[str, ...] | list[str] = (),
    exclude_tables: str | tuple[str, ...] | list[str] = (),
    pg_dump: str = "pg_dump",
    exact_counts: bool = True,
    compression_level: int = 3,
    include_own_copies: bool = False,
) -> list[Artifact]:
    """Dump databases into ``staging``, one artifact per database; see the package docstring.

    ``databases="all"`` leaves out this provider's own copies (``<db>__restoring``,
    ``<db>__rollback_...``, ``__drill_``) unless ``include_own_copies``."""
    if dump_format not in ("custom", "directory"):
        raise ValueError(f"dump_format must be 'custom' or 'directory', not {dump_format!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, not {jobs!r}")
    if jobs > 1 and dump_format != "directory":
        raise ValueError("jobs > 1 needs dump_format='directory' (pg_dump dumps in parallel only to a directory)")
    filters = Filters.of(schemas, exclude_schemas, tables, exclude_tables)

    tool = C.tool_version(target, pg_dump)
    fallback = (
        None
        if databases is None or databases == "all"
        else ([databases] if isinstance(databases, str) else list(databases))
    )
    try:
        conn = C.connect(target, action="reading the server version and databases")
    except NotFoundError:
        if not fallback:  # the maintenance database is missing: use the first named one instead
            raise
        conn = C.connect(target, fallback[0], action="reading the server version and databases")
    with conn:
        try:
            num = C.server_version_num(conn)
            rows = C.database_rows(conn)
        except psycopg.Error as exc:
            raise C.translate(exc, target, conn.info.dbname, "listing databases") from None
    C.check_tool_version(target, tool, num)
    names = resolve_databases(target, rows, databases, include_own_copies=include_own_copies)
    opts = _Options(dump_format, jobs, filters, exact_counts, compression_level, tool, C.version_string(num))

    seen: dict[str, str] = {}
    for db in names:
        art_name = artifact_name(db, dump_format)
        if art_name in seen:
            raise CheckpointError(
                f"databases {seen[art_name]!r} and {db!r} map to the same artifact {art_name!r}",
                hint="capture them in separate runs",
            )
        seen[art_name] = db

    done: list[Artifact] = []
    try:
        for db in names:
            art = _capture_one(target, staging, db, opts)
            log.info(
                "captured %s/%s into %s: %d bytes (raw %d)", target.label, db, art.name, art.size, art.raw_size or 0
            )
            done.append(art)
    except BaseException:
        for art in done:  # all or nothing: drop this call's committed artifacts (descriptor first)
            with contextlib.suppress(Exception):
                staging.fs.remove(staging.desc_rel(art.name))
                staging.fs.remove(staging.data_rel(art.name))
        raise
    return done


def fingerprint(
    target: PostgresTarget,
    dbname: str,
    *,
    schemas: str | tuple[str, ...] | list[str] = (),
    exclude_schemas: str | tuple[str, ...] | list[str] = (),
    tables: str | tuple[str, ...] | list[str] = (),
    exclude_tables: str | tuple[str, ...] | list[str] = (),
    exact_counts: bool = True,
) -> dict[str, Any]:
    """The fingerprints :func:`capture` records, for the database as it is now."""
    filters = Filters.of(schemas, exclude_schemas, tables, exclude_tables)
    conn = open_snapshot_connection(target, dbname, "computing fingerprints")
    try:
        try:
            version = C.version_string(C.server_version_num(conn))
            return fingerprint_in_transaction(conn, filters, exact_counts=exact_counts, server_version=version)
        except psycopg.Error as exc:
            raise C.translate(exc, target, dbname, "computing fingerprints") from None
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        with contextlib.suppress(Exception):
            conn.close()
