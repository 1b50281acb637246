"""PostgreSQL engine: capture with ``pg_dump`` inside an exported snapshot, and fingerprints.

Public API::

    capture(target, staging, *, databases=None, dump_format="custom", jobs=1,
            schemas=(), exclude_schemas=(), tables=(), exclude_tables=(),
            pg_dump="pg_dump", exact_counts=True, compression_level=3) -> list[Artifact]
    fingerprint(target, dbname, *, schemas=(), exclude_schemas=(), tables=(), exclude_tables=(),
                exact_counts=True) -> dict
    server_version(target) -> str          # "15.18"
    list_databases(target) -> list[str]    # capturable databases, sorted

**Which databases.** ``databases`` is one name, a list of names, or ``None`` / ``"all"``.
"all" means every database that is not a template, accepts connections and grants the
role CONNECT, *except* ``postgres`` (the maintenance database, usually empty); name
``postgres`` explicitly to capture it. A named database that does not exist raises
:class:`NotFoundError` listing the ones available. (A database literally called
``all`` is captured with ``databases=["all"]``.)

**Artifacts.** One per database, zstd-compressed by the staging sink:

* custom format: ``postgres/<db>.dump``, kind ``pg_dump/custom``: pg_dump's stdout
  (``-Fc -Z0``, no gzip) is compressed and hashed by the sink in the same pass;
* directory format (``jobs`` parallel workers): ``postgres/<db>.dir.tar``, kind
  ``pg_dump/directory``: ``pg_dump -Fd -j N -Z0`` writes into a private temporary
  directory inside the staging area (removed afterwards, also on failure) which is then
  streamed as an uncompressed tar of its files (``toc.dat`` first, no path prefix).
  Extract it into an empty directory and point ``pg_restore -Fd`` at that directory.

A database name outside ``[A-Za-z0-9._-]`` becomes a cleaned name plus 8 hex digits of its
sha256 (``my db`` -> ``my_db-1c5d0a2e``); the real name is always ``meta["database"]``.
Custom-format archives written to a pipe carry no data offsets: ``pg_restore -j`` still
works on them but has to scan; use the directory format for big parallel restores.

**Consistency.** For each database a REPEATABLE READ, READ ONLY transaction exports its
snapshot (``pg_export_snapshot()``); pg_dump runs with ``--snapshot`` and the fingerprint
queries run in that same transaction while pg_dump works, so the dump and the
fingerprints describe the same instant. ``capture_start`` is the time of the export.

**Fingerprints** (``artifact.fingerprints``; see ``_fingerprint.py`` for the details)::

    {"rows": {"public.orders": 20000, ...},   # exact count(*) in the snapshot, or reltuples
     "row_counts": "exact" | "estimate",
     "schema_sha256": "<hex>",               # stable across a dump/restore round trip
     "server_version": "15.18",
     "database_size": 123456}                # pg_database_size: NOT stable across a restore

Table names are ``quote_ident(schema).quote_ident(table)``. The filters select the same
relations for the fingerprints as for pg_dump; a restore check compares ``rows`` and
``schema_sha256`` of :func:`fingerprint` (called with the ``meta["filters"]`` of the
artifact) with the captured ones.

**TLS.** ``target.sslmode`` and every other libpq TLS option in ``target.ssl``
(``sslrootcert``, ``sslcert``, ``sslkey``, ``sslpassword``, ``sslcrl``, ``sslsni``, ...) reach
psycopg, pg_dump and pg_restore alike; a TLS failure is a :class:`ConnectionFailedError`
naming sslmode and the certificate files.

**Secrets** (``_secrets.py``). psycopg gets the password in-process. pg_dump and pg_restore
get it through a 0600 passfile held in an anonymous memory file (``memfd_create``, passed as
``PGPASSFILE=/proc/self/fd/N``), so it never touches disk and a SIGKILL leaves nothing behind;
the ``sslpassword`` goes the same way in a service file. A password no passfile line can hold
(a line break) is not handed to the tools at all: they log in through a relay on a private Unix
socket that answers the server's SCRAM or md5 challenge in this process (``_relay.py``). Never
argv, never the environment (the worker's ``AIRFLOW_CONN_*`` variables are not passed on
either); any error text is scrubbed of the password.

**Errors** (all name ``target.label`` and end with a HINT): pg_dump missing or older than
the server -> :class:`ToolError`; unknown database, or filters that match nothing ->
:class:`NotFoundError`; bad credentials or missing privileges ->
:class:`AuthenticationError`; unreachable server -> :class:`ConnectionFailedError`;
pg_dump failing -> :class:`ToolError` with its (scrubbed) stderr. A failed call leaves
nothing in staging: the artifact being written is discarded, and the artifacts this call
already committed for other databases are removed.

Restore (``restore.py`` with ``_plan.py``, ``_load.py``, ``_tool.py``, ``_switching.py``, ``_cutover.py``; ``health.py``)
=========================================

::

    PostgresRestore(target, store, checkpoint_id, artifacts, *, mode="side_by_side", databases=None,
                    rename=None, pg_restore="pg_restore", jobs=1, capture_options=None, workdir=None,
                    no_owner=True, no_privileges=False, session_options=None, cutover_timeout=30.0)
        .plan() / .safety_capture(staging) / .prepare() / .cutover() / .rollback() / .abort() / .health(tol)
    health(target, expectations, *, tolerance=0.0) -> list[HealthCheck]
    list_rollbacks(target) -> list[dict]        # name, database, checkpoint, created_at, size, sessions, ...
    drop_rollback(target, name, *, force=False) # refuses names that are not rollback copies

``PostgresRestore`` is the ``ComponentRestore`` of :mod:`core.recovery` for PostgreSQL; it restores
the ``postgres`` artifacts of one checkpoint (``databases=`` picks some by ``meta["database"]``;
``rename={"appdb": "appdb_copy"}`` restores under another name, on the same or another server).

**Side by side** (default), per database ``<db>``:

1. ``plan()`` changes nothing. Problems that refuse the restore: a dump from a newer server major
   than the target's; a pg_restore older than the pg_dump that wrote the dump, or one that cannot
   read it (the TOC is read with ``pg_restore -C -l``: only the start of the artifact is streamed);
   a role without CREATEDB (or superuser), or that does not own a database it must replace; an
   unknown database in ``databases=`` (the message lists what the checkpoint holds); too little
   temporary space. Conflicts listed: the database exists (``replace``, its size, the sessions that
   the cut-over will terminate), a leftover ``<db>__restoring`` (dropped), existing rollback copies.
2. ``prepare()`` drops a leftover ``<db>__restoring``, creates it from ``template0`` with the
   dump's encoding and locale (the dump's own CREATE DATABASE options; the server's defaults if the
   target lacks that locale, with a warning), runs ``pg_restore --no-owner --exit-on-error`` into
   it, applies the dump's database-level ``ALTER DATABASE ... SET``, comment and grants, then
   verifies: :func:`fingerprint` of the copy, with the artifact's ``meta["filters"]`` and
   ``exact_counts``, must equal the captured ``rows`` and ``schema_sha256``; a mismatch drops the
   copy and raises :class:`RestoreVerificationError` naming the table and both counts. A
   custom-format dump with ``jobs=1`` is streamed into pg_restore's stdin (no temporary file);
   with ``jobs > 1`` it is written to a private temporary file (pg_restore -j needs to seek), and a
   directory-format dump is extracted strictly (regular files with plain names only, ``toc.dat``
   first) into a private temporary directory; both are removed afterwards. A ``tables=`` dump has
   no CREATE SCHEMA: the missing schemas are created first. The password goes as for pg_dump
   (see **Secrets**); the pg_restore sessions run with ``synchronous_commit=off`` (safe: the cut-over's
   synchronous commit flushes the WAL of everything before it).
3. ``cutover()``: ``ALTER DATABASE <db> ALLOW_CONNECTIONS false``, ``pg_terminate_backend`` of
   its client sessions (waiting until they are gone), then in **one transaction** ``<db>`` is
   renamed to ``<db>__rollback_<short checkpoint id>_<UTC yyyymmddhhmmss>`` and ``<db>__restoring``
   to ``<db>``; the restored database gets the checkpoint's CONNECTION LIMIT and the rollback copy
   keeps the replaced one's. The transaction makes the swap all or nothing: if it fails, the
   original keeps its name, is let in again, and :class:`CutoverError` says so. Every step is
   journaled first (``_cutover``; :func:`recover` replays an interrupted cut-over), and while
   connections are blocked a watcher process lets clients in again if the restoring process dies
   (``_guard``). Names longer than 63 bytes are shortened with 8 hex digits of a sha256. A
   database that did not exist is simply renamed into place. With several databases, a failure
   rolls back those already cut over.
4. ``rollback()`` renames the restored database aside (and drops it) and the rollback copy back.
   Rollback copies are kept until :func:`drop_rollback`; :func:`list_rollbacks` shows them.

**In place** (``mode="in_place"``): after the orchestrator's safety checkpoint, ``cutover()``
runs ``pg_restore --clean --if-exists`` directly into the existing database (with
``--single-transaction`` when ``jobs == 1``, so a failure changes nothing), then verifies. There
is no rollback copy: **the safety checkpoint is the way back**, and ``rollback()`` raises saying
so. ``--clean`` only drops what the checkpoint contains: tables created since stay, and are
reported as warnings. The dump is always copied out (and its sha256 checked) before anything
changes.

**Health**: connect, ``SELECT 1``, every expected table exists, row counts within ``tolerance``
(expected, actual, diff); estimate-count checkpoints check existence only.
"""

