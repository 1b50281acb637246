"""Capture: fingerprint, start the snapshot, wait (here or in a trigger), record the artifact."""

from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search import _names as N
from airflow_checkpoint_provider.core.engines.search import _ops as O
from airflow_checkpoint_provider.core.engines.search._client import SearchClient, _Req
from airflow_checkpoint_provider.core.engines.search._templates import collect_templates
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import CaptureError, NotFoundError
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
    data_streams: dict[str, dict[str, Any]] = field(default_factory=dict)  #: {name: {"backing_indices", ...}}
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  #: see ._templates

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotStart:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def info(self) -> dict[str, Any]:
        return {
            "flavor": self.engine,
            "version": self.engine_version,
            "cluster_name": self.cluster_name,
            "cluster_uuid": self.cluster_uuid,
        }


def _own_copy(name: str, served: set[str]) -> bool:
    """A copy the provider made, not application data (a ``__restoring_`` copy an alias serves is data)."""
    if not N.is_own_copy(name):
        return False
    return not (name in served and N.ROLLBACK_MARK not in name and N.DRILL_MARK not in name)


def resolve_capture(
    client: SearchClient, indices: list[str] | str | None, *, include_own_copies: bool = False
) -> tuple[list[str], dict[str, Any], list[str]]:
    """What a capture takes: ``(concrete indices, their mappings, data streams)``.

    Names, aliases and patterns resolve as :meth:`SearchClient.resolve_indices` documents, and in
    addition data streams are taken as data streams: a pattern or name matching a data stream (or
    naming one of its backing indices) captures the stream, whose ``.ds-`` backing indices are
    then not listed as indices of their own. The provider's own copies (``__restoring_``,
    ``__rollback_``, ``__drill_`` indices) are left out, through patterns and "every index" alike,
    unless ``include_own_copies``; naming one explicitly is refused with a hint.
    """
    expressions = L.split_index_expressions(indices)
    include = [e for e in expressions if not e.startswith("-")] or ["*"]
    exclude = [e[1:] for e in expressions if e.startswith("-") and len(e) > 1]
    all_streams = O.data_streams(client)
    backing_of = {b: d for d, bs in all_streams.items() for b in bs}
    view_aliases = (
        O.send(client, _Req("GET", "_alias", "list the aliases (GET /_alias)", params={"expand_wildcards": "all"}))
        or {}
    )
    served = {str(i) for i, e in view_aliases.items() if (e or {}).get("aliases")}
    mappings: dict[str, Any] = {}
    streams: set[str] = set()
    for expr in include:
        if L.is_pattern(expr):
            matched = {
                d
                for d in all_streams
                if fnmatch.fnmatchcase(d, expr) and (expr.startswith(".") or not d.startswith("."))
            }
        else:
            matched = {expr} if expr in all_streams else ({backing_of[expr]} if expr in backing_of else set())
            if not include_own_copies and _own_copy(expr, served):
                raise CaptureError(
                    f"search cluster {client.where}: {expr} is a copy made by a restore or drill, not application "
                    "data: it is not captured",
                    hint="leave it out of the indices, or pass include_own_copies=True to capture it anyway",
                )
        streams |= matched
        try:
            found = client.get_mappings(expr)
        except NotFoundError:
            if not matched:
                raise
            found = {}
        for name in L.select_resolved(expr, found):
            if name not in backing_of:
                mappings[name] = found[name]
    if not include_own_copies:
        mappings = {n: m for n, m in mappings.items() if not _own_copy(n, served)}
        streams = {d for d in streams if not N.is_own_copy(d)}
    names = L.apply_exclusions(mappings, exclude)
    stream_names = L.apply_exclusions(streams, exclude)
    if not names and not stream_names:
        raise NotFoundError(
            f"search cluster {client.where}: no index or data stream matches {', '.join(expressions)}",
            hint="check the index names or patterns (GET /_cat/indices?v); dot-indices are only included "
            "when named explicitly or by a pattern starting with '.'; the provider's own copies "
            "(__restoring_, __rollback_, __drill_) only with include_own_copies",
        )
    return names, {n: mappings[n] for n in names}, stream_names


