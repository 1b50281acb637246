"""What a restore needs from the checkpoint's search artifact and its JSON document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.errors import EngineError
from airflow_checkpoint_provider.core.manifest import Artifact


@dataclass
class SnapshotSource:
    """What a restore needs from the artifact and its document."""

    repository: str
    snapshot: str
    uuid: str
    engine: str
    engine_version: str
    indices: list[str]  #: indices in the snapshot (as recorded)
    expected: dict[str, dict[str, Any]]  #: {index: {"docs": n, "mapping_sha256": h}}
    aliases: dict[str, dict[str, dict[str, Any]]] | None  #: {alias: {index: properties}} if recorded
    include_global_state: bool = False
    #: data streams captured as such: {name: {"backing_indices": [...], "timestamp_field": ..., "template": ...}}
    data_streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: data streams the snapshot holds that the document does not describe (older captures)
    undescribed_streams: list[str] = field(default_factory=list)
    #: {"index_templates": {name: body}, "component_templates": {...}, "legacy_templates": {...}}
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def stream_of(self, index: str) -> str | None:
        """The data stream a backing index belongs to, if any."""
        return next((d for d, info in self.data_streams.items() if index in info.get("backing_indices", ())), None)


def snapshot_source(artifact: Artifact | None, doc: dict[str, Any] | None) -> SnapshotSource:
    """Combine the artifact (manifest entry) and its JSON document; refuse what does not fit."""
    if artifact is None and doc is None:
        raise EngineError(
            "restore needs the checkpoint's search artifact or its document",
            hint="pass the Artifact of search/snapshot.json and json.loads of its bytes",
        )
    doc = doc or {}
    if doc:
        if doc.get("format") not in (None, L.DOCUMENT_FORMAT):
            raise EngineError(
                f"the search artifact's document has format {doc.get('format')!r}, expected {L.DOCUMENT_FORMAT!r}",
                hint="pass the JSON of the checkpoint's search/snapshot.json artifact",
            )
        version = doc.get("format_version", L.DOCUMENT_FORMAT_VERSION)
        if not isinstance(version, int) or version > L.DOCUMENT_FORMAT_VERSION:
            raise EngineError(
                f"the search artifact's document has format version {version!r}; this reader "
                f"knows version {L.DOCUMENT_FORMAT_VERSION}",
                hint="upgrade airflow-checkpoint-provider",
            )
    meta = dict(artifact.meta) if artifact is not None else {}
    snap_doc = doc.get("snapshot") or {}
    repo_doc = doc.get("repository") or {}
    repository = str(meta.get("repository") or repo_doc.get("name") or "")
    snapshot = str(meta.get("snapshot") or snap_doc.get("name") or "")
    uuid = str(meta.get("uuid") or snap_doc.get("uuid") or "")
    for key, mine, theirs in (
        ("repository", repository, repo_doc.get("name")),
        ("snapshot", snapshot, snap_doc.get("name")),
        ("uuid", uuid, snap_doc.get("uuid")),
    ):
        if theirs and mine and str(theirs) != mine:
            raise EngineError(
                f"the search artifact names {key} {mine!r} but its document says {theirs!r}",
                hint="pass the document of this artifact, not of another checkpoint",
            )
    if not repository or not snapshot:
        raise EngineError(
            "the search artifact does not name its repository and snapshot",
            hint="is this the search/snapshot.json artifact of a checkpoint?",
        )
    fps = (
        (artifact.fingerprints if artifact is not None and artifact.fingerprints else None)
        or doc.get("fingerprints")
        or {}
    )
    expected = {str(k): dict(v or {}) for k, v in (fps.get("indices") or {}).items()}
    engine = (artifact.engine if artifact is not None and artifact.engine else "") or str(doc.get("engine") or "")
    engine_version = (artifact.engine_version if artifact is not None and artifact.engine_version else "") or str(
        doc.get("engine_version") or ""
    )
    indices = [str(i) for i in (snap_doc.get("indices") or sorted(expected))]
    aliases = doc.get("aliases")
    if aliases is not None and not isinstance(aliases, dict):
        raise EngineError(
            "the search artifact's document has a malformed 'aliases' entry",
            hint="expected {alias: {index: properties}}",
        )
    streams = doc.get("data_streams") or {}
    templates = doc.get("templates") or {}
    if (
        not isinstance(streams, dict)
        or not all(isinstance(v, dict) for v in streams.values())
        or not isinstance(templates, dict)
        or not all(isinstance(v, dict) for v in templates.values())
    ):
        raise EngineError(
            "the search artifact's document has a malformed 'data_streams' or 'templates' entry",
            hint="expected {name: {...}} objects, as the capture writes them",
        )
    described = {
        str(k): {**v, "backing_indices": [str(i) for i in v.get("backing_indices") or []]} for k, v in streams.items()
    }
    return SnapshotSource(
        repository=repository,
        snapshot=snapshot,
        uuid=uuid,
        engine=engine,
        engine_version=engine_version,
        indices=indices,
        expected=expected,
        aliases={str(a): {str(i): dict(p or {}) for i, p in (h or {}).items()} for a, h in aliases.items()}
        if isinstance(aliases, dict)
        else None,
        include_global_state=bool(snap_doc.get("include_global_state", False)),
        data_streams=described,
        undescribed_streams=sorted(str(d) for d in snap_doc.get("data_streams") or [] if str(d) not in described),
        templates={str(k): dict(v) for k, v in templates.items()},
    )