from airflow_checkpoint_provider.core.engines.postgres._conn import (
    PG_DUMP_APPLICATION_NAME,
    list_databases,
    server_version,
)
from airflow_checkpoint_provider.core.engines.postgres.capture import (
    ENGINE,
    KIND_CUSTOM,
    KIND_DIRECTORY,
    STORE,
    artifact_name,
    capture,
    fingerprint,
)
from airflow_checkpoint_provider.core.engines.postgres.fingerprint import (
    Filters,
    pattern_to_regexes,
)

__all__ = [
    "ENGINE",
    "KIND_CUSTOM",
    "KIND_DIRECTORY",
    "PG_DUMP_APPLICATION_NAME",
    "STORE",
    "Filters",
    "artifact_name",
    "capture",
    "fingerprint",
    "list_databases",
    "pattern_to_regexes",
    "server_version",
]

# --- restore (appended) ---
from airflow_checkpoint_provider.core.engines.postgres._common import (
    PG_RESTORE_APPLICATION_NAME,
    RestoreVerificationError,
)
from airflow_checkpoint_provider.core.engines.postgres._cutover import (
    STEPS,
    CutoverError,
    recover,
)
from airflow_checkpoint_provider.core.engines.postgres._dump import untar_dump_directory
from airflow_checkpoint_provider.core.engines.postgres._names import (
    is_rollback_name,
    restoring_name,
    rollback_name,
)
from airflow_checkpoint_provider.core.engines.postgres._rollbacks import (
    drop_rollback,
    list_rollbacks,
)
from airflow_checkpoint_provider.core.engines.postgres.health import health
from airflow_checkpoint_provider.core.engines.postgres.restore import PostgresRestore

__all__ += [
    "PG_RESTORE_APPLICATION_NAME",
    "CutoverError",
    "PostgresRestore",
    "RestoreVerificationError",
    "STEPS",
    "drop_rollback",
    "health",
    "is_rollback_name",
    "list_rollbacks",
    "recover",
    "restoring_name",
    "rollback_name",
    "untar_dump_directory",
]
