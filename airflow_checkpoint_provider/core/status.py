"""The health of a store at a glance: LKG age, the last verify and drill, storage used, recent failures.

Read from what the store already keeps: the LKG pointer, the lifecycle records beside each
archive (core/states.py) and the restore audit trail. Nothing here talks to a server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow_checkpoint_provider.core.manifest import parse_ts, utcnow
from airflow_checkpoint_provider.core.states import StateRecord
from airflow_checkpoint_provider.core.store import Store

#: audit statuses that are failures
FAILED_AUDIT = ("failed", "refused")


def _age(ts: str | None, now: datetime) -> float | None:
    return None if not ts else max(0.0, (now - parse_ts(ts)).total_seconds())


def _record(rec: StateRecord | None, now: datetime) -> dict[str, Any] | None:
    if rec is None:
        return None
    return {
        "checkpoint_id": rec.checkpoint_id,
        "kind": rec.kind,
        "level": rec.level,
        "outcome": rec.outcome,
        "recorded_at": rec.recorded_at,
        "age_seconds": _age(rec.recorded_at, now),
        "problem": (rec.problems[0].get("detail") or rec.problems[0].get("kind")) if rec.problems else None,
    }


def status(store: Store, *, failures: int = 5, now: datetime | None = None) -> dict[str, Any]:
    """One JSON-safe summary of ``store`` (see the module docstring); ``failures``: how many to list."""
    now = now or utcnow()
    infos, damaged = store.scan()
    records = [r for i in infos for r in store.state_records(i.checkpoint_id)]
    last = {
        kind: max((r for r in records if r.kind == kind), key=lambda r: r.recorded_at, default=None)
        for kind in ("verify", "drill")
    }
    states = [store.state_of(i) for i in infos]
    archive_bytes = sum(i.size for i in infos)
    outside_bytes = sum(s.snapshot_bytes or 0 for s in states)
    pointer = store.lkg()
    lkg = None
    if pointer is not None:
        created = next((i.created_at for i in infos if i.checkpoint_id == pointer.checkpoint_id), None)
        lkg = {
            "checkpoint_id": pointer.checkpoint_id,
            "set_at": pointer.set_at,
            "created_at": created,
            "age_seconds": _age(created or pointer.set_at, now),
            "problem": store.lkg_problem(pointer),
        }
    failed: list[dict[str, Any]] = [{**(_record(r, now) or {}), "what": r.kind} for r in records if r.outcome != "ok"]
    failed += [
        {
            "what": str(a.get("action", "restore")),
            "checkpoint_id": a.get("checkpoint_id") or a.get("requested_checkpoint"),
            "outcome": a.get("status"),
            "recorded_at": a.get("recorded_at", ""),
            "age_seconds": _age(a.get("recorded_at"), now) if a.get("recorded_at") else None,
            "problem": str(a.get("error") or "").split("\n")[0] or None,
        }
        for a in store.audit_log()
        if a.get("status") in FAILED_AUDIT
    ]
    failed += [
        {
            "what": "listing",
            "checkpoint_id": d.checkpoint_id,
            "outcome": "damaged",
            "problem": d.problem,
            "recorded_at": "",
            "age_seconds": None,
        }
        for d in damaged
    ]
    failed.sort(key=lambda f: f.get("recorded_at") or "", reverse=True)
    return {
        "store": store.root,
        "checkpoints": len(infos),
        "damaged": len(damaged),
        "lkg": lkg,
        "last_verify": _record(last["verify"], now),
        "last_drill": _record(last["drill"], now),
        "storage": {
            "archive_bytes": archive_bytes,
            "outside_bytes": outside_bytes,
            "total_bytes": archive_bytes + outside_bytes,
            "states": {
                label: sum(1 for s in states if s.label == label) for label in sorted({s.label for s in states})
            },
        },
        "last_failures": failed[:failures],
    }
