"""DrillCheckpointOperator: restore a checkpoint side by side, verify it, drop the copies (core/drill.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_checkpoint_provider import engines, metrics, settings
from airflow_checkpoint_provider.core.states import DRILLED, VERIFIED, meets
from airflow_checkpoint_provider.core.values import as_list
from airflow_checkpoint_provider.operators.base import open_store, provenance
from airflow_checkpoint_provider.operators.heal import heal, liveness
from airflow_checkpoint_provider.operators.restore import RestoreOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_checkpoint_provider.core.store import Store

#: ``checkpoint_id`` value naming the newest verified checkpoint
NEWEST = "newest-verified"


class DrillCheckpointOperator(RestoreOperator):
    """Drill a checkpoint: load every component side by side on the target servers (production or scratch
    connections), compare it with the manifest's fingerprints, drop the copies, record the evidence.

    Production is never changed: no safety checkpoint, no cut-over. A failure records
    ``drill_failed`` and fails the task; the LKG stays where it is. With ``[checkpoint]
    lkg_requires = drilled``, a passed drill of a checkpoint newer than the LKG moves the LKG to it.
    When the run was triggered by a checkpoint asset event (a pre-migration checkpoint), that
    checkpoint is drilled.

    :param checkpoint_id: an id, ``last-known-good``, or ``newest-verified``.
    Other parameters as for :class:`RestoreOperator` (components, conn_ids, options).
    """

    def _chosen(self, store: Store, context: Context) -> str:
        for events in (context.get("triggering_asset_events") or {}).values():
            for event in reversed(list(events)):
                cid = (getattr(event, "extra", None) or {}).get("checkpoint_id")
                if cid:
                    return str(cid)
        if self.checkpoint_id != NEWEST:
            return str(self.checkpoint_id)
        for info in store.list():
            if meets(store.state_of(info), VERIFIED):
                return info.checkpoint_id
        raise AirflowFailException("no verified checkpoint to drill; run checkpoint_verify first")

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_checkpoint_provider.core.drill import drill

        store = open_store(self.storage_root, create=False)
        cid = store.resolve(self._chosen(store, context))
        components = tuple(as_list(self.components) or engines.names())
        heal(store, context)  # finish or undo what an interrupted restore or drill left
        record = drill(
            store,
            cid,
            self.build,
            components=components,
            by={k: v for k, v in provenance(context, self.task_id).items() if k in ("dag_id", "run_id", "task_id")},
            provenance=provenance(context, self.task_id),
            conn_ids={name: self._conn_id(name) for name in components},
            is_alive=liveness(context),
            lease_ttl=settings.lease_ttl(),
        )
        for name, evidence in record.evidence.get("stores", {}).items():
            self.log.info("%s: %s", name, evidence)
        metrics.drill_result(record.outcome == "ok")
        if record.outcome != "ok":
            raise AirflowFailException(
                f"drill of {cid} failed; it is now drill_failed and the LKG stays where it "
                f"is:\n{record.problems[0]['detail']}"
            )
        if settings.lkg_requires() == DRILLED and _newer_than_lkg(store, cid):
            store.mark_lkg(cid, requires=DRILLED, reason=f"drilled by {context['dag'].dag_id} run {context['run_id']}")
            self.log.info("Last-known-good is now %s (drilled)", cid)
        return {"checkpoint_id": cid, **record.to_dict()}


def _newer_than_lkg(store: Store, cid: str) -> bool:
    lkg = store.lkg()
    if lkg is None or not store.exists(lkg.checkpoint_id):
        return True
    return store.get(cid).created_at > store.get(lkg.checkpoint_id).created_at
