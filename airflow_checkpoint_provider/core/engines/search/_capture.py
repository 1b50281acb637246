"""Capture: fingerprint, start the snapshot, wait (here or in a trigger), record the artifact."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search._client import SearchClient
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import CaptureError
from airflow_checkpoint_provider.core.manifest import Artifact, format_ts, utcnow
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.version import __version__

log = logging.getLogger(__name__)


@dataclass
class SnapshotStart:
    """What :func:`capture_begin` did: JSON-safe (``to_dict``) so it can travel through XCom or a
    trigger event to :func:`capture_finish`, possibly on another worker."""

    repository: str
    snapshot: str
    indices: list[str]
    include_global_state: bool
    fingerprints: dict[str, dict[str, Any]]  #: {index: {"docs": n, "mapping_sha256": h}}
    counted_at: str  #: when the counts were taken (right before the snapshot started)
    engine: str = ""
    engine_version: str = ""
    cluster_name: str = ""
    cluster_uuid: str = ""
    repository_type: str = ""
    repository_settings: dict[str, Any] = field(default_factory=dict)  #: redacted
    requested: list[str] | None = None  #: the index expressions as given
    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)  #: {alias: {index: props}} at capture

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotStart:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def info(self) -> dict[str, Any]:
        return {"flavor": self.engine, "version": self.engine_version, "cluster_name": self.cluster_name,
                "cluster_uuid": self.cluster_uuid}


def capture_begin(
    client: SearchClient,
    *,
    repository: str,
    repository_settings: dict[str, Any] | None = None,
    indices: list[str] | str | None = None,
    include_global_state: bool = False,
    snapshot: str | None = None,
    key: str = "checkpoint",
) -> SnapshotStart:
    """Prepare the repository, fingerprint the indices and start the snapshot (without waiting).

    Order: ensure (register + verify) the repository; resolve the index expressions to concrete
    indices; refuse closed or red ones; ``_refresh`` them; count documents (``_count``) and hash
    mappings; start the snapshot of exactly those concrete indices. The counts are therefore taken
    right before the snapshot's point in time: on a quiet cluster they equal what the snapshot
    holds; with concurrent writers they are off by what was written in between (milliseconds).

    ``snapshot`` defaults to a name built from ``key`` (the staging key) and the UTC time.
    """
    name = L.validate_snapshot_name(snapshot) if snapshot else L.generate_snapshot_name(key)
    L.validate_repository_name(repository)
    info = client.info()
    repo = client.ensure_repository(repository, repository_settings)
    names, mappings = client.resolve_indices(indices)
    fingerprints = client.fingerprint_indices(names, mappings=mappings, refresh=True)
    from airflow_checkpoint_provider.core.engines.search.restore import collect_aliases

    aliases = collect_aliases(client, names)  # snapshots are restored without aliases: record them
    counted_at = format_ts(utcnow())
    client.start_snapshot(
        repository, name, names, include_global_state,
        metadata={"taken_by": "airflow-checkpoint-provider", "provider_version": __version__, "key": key},
    )
    requested = None if indices is None else L.split_index_expressions(indices)
    return SnapshotStart(
        repository=repository,
        snapshot=name,
        indices=names,
        include_global_state=bool(include_global_state),
        fingerprints=fingerprints,
        counted_at=counted_at,
        engine=info["flavor"],
        engine_version=info["version"],
        cluster_name=info["cluster_name"],
        cluster_uuid=info["cluster_uuid"],
        repository_type=repo.get("type", ""),
        repository_settings=L.redact_settings(repo.get("settings") or {}),
        requested=requested,
        aliases=aliases,
    )


def capture_finish(
    client: SearchClient,
    staging: Staging,
    *,
    repository: str,
    snapshot: str,
    started: SnapshotStart | dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    name: str = L.ARTIFACT_NAME,
) -> Artifact:
    """Record a finished snapshot as the artifact ``search/snapshot.json``.

    ``started`` is what :func:`capture_begin` returned (object or ``to_dict()``); it carries the
    fingerprints taken before the snapshot. Without it the fingerprints are taken now, for the
    snapshot's non-dot indices (less exact if writers are active). ``state`` is the final state
    from a wait; otherwise it is read now. The snapshot must be SUCCESS.
    """
    if isinstance(started, dict):
        started = SnapshotStart.from_dict(started)
    if started is not None and (started.repository, started.snapshot) != (repository, snapshot):
        raise CaptureError(
            f"capture_finish for {repository}:{snapshot} got the start record of "
            f"{started.repository}:{started.snapshot}",
            hint="pass the SnapshotStart returned for this snapshot",
        )
    if state is None:
        state = client.snapshot_state(repository, snapshot)
    if not L.snapshot_done(client.where, repository, state):
        raise CaptureError(
            f"search cluster {client.where}: snapshot {repository}:{snapshot} is still {state.get('state')}",
            hint="wait for it (wait_for_snapshot / the trigger) before recording it",
        )

    if started is not None:
        info = started.info
        repo_type, repo_settings = started.repository_type, started.repository_settings
        fingerprints, counted_at, requested = started.fingerprints, started.counted_at, started.requested
        include_global_state = started.include_global_state
        aliases = started.aliases
    else:
        info = client.info()
        repo = client.get_repository(repository) or {}
        repo_type, repo_settings = repo.get("type", ""), L.redact_settings(repo.get("settings") or {})
        names = [i for i in state["indices"] if not i.startswith(".")]
        fingerprints = client.fingerprint_indices(names)
        counted_at, requested = format_ts(utcnow()), None
        include_global_state = state.get("include_global_state", False)
        from airflow_checkpoint_provider.core.engines.search.restore import collect_aliases

        aliases = collect_aliases(client, names)

    missing = sorted(set(fingerprints) - set(state["indices"]))
    if missing:
        raise CaptureError(
            f"search cluster {client.where}: snapshot {repository}:{snapshot} lacks indices that were "
            f"fingerprinted: {', '.join(missing)}",
            hint="were they deleted while the snapshot started? take a new checkpoint",
        )

    fp = {"indices": fingerprints, "snapshot_uuid": state["uuid"]}
    state = {**state, "include_global_state": bool(state.get("include_global_state", include_global_state))}
    doc = L.snapshot_document(info=info, repository=repository, repository_type=repo_type,
                              repository_settings=repo_settings, state=state, fingerprints=fp,
                              requested=requested, counted_at=counted_at, aliases=aliases)
    with staging.artifact(name, store="search", kind=L.ARTIFACT_KIND, engine=info.get("flavor", ""),
                          engine_version=info.get("version", "")) as sink:
        sink.write(json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False).encode("utf-8") + b"\n")
        sink.fingerprints = fp
        sink.meta = {"repository": repository, "snapshot": snapshot, "uuid": state["uuid"]}
        if state.get("start_time"):
            sink.capture_start = state["start_time"]
        if state.get("end_time"):
            sink.capture_end = state["end_time"]
    assert sink.artifact is not None
    log.info("recorded snapshot %s:%s (%s, %d indices) as %s", repository, snapshot, state["uuid"],
             len(fingerprints), name)
    return sink.artifact


def capture(
    target: SearchTarget,
    staging: Staging,
    *,
    repository: str,
    repository_settings: dict[str, Any] | None = None,
    indices: list[str] | str | None = None,
    include_global_state: bool = False,
    snapshot: str | None = None,
    poll_interval: float = 1.0,
    timeout: float = 3600.0,
) -> list[Artifact]:
    """Snapshot the indices and record it: :func:`capture_begin`, wait, :func:`capture_finish`.

    A snapshot that ends PARTIAL or FAILED is deleted (best effort) and raises a CaptureError that
    lists the failed shards. A timeout leaves the snapshot running and says so.
    """
    with SearchClient(target) as client:
        started = capture_begin(client, repository=repository, repository_settings=repository_settings,
                                indices=indices, include_global_state=include_global_state, snapshot=snapshot,
                                key=staging.key)
        try:
            state = client.wait_for_snapshot(repository, started.snapshot, poll_interval=poll_interval,
                                             timeout=timeout)
        except L.SnapshotFailedError as exc:
            try:
                deleted = client.delete_snapshot(repository, started.snapshot, missing_ok=True)
            except Exception as del_exc:  # noqa: BLE001 - keep the original failure as the error
                log.warning("could not delete failed snapshot %s:%s: %s", repository, started.snapshot, del_exc)
                raise exc from None
            raise L.snapshot_failure(client.where, repository, exc.state, deleted=deleted) from None
        return [capture_finish(client, staging, repository=repository, snapshot=started.snapshot,
                               started=started, state=state)]
