"""Restore drills: prove a checkpoint can be restored, without touching production.

A drill runs the restore recipe (:func:`.recovery.restore`) with ``drill=True``: it resolves and
verifies the archive, plans every component, takes the lease (and the checkpoint's use key, so
retention keeps it), loads every component side by side (``<db>__drill_<short id>``, a spare Redis
db, ``<index>__drill_<short id>``, on the given servers: the production ones or scratch connections) and
verifies each copy against the manifest's fingerprints, exactly as a restore does before it
would cut over. Then it drops the copies. No safety checkpoint, no cut-over, no session
terminated, no key of a served db changed.

The outcome is a ``drill`` state record (:mod:`.states`) with per-store durations and the sizes:
``ok`` makes the checkpoint ``drilled``, ``failed`` makes it ``drill_failed`` (never LKG again
until a later drill passes). A drill never moves the LKG; a killed one leaves a journal of kind
``drill``, whose replay only ever drops its copies (even once they verified: a drill never cuts over).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from airflow_checkpoint_provider.core.errors import CheckpointError, StoreError
from airflow_checkpoint_provider.core.lease import LeaseHeldError, StaleLeaseError
from airflow_checkpoint_provider.core.manifest import Manifest
from airflow_checkpoint_provider.core.recovery import Builder, RestoreRequest, restore
from airflow_checkpoint_provider.core.states import StateRecord
from airflow_checkpoint_provider.core.store import Store

log = logging.getLogger(__name__)


class _Timed:
    """A component restore whose ``prepare`` (load + verify) is timed; everything else passes through."""

    def __init__(self, part: Any, timings: dict[str, int]) -> None:
        self._part, self._timings = part, timings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._part, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_part", "_timings"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._part, name, value)

    def prepare(self) -> None:
        started = time.monotonic()
        try:
            self._part.prepare()
        finally:
            self._timings[self._part.component] = int((time.monotonic() - started) * 1000)


def drill(
    store: Store,
    checkpoint_id: str,
    build: Builder,
    *,
    components: tuple[str, ...],
    by: dict[str, Any] | None = None,
    **request: Any,
) -> StateRecord:
    """Drill ``checkpoint_id`` (or ``last-known-good``) and record the outcome (see the module docstring).

    ``request``: further :class:`RestoreRequest` fields (conn_ids, provenance, is_alive, lease_ttl).
    A restore or drill already holding a target raises (that says nothing about the checkpoint)."""
    cid = store.resolve(checkpoint_id)
    info = store.get(cid)
    timings: dict[str, int] = {}

    def timed(store_: Store, manifest: Manifest, req: RestoreRequest) -> list[Any]:
        return [_Timed(part, timings) for part in build(store_, manifest, req)]

    started = time.monotonic()
    problems: list[dict[str, Any]] = []
    try:
        restore(
            store,
            RestoreRequest(checkpoint_id=cid, components=components, safety_checkpoint=False, drill=True, **request),
            timed,
        )
    except (LeaseHeldError, StaleLeaseError):
        raise
    except StoreError as exc:
        if not store.exists(cid):
            raise
        problems.append({"kind": "drill", "subject": cid, "detail": exc.message, "hint": exc.hint or ""})
    except CheckpointError as exc:
        problems.append({"kind": "drill", "subject": cid, "detail": exc.message, "hint": exc.hint or ""})
    duration = int((time.monotonic() - started) * 1000)
    by_store: dict[str, Any] = {}
    for art in info.manifest.artifacts:
        entry = by_store.setdefault(art.store, {"artifacts": 0, "stored_bytes": 0, "raw_bytes": 0})
        entry["artifacts"] += 1
        entry["stored_bytes"] += art.size
        entry["raw_bytes"] += art.raw_size or art.size
    for name, ms in timings.items():
        by_store.setdefault(name, {})["load_and_verify_ms"] = ms
    evidence = {
        "components": list(components),
        "stores": by_store,
        "fingerprints": "each copy compared with the manifest's fingerprints before it was dropped"
        if not problems
        else "the drill stopped; see problems",
    }
    record = store.record_state(
        info,
        kind="drill",
        outcome="failed" if problems else "ok",
        duration_ms=duration,
        problems=problems,
        evidence=evidence,
        by=by,
    )
    if problems:
        log.error("Drill of %s failed: %s", cid, problems[0]["detail"].splitlines()[0])
    else:
        log.info(
            "Drill of %s passed in %d ms (%s)", cid, duration, ", ".join(f"{k} {v} ms" for k, v in timings.items())
        )
    return record