def capture_begin(
    client: SearchClient,
    *,
    repository: str,
    repository_settings: dict[str, Any] | None = None,
    indices: list[str] | str | None = None,
    include_global_state: bool = False,
    snapshot: str | None = None,
    key: str = "checkpoint",
    include_own_copies: bool = False,
) -> SnapshotStart:
    """Prepare the repository, fingerprint the indices and start the snapshot (without waiting).

    Order: ensure (register + verify) the repository; resolve the index expressions to concrete
    indices and data streams (:func:`resolve_capture`: the provider's own copies are left out
    unless ``include_own_copies``); refuse closed or red ones; ``_refresh`` them; count documents
    (``_count``) and hash mappings (of every backing index too); record the aliases, the data
    streams and the templates that match; start the snapshot of exactly those indices and data
    streams. The counts are therefore taken
    right before the snapshot's point in time: on a quiet cluster they equal what the snapshot
    holds; with concurrent writers they are off by what was written in between (milliseconds).

    ``snapshot`` defaults to a name built from ``key`` (the staging key) and the UTC time.
    """
    name = L.validate_snapshot_name(snapshot) if snapshot else L.generate_snapshot_name(key)
    L.validate_repository_name(repository)
    info = client.info()
    repo = client.ensure_repository(repository, repository_settings)
    names, mappings, streams = resolve_capture(client, indices, include_own_copies=include_own_copies)
    stream_info = O.data_stream_info(client, streams) if streams else {}
    backing = [b for d in streams for b in stream_info[d]["backing_indices"]]
    fingerprints = client.fingerprint_indices(names + backing, mappings=mappings, refresh=True)
    aliases = O.collect_aliases(client, names)  # snapshots are restored without aliases: record them
    templates = collect_templates(client, names + streams)
    counted_at = format_ts(utcnow())
    client.start_snapshot(
        repository,
        name,
        names + streams,
        include_global_state,
        metadata={"taken_by": N.TAKEN_BY, "provider_version": __version__, "key": key},
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
        data_streams=stream_info,
        templates=templates,
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
        aliases, streams, templates = started.aliases, started.data_streams, started.templates
    else:
        info = client.info()
        repo = client.get_repository(repository) or {}
        repo_type, repo_settings = repo.get("type", ""), L.redact_settings(repo.get("settings") or {})
        streams = O.data_stream_info(client, state["data_streams"]) if state.get("data_streams") else {}
        backing = {b for d in streams.values() for b in d["backing_indices"]}
        names = [i for i in state["indices"] if not i.startswith(".") or i in backing]
        fingerprints = client.fingerprint_indices(names)
        counted_at, requested = format_ts(utcnow()), None
        include_global_state = state.get("include_global_state", False)
        aliases = O.collect_aliases(client, names)
        templates = collect_templates(client, [n for n in names if n not in backing] + sorted(streams))

    missing = sorted(set(fingerprints) - set(state["indices"]))
    if missing:
        raise CaptureError(
            f"search cluster {client.where}: snapshot {repository}:{snapshot} lacks indices that were "
            f"fingerprinted: {', '.join(missing)}",
            hint="were they deleted while the snapshot started? take a new checkpoint",
        )

    fp: dict[str, Any] = {"indices": fingerprints, "snapshot_uuid": state["uuid"]}
    if streams:
        fp["data_streams"] = {d: {"backing_indices": list(v["backing_indices"])} for d, v in sorted(streams.items())}
    state = {**state, "include_global_state": bool(state.get("include_global_state", include_global_state))}
    doc = L.snapshot_document(
        info=info,
        repository=repository,
        repository_type=repo_type,
        repository_settings=repo_settings,
        state=state,
        fingerprints=fp,
        requested=requested,
        counted_at=counted_at,
        aliases=aliases,
        data_streams=streams,
        templates=templates,
    )
    with staging.artifact(
        name,
        store="search",
        kind=L.ARTIFACT_KIND,
        engine=info.get("flavor", ""),
        engine_version=info.get("version", ""),
    ) as sink:
        sink.write(json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False).encode("utf-8") + b"\n")
        sink.fingerprints = fp
        sink.meta = {"repository": repository, "snapshot": snapshot, "uuid": state["uuid"]}
        if state.get("start_time"):
            sink.capture_start = state["start_time"]
        if state.get("end_time"):
            sink.capture_end = state["end_time"]
    assert sink.artifact is not None
    log.info(
        "recorded snapshot %s:%s (%s, %d indices) as %s", repository, snapshot, state["uuid"], len(fingerprints), name
    )
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
    include_own_copies: bool = False,
) -> list[Artifact]:
    """Snapshot the indices and record it: :func:`capture_begin`, wait, :func:`capture_finish`.

    A snapshot that ends PARTIAL or FAILED is deleted (best effort) and raises a CaptureError that
    lists the failed shards. A timeout leaves the snapshot running and says so.
    """
    with SearchClient(target) as client:
        started = capture_begin(
            client,
            repository=repository,
            repository_settings=repository_settings,
            indices=indices,
            include_global_state=include_global_state,
            snapshot=snapshot,
            key=staging.key,
            include_own_copies=include_own_copies,
        )
        try:
            state = client.wait_for_snapshot(repository, started.snapshot, poll_interval=poll_interval, timeout=timeout)
        except L.SnapshotFailedError as exc:
            try:
                deleted = client.delete_snapshot(repository, started.snapshot, missing_ok=True)
            except Exception as del_exc:
                log.warning("could not delete failed snapshot %s:%s: %s", repository, started.snapshot, del_exc)
                raise exc from None
            raise L.snapshot_failure(client.where, repository, exc.state, deleted=deleted) from None
        return [
            capture_finish(
                client, staging, repository=repository, snapshot=started.snapshot, started=started, state=state
            )
        ]
