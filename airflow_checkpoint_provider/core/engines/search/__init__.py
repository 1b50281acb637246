"""Search engine: Elasticsearch 7-9 and OpenSearch 1-3 snapshots, driven over plain HTTP (httpx).

Public API::

    SearchClient(target)                        # sync; context manager; every call below
        .info() -> {"flavor": "opensearch"|"elasticsearch", "version", "cluster_name", "cluster_uuid"}
        .cluster_health(indices=None, *, level=None, wait_for_status=None, timeout=None) -> dict
        .get_repository(name) -> {"type", "settings"} | None
        .ensure_repository(name, settings=None) -> {"type", "settings"}
        .verify_repository(name) -> [node names]
        .start_snapshot(repository, snapshot, indices, include_global_state=False, *, metadata=None)
        .snapshot_state(repository, snapshot) -> state dict (below)
        .wait_for_snapshot(repository, snapshot, *, poll_interval=1.0, timeout=3600.0) -> state dict
        .snapshot_exists(repository, snapshot) -> bool
        .delete_snapshot(repository, snapshot, *, missing_ok=False) -> bool
        .resolve_indices(indices) -> (names, {name: mappings})
        .fingerprint_indices(names, *, mappings=None, refresh=True) -> {name: {"docs", "mapping_sha256"}}
        .get_mappings(expr), .cat_indices(names), .refresh(names), .count(index)
    AsyncSearchClient(target)                   # async with ...: info, cluster_health, snapshot_state,
                                                #                 wait_for_snapshot (for triggers)
    async_wait_for_snapshot(target, repository, snapshot, *, poll_interval, timeout) -> state dict

    capture(target, staging, *, repository, repository_settings=None, indices=None,
            include_global_state=False, snapshot=None, poll_interval=1.0, timeout=3600,
            include_own_copies=False) -> [Artifact]
    resolve_capture(client, indices, *, include_own_copies=False) -> (indices, mappings, data streams)
    capture_begin(client, *, repository, repository_settings=None, indices=None,
                  include_global_state=False, snapshot=None, key="checkpoint") -> SnapshotStart
    capture_finish(client, staging, *, repository, snapshot, started=None, state=None) -> Artifact

**Deferrable use.** ``capture_begin`` in the operator, ``SnapshotStart.to_dict()`` into the
trigger event or XCom, ``async_wait_for_snapshot`` in the trigger, ``capture_finish`` in
``execute_complete``. The sync and async waits share :class:`SnapshotWait` and
:func:`snapshot_done`, the pure state interpretation.

**State dict** (``snapshot_state``): ``snapshot``, ``uuid``, ``state`` (IN_PROGRESS, SUCCESS,
PARTIAL, FAILED, INCOMPATIBLE), ``reason``, ``indices`` (sorted), ``data_streams``,
``include_global_state``, ``shards`` (total/successful/failed), ``failures`` (index, shard,
reason, status, node_id), ``start_time``/``end_time`` (RFC 3339) and the ``*_in_millis`` values.
PARTIAL, FAILED and INCOMPATIBLE raise :class:`SnapshotFailedError` (a ``CaptureError``) whose
message lists every failed shard (index, shard, reason).

**Which indices.** ``indices`` is a list or a comma-separated string of names, aliases and
patterns; ``None`` means ``*``. Patterns skip dot-indices (system indices such as ``.kibana``,
data-stream backing indices) unless the pattern starts with a dot, and, as the server does by
default, hidden and closed indices; explicit names and aliases are always taken. ``-pattern``
excludes. Expressions are resolved to concrete indices first and the snapshot is taken of exactly
those, so the recorded list, the fingerprints and the snapshot agree. Closed or red indices are
refused before anything starts.

**Fingerprints** (``artifact.fingerprints``)::

    {"indices": {"orders": {"docs": 1200, "mapping_sha256": "<hex>"}, ...},
     "snapshot_uuid": "R5F-VMQQS0GI_7ZETF1_CQ"}

``docs`` is ``GET /<index>/_count`` (top-level documents; ``_cat/indices`` ``docs.count`` would
include nested documents and differ after nothing changed). The indices are refreshed and counted
right before the snapshot starts; the snapshot flushes each shard, so on a quiet cluster the counts
are exactly what it holds. ``mapping_sha256`` is the sha256 of the canonical JSON (sorted keys,
compact) of the index's ``mappings`` from ``GET /<index>/_mapping``.

**Artifact** ``search/snapshot.json`` (store ``search``, kind ``search/snapshot``, engine = flavor):
a JSON document (format version 2) with the repository (name, type, settings with secret-looking
values redacted), the snapshot (name, uuid, state, indices, shard stats, start/end,
include_global_state), the requested expressions, when the counts were taken, the fingerprints,
the aliases, the data streams (backing indices, timestamp field, template) and the templates that
match the captured indices (:mod:`._templates`). ``meta`` is
``{"repository", "snapshot", "uuid"}``. ``capture_start``/``capture_end`` are the snapshot's own
start and end times (cluster clock). The snapshot data stays in the (incremental) repository.

**Restore** (:mod:`.restore`, :mod:`.health`): side by side, then cut over, journaled::

    plan_restore(client, artifact, doc=None, *, checkpoint_id, indices=None, swap="auto",
                 include_global_state=False, repository_settings=None, restore_templates=None) -> RestorePlan
    restore(client, artifact, doc=None, *, checkpoint_id, indices=None, swap="auto",
            include_global_state=False, wait_timeout=3600, log=None, repository_settings=None,
            poll_interval=1.0, restore_templates=None, journal=None) -> RestoreOutcome
    prepare_restore(...) -> Prepared;  cut_over(prepared);  roll_back(prepared);  abort(prepared)
    recover(target, entry) -> [str]          # finish or undo an interrupted restore from its journal entry
    health(client, expectations, *, tolerance=0.0, mappings=True) -> [HealthCheck]
    compatibility_problems(snapshot_flavor, snapshot_version, cluster_flavor, cluster_version) -> [str]
    collect_aliases(client, indices) -> {alias: {index: properties}}   # for the document's "aliases"

**Leftovers and lifecycle** (:mod:`._maintenance`; ``target`` a SearchTarget or a SearchClient)::

    find_leftovers(target, *, protected=(), older_than=0.0) -> [copy]
    drop_leftovers(target, *, protected=(), older_than=0.0, dry_run=True) -> [copy]
    find_orphan_snapshots(target, repository, *, referenced, older_than) -> [snapshot]
    delete_orphan_snapshots(target, repository, *, referenced, older_than, dry_run=True) -> [snapshot]
    list_rollbacks(target, *, checkpoints=(), repository=None) -> [rollback]
    drop_rollback(target, name, *, repository=None)
    prune_rollbacks(target, *, keep=1, max_age=None, protected=(), checkpoints=(), repository=None,
                    dry_run=True) -> [rollback]

**Own copies.** ``X__restoring_<id>`` (side by side), ``X__rollback_<id>_<stamp>`` (the replaced
index) and ``X__drill_...`` are never captured as application data (:func:`resolve_capture`,
``include_own_copies=True`` to take them), except a ``__restoring_`` copy an alias serves.

Each index ``X`` is restored as ``X__restoring_<short id>`` and checked against the fingerprints;
then an existing ``X`` is write-blocked, cloned to ``X__rollback_<short id>_<stamp>``, closed and
restored over from the snapshot (exact settings); an alias ``X`` is switched atomically; a data
stream is kept in a rollback snapshot, deleted and restored as a data stream. Missing templates of
the captured indices are created first. Every destructive step is journaled; failures run the
backward pass (:class:`CutOverError` says what state remains).

**Errors** (each names the cluster URL, never credentials, and ends with a HINT): unreachable ->
``ConnectionFailedError``; 401/403 -> ``AuthenticationError``; unknown repository, snapshot or
index -> ``NotFoundError``; a repository location outside ``path.repo`` -> ``EngineError`` quoting
the server; refused/partial/failed snapshots, closed or red indices -> ``CaptureError``.
"""

