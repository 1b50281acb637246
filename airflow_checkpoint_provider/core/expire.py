"""Expire checkpoints: read the store for :mod:`.retention`, and delete a checkpoint as one unit.

Deleting a checkpoint, in order (pgBackRest's expire, restic's forget + prune):

1. under the store lock: refuse the LKG, a pinned checkpoint (unless forced) and one in use;
   write ``tombstones/<id>.json`` (what is left to delete: the archive, the records, and each
   engine's data outside the archive, e.g. the search snapshot);
2. remove the store copy of the manifest: from here on no listing shows the checkpoint;
3. remove the archive, then the state records;
4. each engine's ``expire`` of its data outside the archive (the search snapshot);
5. remove the tombstone.

A crash anywhere leaves a tombstone that the next run finishes (:func:`finish_tombstones`); a
search cluster that does not answer leaves the tombstone, reported, for a later run. A crash
between steps 1 and 2 leaves a whole, listed checkpoint with a tombstone: if it became the LKG
or got used meanwhile, the next run calls the deletion off instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_checkpoint_provider.core.crashpoints import crashpoint
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.envelope import checkpoint_keys_rel
from airflow_checkpoint_provider.core.errors import CheckpointError, EngineError, FormatError, StoreError
from airflow_checkpoint_provider.core.fs import TMP_MARK
from airflow_checkpoint_provider.core.journal import Journal, open_journals
from airflow_checkpoint_provider.core.lease import read_leases
from airflow_checkpoint_provider.core.manifest import Artifact, format_ts, parse_ts, utcnow
from airflow_checkpoint_provider.core.retention import Candidate, Plan, Policy, plan
from airflow_checkpoint_provider.core.safejson import load_json
from airflow_checkpoint_provider.core.states import meets
from airflow_checkpoint_provider.core.store import Store

log = logging.getLogger(__name__)

TOMBSTONE_DIR = "tombstones"
TOMBSTONE_FORMAT = "airflow-checkpoint-tombstone"
USE_PREFIX = "checkpoint:"


def use_key(checkpoint_id: str, holder: str) -> str:
    """The lease key a restore or drill takes on the checkpoint it reads (one per holder: never exclusive)."""
    return f"{USE_PREFIX}{checkpoint_id}:{holder}"


def in_use(store: Store) -> dict[str, str]:
    """checkpoint id -> who uses it: live ``checkpoint:`` leases, and every open restore journal."""
    out: dict[str, str] = {}
    for rec in read_leases(store.fs):
        if rec.key.startswith(USE_PREFIX) and rec.live():
            out[rec.key[len(USE_PREFIX) :].rsplit(":", 1)[0]] = f"restore {rec.holder}"
    for restore_id in open_journals(store.fs):
        try:
            out.setdefault(Journal.load(store.fs, restore_id).checkpoint_id, f"restore {restore_id} (journal open)")
        except FormatError as exc:
            log.warning("Cannot read journal %s: %s", restore_id, exc.message)
    return out


def candidates(store: Store, *, requires: str) -> list[Candidate]:
    """Every listed checkpoint with its full size and why it is protected (see :mod:`.retention`)."""
    infos = store.list(cached=False)
    lkg = store.lkg()
    used = in_use(store)
    states = {i.checkpoint_id: store.state_of(i) for i in infos}
    newest_required = next((i.checkpoint_id for i in infos if meets(states[i.checkpoint_id], requires)), None)
    out = []
    for info in infos:
        why = []
        if lkg is not None and lkg.checkpoint_id == info.checkpoint_id:
            why.append("last-known-good")
        if info.pinned:
            why.append("pinned")
        if info.checkpoint_id == newest_required:
            why.append(f"newest checkpoint in the required state ({requires})")
        if info.checkpoint_id in used:
            why.append(f"in use by {used[info.checkpoint_id]}")
        size = info.size + (states[info.checkpoint_id].snapshot_bytes or 0)
        out.append(Candidate(info.checkpoint_id, parse_ts(info.created_at), info.tags, size, tuple(why)))
    return out


def plan_store(store: Store, policy: Policy, *, requires: str, now: datetime | None = None) -> Plan:
    return plan(candidates(store, requires=requires), policy, now=now or utcnow())


@dataclass
class Outcome:
    """What deleting one checkpoint did, and what is left for a later run."""

    checkpoint_id: str
    done: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    refused: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "done": self.done,
            "pending": self.pending,
            "refused": self.refused,
        }


def _tombstone_rel(cid: str) -> str:
    return f"{TOMBSTONE_DIR}/{cid}.json"


def delete(
    store: Store, checkpoint_id: str, *, targets: dict[str, Any] | None = None, force: bool = False, reason: str = ""
) -> Outcome:
    """Delete one checkpoint as a unit (see the module docstring). ``targets``: engine -> target for the
    data kept outside the archive; without one that part stays pending in the tombstone."""
    with store.lock():
        info = store.get(checkpoint_id)
        cid = info.checkpoint_id
        lkg = store.lkg()
        if lkg is not None and lkg.checkpoint_id == cid:
            raise StoreError(
                f"checkpoint {cid} is the last-known-good",
                hint="mark another checkpoint as LKG first (`airflow-checkpoint lkg set <id>`)",
            )
        if info.pinned and not force:
            raise StoreError(f"checkpoint {cid} is pinned", hint="pass force=True (--force) to delete it anyway")
        user = in_use(store).get(cid)
        if user:
            raise StoreError(f"checkpoint {cid} is in use by {user}", hint="retry once that restore has finished")
        external = {
            name: [a.to_dict() for a in arts]
            for name, engine in registry.engines().items()
            if engine.expire is not None and (arts := engine.artifacts_of(info.manifest.artifacts))
        }
        body = {
            "format": TOMBSTONE_FORMAT,
            "format_version": 1,
            "checkpoint_id": cid,
            "manifest_sha256": info.manifest.manifest_sha256,
            "created_at": info.created_at,
            "deleted_at": format_ts(utcnow()),
            "reason": reason,
            "external": external,
        }
        store.fs.makedirs(TOMBSTONE_DIR)
        store.fs.write_bytes(_tombstone_rel(cid), (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
        crashpoint("expire.tombstone")
        store.fs.remove(store._manifest_rel(cid))  # from here on, no listing shows it
        crashpoint("expire.sidecar")
    log.info("Deleting checkpoint %s (%s)", cid, reason or "by request")
    return finish(store, cid, targets or {})


def finish(store: Store, cid: str, targets: dict[str, Any]) -> Outcome:
    """Finish the deletion a tombstone describes: archive, records, then the data outside the archive."""
    rel = _tombstone_rel(cid)
    body = load_json(store.fs.read_bytes(rel), source=rel)
    if not isinstance(body, dict) or body.get("format") != TOMBSTONE_FORMAT or body.get("checkpoint_id") != cid:
        raise FormatError(
            f"{rel} is not a tombstone of {cid}", hint="move it aside; it was not written by this provider"
        )
    out = Outcome(cid)
    if store.fs.exists(store._manifest_rel(cid)):  # killed between the tombstone and step 2: still whole
        with store.lock():
            why = _now_protected(store, cid)
            if why:  # it became the LKG or got used meanwhile: the deletion is called off
                store.fs.remove(rel)
                out.refused = f"checkpoint {cid} is {why} now; its deletion was called off"
                return out
            store.fs.remove(store._manifest_rel(cid))
    store.fs.remove(store._archive_rel(cid))
    store.fs.remove(checkpoint_keys_rel(cid))  # the wrapped data key of an encrypted one: useless now
    crashpoint("expire.archive")
    store.drop_states(cid)
    out.done.append(f"archive and records of {cid}")
    crashpoint("expire.states")
    for name, raw in (body.get("external") or {}).items():
        engine = registry.of_artifact(name)
        if engine is None or engine.expire is None:
            out.pending.append(f"{name}: no registered engine can delete it")
            continue
        target = targets.get(name)
        if target is None:
            out.pending.append(f"{name}: no connection given; a later run with one deletes it")
            continue
        try:
            out.done += engine.expire(target, [Artifact.from_dict(a) for a in raw])
        except EngineError as exc:
            out.pending.append(f"{name}: {exc.message.splitlines()[0]}")
            log.warning("Checkpoint %s: its %s data stays for a later run: %s", cid, engine.title, exc.message)
    if not out.pending:
        store.fs.remove(rel)
    return out


def _now_protected(store: Store, cid: str) -> str:
    lkg = store.lkg()
    if lkg is not None and lkg.checkpoint_id == cid:
        return "the last-known-good"
    user = in_use(store).get(cid)
    return f"in use by {user}" if user else ""


def tombstones(store: Store) -> list[str]:
    return sorted(
        e[: -len(".json")]
        for e in store.fs.listdir(TOMBSTONE_DIR)
        if e.endswith(".json") and not e.startswith(TMP_MARK)
    )


def finish_tombstones(store: Store, targets: dict[str, Any]) -> list[Outcome]:
    """Finish every deletion an earlier run left unfinished (a crash, a search cluster that was down)."""
    out = []
    for cid in tombstones(store):
        try:
            out.append(finish(store, cid, targets))
        except CheckpointError as exc:
            out.append(Outcome(cid, pending=[exc.message]))
    return out


@dataclass
class ExpireReport:
    plan: Plan
    executed: bool
    finished: list[Outcome] = field(default_factory=list)  #: tombstones of earlier runs
    deleted: list[Outcome] = field(default_factory=list)

    @property
    def pending(self) -> list[str]:
        return [f"{o.checkpoint_id}: {p}" for o in self.finished + self.deleted for p in o.pending]

    def to_dict(self) -> dict[str, Any]:
        return {
            "executed": self.executed,
            "plan": self.plan.to_dict(),
            "pending": self.pending,
            "finished": [o.to_dict() for o in self.finished],
            "deleted": [o.to_dict() for o in self.deleted],
        }


def expire(
    store: Store,
    policy: Policy,
    *,
    requires: str,
    targets: dict[str, Any] | None = None,
    execute: bool = False,
    now: datetime | None = None,
) -> ExpireReport:
    """Plan (and with ``execute``, apply) ``policy``: a dry run by default."""
    targets = targets or {}
    finished = finish_tombstones(store, targets) if execute else []
    report = ExpireReport(plan_store(store, policy, requires=requires, now=now), execute, finished)
    if not execute:
        return report
    for decision in report.plan.doomed:
        try:
            report.deleted.append(
                delete(store, decision.checkpoint_id, targets=targets, reason="; ".join(decision.reasons))
            )
        except StoreError as exc:  # it became the LKG, got used, or vanished meanwhile
            report.deleted.append(Outcome(decision.checkpoint_id, refused=exc.message))
    return report
