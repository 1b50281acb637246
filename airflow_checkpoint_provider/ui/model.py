"""What the Checkpoints page and API show, read from the store (no Airflow import).

Every function reads sidecars, the LKG pointer and history and the audit records only: never an
archive, so a listing of thousands of checkpoints stays cheap.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.envelope import shown_fingerprints
from airflow_checkpoint_provider.core.store import CheckpointInfo, Store

#: checkpoint ``type`` filters of the API, by the tags the ready-made DAGs give
TYPES = {
    "database": None,
    "workflow": None,
    "deployment": "pre-deploy",
    "migration": "pre-migration",
    "scheduled": "scheduled",
}


@dataclass(frozen=True)
class Listing:
    """Everything the list view needs, read once."""

    rows: list[dict[str, Any]]
    damaged: list[dict[str, Any]]
    lkg: dict[str, Any] | None
    lkg_history: list[dict[str, Any]]
    restores: list[dict[str, Any]]
    total: int = 0  #: checkpoints in the store (of the type asked), ``rows`` being the newest of them
    days: list[tuple[str, int, int]] = field(default_factory=list)  #: storage_by_day() of all ``total``


def row(store: Store, info: CheckpointInfo, lkg_id: str | None) -> dict[str, Any]:
    """One checkpoint as the list shows it, with its lifecycle state (sealed, verified, drilled, corrupt)."""
    stores = info.manifest.stores()
    state = store.state_of(info)
    return {
        "checkpoint_id": info.checkpoint_id,
        "created_at": info.created_at,
        "size": info.size,
        "search_snapshot_bytes": state.snapshot_bytes,  #: known once a deep verify or a drill measured it
        "state": state.to_dict(),
        "stores": sorted(stores),
        "engines": {name: f"{s['engine']} {s['engine_version']}".strip() for name, s in sorted(stores.items())},
        "tags": list(info.tags),
        "pinned": info.pinned,
        "skew_ms": info.manifest.consistency()["skew_ms"],
        "lkg": info.checkpoint_id == lkg_id,
    }


def listing(store: Store, *, type_: str | None = None, limit: int | None = None) -> Listing:
    """The checkpoints newest first (optionally those of one ``type``), with the LKG and restores."""
    if type_ is not None and type_ not in TYPES:
        raise ValueError(f"unknown checkpoint type {type_!r}; use one of {', '.join(TYPES)}")
    if type_ == "workflow":
        raise ValueError("workflow checkpoints are listed by workflows(), not as data checkpoints")
    tag = TYPES.get(type_) if type_ else None
    infos, damaged = store.scan(tag=tag)
    pointer = store.lkg()
    lkg_id = pointer.checkpoint_id if pointer else None
    ordered = sorted(infos, key=lambda i: i.created_at, reverse=True)
    every = [
        {"created_at": i.created_at, "size": i.size, "search_snapshot_bytes": store.state_of(i).snapshot_bytes}
        for i in ordered
    ]
    return Listing(
        rows=[row(store, i, lkg_id) for i in (ordered[:limit] if limit else ordered)],
        total=len(ordered),
        days=storage_by_day(every),
        damaged=[d.to_dict() for d in damaged],
        lkg=pointer.to_dict() if pointer else None,
        lkg_history=[p.to_dict() for p in store.lkg_history()],
        restores=store.audit_log(),
    )


def detail(store: Store, checkpoint_id: str) -> dict[str, Any]:
    """One checkpoint: its manifest's fields, fingerprints per store, and the restores that used it.

    Raises the store's :class:`~airflow_checkpoint_provider.core.errors.CheckpointNotFoundError`
    (or a format error) for an unknown or damaged id."""
    info = store.get(checkpoint_id)
    pointer = store.lkg()
    body = info.manifest.body()
    fingerprints: dict[str, dict[str, Any]] = {}
    for art in info.manifest.artifacts:
        fingerprints.setdefault(art.store, {})[art.name] = shown_fingerprints(info.manifest, art)
    return {
        **row(store, info, pointer.checkpoint_id if pointer else None),
        "records": [r.to_dict() for r in store.state_records(checkpoint_id)],
        "config_hash": info.manifest.config_hash,
        "provenance": info.manifest.provenance,
        "consistency": info.manifest.consistency(),
        "artifacts": [
            {
                "name": a.name,
                "store": a.store,
                "kind": a.kind,
                "size": a.size,
                "raw_size": a.raw_size,
                "sha256": a.sha256,
                "engine": a.engine,
                "engine_version": a.engine_version,
                "capture_start": a.capture_start,
                "capture_end": a.capture_end,
            }
            for a in info.manifest.artifacts
        ],
        "fingerprints": fingerprints,
        "restores": [
            r for r in store.audit_log() if checkpoint_id in (r.get("checkpoint_id"), r.get("requested_checkpoint"))
        ],
        "format_version": body.get("format_version"),
    }


def storage_by_day(rows: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """``(day, bytes, count)`` of the checkpoints created on each day, oldest first."""
    days: OrderedDict[str, list[int]] = OrderedDict()
    for r in sorted(rows, key=lambda r: r["created_at"]):
        entry = days.setdefault(r["created_at"][:10], [0, 0])
        entry[0] += int(r["size"]) + int(r["search_snapshot_bytes"] or 0)
        entry[1] += 1
    return [(day, b, n) for day, (b, n) in days.items()]


def workflows(store: Store) -> list[dict[str, Any]]:
    """The workflow checkpoints of the store's file workflow store (``workflows/``), newest first."""
    from airflow_checkpoint_provider.core.workflow import FileWorkflowStore

    infos = FileWorkflowStore(store).workflows()
    return sorted((i.to_dict() for i in infos), key=lambda w: w.get("updated_at", ""), reverse=True)
