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

**Secrets.** The password reaches pg_dump through a temporary 0600 passfile
(``PGPASSFILE``) in a private directory that is removed afterwards, never argv; any error
text is scrubbed of it.

**Errors** (all name ``target.label`` and end with a HINT): pg_dump missing or older than
the server -> :class:`ToolError`; unknown database, or filters that match nothing ->
:class:`NotFoundError`; bad credentials or missing privileges ->
:class:`AuthenticationError`; unreachable server -> :class:`ConnectionFailedError`;
pg_dump failing -> :class:`ToolError` with its (scrubbed) stderr. A failed call leaves
nothing in staging: the artifact being written is discarded, and the artifacts this call
already committed for other databases are removed.
"""

from airflow_checkpoint_provider.core.engines.postgres._capture import (
    ENGINE,
    KIND_CUSTOM,
    KIND_DIRECTORY,
    STORE,
    artifact_name,
    capture,
    fingerprint,
)
from airflow_checkpoint_provider.core.engines.postgres._conn import (
    PG_DUMP_APPLICATION_NAME,
    list_databases,
    server_version,
)
from airflow_checkpoint_provider.core.engines.postgres._fingerprint import Filters, pattern_to_regexes

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