from airflow_checkpoint_provider.core.engines.search._capture import (
    SnapshotStart,
    capture,
    capture_begin,
    capture_finish,
    resolve_capture,
)
from airflow_checkpoint_provider.core.engines.search._client import (
    AsyncSearchClient,
    SearchClient,
    async_wait_for_snapshot,
    safe_url,
)
from airflow_checkpoint_provider.core.engines.search._logic import (
    ARTIFACT_KIND,
    ARTIFACT_NAME,
    SnapshotFailedError,
    SnapshotTimeoutError,
    SnapshotWait,
    error_for,
    generate_snapshot_name,
    mapping_sha256,
    parse_info,
    parse_snapshot,
    snapshot_done,
    snapshot_failure,
    validate_repository_name,
    validate_snapshot_name,
)
from airflow_checkpoint_provider.core.engines.search._maintenance import (
    delete_orphan_snapshots,
    drop_leftovers,
    drop_rollback,
    find_leftovers,
    find_orphan_snapshots,
    list_rollbacks,
    prune_rollbacks,
)
from airflow_checkpoint_provider.core.engines.search._names import is_own_copy
from airflow_checkpoint_provider.core.engines.search._ops import (
    SERVER_ASSIGNED_SETTINGS,
)
from airflow_checkpoint_provider.core.engines.search.health import health
from airflow_checkpoint_provider.core.engines.search.restore import (
    STEPS,
    CutOverError,
    Prepared,
    RestoreRefusedError,
    RestoreVerificationError,
    abort,
    collect_aliases,
    compatibility_problems,
    cut_over,
    plan_restore,
    prepare_restore,
    recover,
    restore,
    roll_back,
)

__all__ = [
    "SERVER_ASSIGNED_SETTINGS",
    "STEPS",
    "Prepared",
    "abort",
    "cut_over",
    "delete_orphan_snapshots",
    "drop_leftovers",
    "find_leftovers",
    "find_orphan_snapshots",
    "is_own_copy",
    "prepare_restore",
    "prune_rollbacks",
    "recover",
    "resolve_capture",
    "roll_back",
    "ARTIFACT_KIND",
    "ARTIFACT_NAME",
    "AsyncSearchClient",
    "CutOverError",
    "RestoreRefusedError",
    "RestoreVerificationError",
    "SearchClient",
    "SnapshotFailedError",
    "SnapshotStart",
    "SnapshotTimeoutError",
    "SnapshotWait",
    "async_wait_for_snapshot",
    "capture",
    "capture_begin",
    "capture_finish",
    "collect_aliases",
    "compatibility_problems",
    "drop_rollback",
    "error_for",
    "generate_snapshot_name",
    "health",
    "list_rollbacks",
    "mapping_sha256",
    "parse_info",
    "parse_snapshot",
    "plan_restore",
    "restore",
    "safe_url",
    "snapshot_done",
    "snapshot_failure",
    "validate_repository_name",
    "validate_snapshot_name",
]
