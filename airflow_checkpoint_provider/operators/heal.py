"""Before touching a target, finish or undo what an interrupted restore left on it.

Every capture and restore task calls :func:`heal` first: the journals of restores that died
(no live lease) are replayed with the engines' ``recover`` functions, reconnecting through the
Airflow connection ids recorded in the journal. Airflow itself says when a restore's task is no
longer running (:func:`liveness`), so a killed task's own retry heals at once instead of waiting
for the lease to expire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from airflow_checkpoint_provider.core.lease import LeaseRecord
from airflow_checkpoint_provider.core.replay import Replay, ReplayError, replay_interrupted
from airflow_checkpoint_provider.core.store import Store

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

#: task states in which the task that took a lease can no longer be running it
_ENDED = frozenset({"success", "failed", "up_for_retry", "upstream_failed", "skipped", "removed"})


def resolve_target(component: str, public: dict[str, Any]) -> Any:
    """The engine target of ``component`` from the connection id a journal recorded."""
    from airflow_checkpoint_provider import engines

    conn_id = public.get("conn_id")
    if not conn_id:
        raise ReplayError(
            f"the journal of the interrupted {component} restore records no connection id",
            hint="run `airflow-checkpoint recover-interrupted --conn-id <component>=<connection>` naming "
            "the connection of the server it restored",
        )
    return engines.target(component, conn_id)


def liveness(context: Context | None) -> Callable[[LeaseRecord], bool | None]:
    """Airflow's view of a lease owner: dead if it is an earlier try of this very task, or if its
    task instance ended; otherwise undecided (the heartbeat and the pid check decide)."""
    ti = context["ti"] if context else None

    def is_alive(rec: LeaseRecord) -> bool | None:
        owner = rec.owner
        if not owner.get("dag_id") or ti is None:
            return None
        same = (owner.get("dag_id"), owner.get("run_id"), owner.get("task_id")) == (ti.dag_id, ti.run_id, ti.task_id)
        if same:
            return False if int(owner.get("try_number") or 0) < int(ti.try_number or 0) else None
        try:
            states = ti.get_task_states(dag_id=owner["dag_id"], run_ids=[owner["run_id"]], task_ids=[owner["task_id"]])
        except Exception:
            return None
        found = [s for by_task in (states or {}).values() for s in (by_task or {}).values()]
        return False if found and all(s in _ENDED for s in found) else None

    return is_alive


def run_ended(context: Context | None) -> Callable[[dict[str, Any]], bool | None]:
    """Airflow's view of a staging area's writer: dead once its DAG run is no longer running."""
    ti = context["ti"] if context else None

    def is_dead(owner: dict[str, Any]) -> bool | None:
        if ti is None or not owner.get("dag_id") or not owner.get("run_id"):
            return None
        if (owner["dag_id"], owner["run_id"]) == (ti.dag_id, ti.run_id):
            return False
        try:
            state = ti.get_dagrun_state(dag_id=owner["dag_id"], run_id=owner["run_id"])
        except Exception:
            return True
        return str(state).split(".")[-1].lower() not in ("running", "queued")

    return is_dead


def heal(store: Store, context: Context | None, keys: Iterable[str] = ()) -> list[Replay]:
    """Replay every interrupted restore; raise if one touching ``keys`` cannot be replayed."""
    replays = replay_interrupted(store, resolve_target, is_alive=liveness(context), must_heal=keys)
    for rep in replays:
        if rep.error is None:
            log.warning(
                "Healed the interrupted restore %s of %s: %s",
                rep.restore_id,
                rep.checkpoint_id,
                "; ".join(f"{c}: {', '.join(a) or 'nothing left to do'}" for c, a in rep.actions.items()),
            )
    return replays
