"""The restore form's checkpoint choices, computed cheaply while the DAG file is parsed.

Only the small sidecar manifests (``checkpoints/<id>.manifest.json``) of at most
``limit`` checkpoints and the LKG pointer are read, never an archive. Nothing here may
fail a parse: an unreadable store, or an unreadable sidecar, just offers fewer choices.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

LKG = "last-known-good"
SIDECAR = ".manifest.json"
#: a sidecar larger than this is not read at parse time
MAX_SIDECAR_BYTES = 1 << 20


def _label(cid: str, created_at: str, size: int, tags: list[str], lkg: bool) -> str:
    from airflow_checkpoint_provider.cli import _human_size

    parts = [cid, created_at[:16].replace("T", " ") + " UTC", _human_size(size)]
    if tags:
        parts.append("tags: " + ", ".join(tags))
    if lkg:
        parts.append("LKG")
    return " · ".join(parts)


def checkpoint_choices(root: str | None = None, limit: int = 25) -> tuple[list[str], dict[str, str]]:
    """``(ids, labels)``: ``last-known-good`` first, then the newest checkpoints, each labelled with
    its id, creation time, size, tags and an LKG mark."""
    ids, labels = [LKG], {LKG: "last-known-good (none set yet)"}
    try:
        from airflow_checkpoint_provider.core.manifest import Manifest
        from airflow_checkpoint_provider.operators.base import open_store

        store = open_store(root, create=False)  # local or s3:// (its connection's options)
        names = sorted(
            (
                n[: -len(SIDECAR)]
                for n in store.fs.listdir("checkpoints")
                if n.endswith(SIDECAR) and not n.startswith(".")
            ),
            reverse=True,
        )
        try:
            pointer = store.lkg()
        except Exception:
            pointer = None
        lkg_id = pointer.checkpoint_id if pointer else None
    except Exception as exc:
        log.debug("no checkpoint choices: %s", exc)
        return ids, labels
    rows = []
    for cid in names[:limit]:
        rel = f"checkpoints/{cid}{SIDECAR}"
        try:
            if store.fs.size(rel) > MAX_SIDECAR_BYTES:
                continue
            manifest = Manifest.from_bytes(store.fs.read_bytes(rel), source=rel)
            if manifest.checkpoint_id != cid:
                continue
            rows.append((manifest.created_at, cid, manifest.total_size, list(manifest.tags)))
        except Exception as exc:
            log.debug("checkpoint %s left out of the choices: %s", cid, exc)
    for created_at, cid, size, tags in sorted(rows, reverse=True):
        ids.append(cid)
        labels[cid] = _label(cid, created_at, size, tags, cid == lkg_id)
        if cid == lkg_id:
            labels[LKG] = f"last-known-good (now {labels[cid].removesuffix(' · LKG')})"
    if lkg_id and lkg_id not in labels:
        labels[LKG] = f"last-known-good (now {lkg_id})"
    return ids, labels
