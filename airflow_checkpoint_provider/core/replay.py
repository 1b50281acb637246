"""Replay interrupted restores: finish or undo what a killed restore left, from its journal.

A journal (:mod:`.journal`) whose restore holds no live lease (:mod:`.lease`) belongs to a
process that died. :func:`replay_interrupted` hands each of its component entries to the
engine's ``recover`` function, which rolls forward when the replacement had verified and back
otherwise, then removes the journal, breaks the dead lease and writes an audit record. It runs
before every restore and capture, in the killed task's own retry, and in
``airflow-checkpoint recover-interrupted``.

A replay that fails leaves the journal (and the dead lease) in place and says why: the next
restore of that target then refuses (:class:`~.lease.StaleLeaseError`) instead of working on
top of a half-finished cut-over.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.errors import CheckpointError, FormatError
from airflow_checkpoint_provider.core.journal import (
    ComponentEntry,
    Journal,
    open_journals,
)
from airflow_checkpoint_provider.core.lease import LeaseRecord, break_lease, read_leases
from airflow_checkpoint_provider.core.store import Store

log = logging.getLogger(__name__)

#: an engine's replay of one component entry: (target with credentials, entry) -> what it did
Replayer = Callable[[Any, ComponentEntry], list[str]]
#: the caller's way to reconnect: (component, the entry's public target incl. ``conn_id``) -> target
Resolver = Callable[[str, dict[str, Any]], Any]


class ReplayError(CheckpointError):
    """An interrupted restore could not be finished or undone; its journal stays."""


@dataclass
class Replay:
    """What the replay of one interrupted restore did."""

    restore_id: str
    checkpoint_id: str
    actions: dict[str, list[str]] = field(default_factory=dict)  #: per component
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "restore_id": self.restore_id,
            "checkpoint_id": self.checkpoint_id,
            "actions": self.actions,
            "error": self.error,
        }


def default_replayers(store: Store) -> dict[str, Replayer]:
    """The ``recover`` function of every registered engine, bound to the store."""
    from airflow_checkpoint_provider.core.engines import registry
    from airflow_checkpoint_provider.core.engines.contract import Engine

    def bound(engine: Engine) -> Replayer:
        return lambda target, entry: engine.recover(target, entry, store)

    return {name: bound(engine) for name, engine in registry.engines().items()}


def interrupted(store: Store, *, is_alive: Callable[[LeaseRecord], bool | None] | None = None) -> list[Journal]:
    """Journals of restores that are no longer running (no live lease), oldest first."""
    leases = read_leases(store.fs)
    out = []
    for rid in open_journals(store.fs):
        mine = [r for r in leases if r.holder == rid]
        if any(r.live(is_alive) for r in mine):
            continue  # still running
        try:
            out.append(Journal.load(store.fs, rid))
        except FormatError as exc:
            log.error("%s", exc)
    return out


def replay_interrupted(
    store: Store,
    resolve: Resolver,
    *,
    replayers: dict[str, Replayer] | None = None,
    is_alive: Callable[[LeaseRecord], bool | None] | None = None,
    must_heal: Iterable[str] = (),
) -> list[Replay]:
    """Replay every interrupted restore (see the module docstring).

    :param resolve: reconnects to a component's target from its journal entry.
    :param must_heal: target keys the caller is about to work on: if a journal touching one of
        them cannot be replayed, :class:`ReplayError` is raised (others are only reported).
    """
    replayers = replayers if replayers is not None else default_replayers(store)
    wanted = set(must_heal)
    done = []
    for journal in interrupted(store, is_alive=is_alive):
        rep = Replay(journal.restore_id, journal.checkpoint_id)
        try:
            for name, entry in journal.components.items():
                if entry.finished and not entry.pending():
                    continue
                replayer = replayers.get(name)
                if replayer is None:
                    raise ReplayError(
                        f"restore {journal.restore_id} was interrupted in {name}, which this version cannot replay",
                        hint="upgrade airflow-checkpoint-provider, or check the "
                        f"{name} server by hand and remove {journal.rel}",
                    )
                if journal.kind == "drill" and entry.roll_forward:
                    # a drill never cuts over: its verified copies are dropped, never switched in
                    entry = dataclasses.replace(entry, phase="loading")
                target = resolve(name, entry.target)
                rep.actions[name] = replayer(target, entry)
                for line in rep.actions[name]:
                    log.warning(
                        "Interrupted restore %s of %s, %s: %s", journal.restore_id, journal.checkpoint_id, name, line
                    )
        except Exception as exc:
            rep.error = str(exc)
            log.error("Replaying the interrupted restore %s failed: %s", journal.restore_id, exc)
            store.write_audit(
                {
                    "action": "recover-interrupted",
                    "status": "failed",
                    "restore_id": rep.restore_id,
                    "checkpoint_id": rep.checkpoint_id,
                    "actions": rep.actions,
                    "error": rep.error,
                }
            )
            done.append(rep)
            if wanted & set(journal.owner.get("keys") or []):
                raise ReplayError(
                    f"the interrupted restore {journal.restore_id} of checkpoint "
                    f"{journal.checkpoint_id} could not be finished or undone: {exc}",
                    hint=f"its journal {journal.rel} stays; fix the cause and run "
                    "`airflow-checkpoint recover-interrupted`",
                ) from exc
            continue
        journal.close()
        break_lease(store.fs, store.lock, journal.restore_id)
        store.write_audit(
            {
                "action": "recover-interrupted",
                "status": "recovered",
                "restore_id": rep.restore_id,
                "checkpoint_id": rep.checkpoint_id,
                "actions": rep.actions,
                "interrupted_run": {k: journal.owner.get(k) for k in ("dag_id", "run_id", "task_id")},
            }
        )
        done.append(rep)
    return done
