"""Data checkpoints of workflow steps: capture named databases, Redis and indices with a step,
and restore one side by side before a resume (``restore_data=True``).

A step's data checkpoint is an ordinary checkpoint of the store (``airflow-checkpoint list``
shows it, tagged ``workflow`` and ``workflow:<id>``, ``step:<step>``): captured by the engines,
sealed, verified, and only then recorded in the step's state. The restore is the provider's
side-by-side restore (``core.recovery.restore``): verify, plan, safety checkpoint, load next to
the live data, verify against the fingerprints, cut over keeping rollback copies; an audit
record is written like for every restore.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_checkpoint_provider import engines as registered
from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core import recovery
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    VerificationFailedError,
)
from airflow_checkpoint_provider.core.lease import this_process
from airflow_checkpoint_provider.core.manifest import config_hash, format_ts, utcnow
from airflow_checkpoint_provider.core.staging import staging_key
from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.workflow import engines

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataTargets:
    """What a step's data checkpoint holds: one field per engine, named after it.

    :param postgres: database names to pg_dump (empty: none).
    :param redis: capture the Redis server too.
    :param search: index names or patterns to snapshot (empty: none).
    :param postgres_conn_id: default ``[checkpoint] postgres_conn_id`` (likewise for Redis and search).
    :param safety_checkpoint: checkpoint the current data before a ``restore_data`` replaces it.
    """

    postgres: Sequence[str] = ()
    redis: bool = False
    search: Sequence[str] = ()
    postgres_conn_id: str | None = None
    redis_conn_id: str | None = None
    elasticsearch_conn_id: str | None = None
    safety_checkpoint: bool = True
    extra_tags: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in registry.names():
            value = getattr(self, name, None)
            if isinstance(value, str):
                object.__setattr__(self, name, tuple(v.strip() for v in value.split(",") if v.strip()))
        if not (self.postgres or self.redis or self.search):
            raise CheckpointError(
                "DataTargets names no data: give postgres databases, redis=True or search indices",
                hint="e.g. DataTargets(postgres=['simulation'])",
            )

    def components(self) -> dict[str, Sequence[str] | None]:
        """The engines to capture, in registry order, with their names (None: everything)."""
        out: dict[str, Sequence[str] | None] = {}
        for name in registry.names():
            value = getattr(self, name, None)
            if value:
                out[name] = None if value is True else list(value)
        return out

    def conn_ids(self) -> dict[str, str]:
        """Every engine's connection id: the field named after its ``conn_param``, else the default."""
        return {
            name: getattr(self, engine.conn_param, None) or registered.default_conn_id(engine)
            for name, engine in registered.engines().items()
        }


class EngineDataCheckpoints:
    """:class:`core.workflow.DataCheckpoints` through the provider's engines and restore."""

    def __init__(self, targets: DataTargets, store: Store, context: Context, *, storage_root: str | None = None):
        self.targets, self.store, self.context, self.storage_root = targets, store, context, storage_root

    def _provenance(self, **more: Any) -> dict[str, Any]:
        from airflow_checkpoint_provider.operators.base import provenance

        return {**provenance(self.context, self.context["ti"].task_id), **more}

    def capture(self, workflow_id: str, step: int | str) -> str:
        """Capture every target, seal, verify; returns the checkpoint id."""
        conn_ids = self.targets.conn_ids()
        staging = self.store.staging(staging_key("workflow", workflow_id, str(step), format_ts(utcnow())))
        staging.claim({**self._provenance(), **this_process()})
        try:
            config = {}
            for component, names in self.targets.components().items():
                arts = engines.capture(
                    component, conn_ids[component], staging, names=names, context=self.context, store=self.store
                )
                config[component] = {"conn_id": conn_ids[component], "names": names}
                log.info(
                    "Data checkpoint of step %r: captured %s (%s)", step, component, ", ".join(a.name for a in arts)
                )
            wid_tag = workflow_id if len(workflow_id) <= 180 and workflow_id.isprintable() else staging_key(workflow_id)
            manifest = self.store.seal(
                staging,
                tags=["workflow", f"workflow:{wid_tag}", f"step:{step}", *self.targets.extra_tags],
                config_hash=config_hash(config),
                provenance=self._provenance(workflow_id=workflow_id, step=step),
            )
        except BaseException:
            staging.discard()
            raise
        result = self.store.verify(manifest.checkpoint_id)
        if not result.ok:
            raise VerificationFailedError(result)
        log.info("Data checkpoint %s of step %r sealed and verified", manifest.checkpoint_id, step)
        return manifest.checkpoint_id

    def restore(self, checkpoint_id: str) -> dict[str, Any]:
        """Restore the checkpoint's components side by side (with a safety checkpoint); returns a short report."""
        from airflow_checkpoint_provider.operators.heal import heal, liveness

        manifest = self.store.get(checkpoint_id).manifest
        components = tuple(c for c in registry.names() if c in manifest.stores())
        conn_ids = self.targets.conn_ids()
        heal(self.store, self.context)
        request = recovery.RestoreRequest(
            checkpoint_id=checkpoint_id,
            components=components,
            safety_checkpoint=self.targets.safety_checkpoint,
            provenance=self._provenance(reason="restore_data of a workflow resume"),
            conn_ids=conn_ids,
            is_alive=liveness(self.context),
            lease_ttl=settings.lease_ttl(),
            rollback_keep=settings.rollback_keep(),
        )
        audit = {
            "action": "restore",
            "requested_checkpoint": checkpoint_id,
            "components": list(components),
            "mode": request.mode,
            "dag_id": self.context["dag"].dag_id,
            "run_id": self.context["run_id"],
            "task_id": self.context["ti"].task_id,
            "reason": "workflow restore_data",
            "targets": {c: conn_ids[c] for c in components},
        }
        build = engines.restore_builder(conn_ids, storage_root=self.storage_root)
        try:
            report = recovery.restore(self.store, request, build)
        except Exception as exc:
            self.store.write_audit({**audit, "status": "failed", "error": str(exc)})
            raise
        result = report.to_dict()
        self.store.write_audit(
            {
                **audit,
                "status": "restored",
                "checkpoint_id": checkpoint_id,
                "safety_checkpoint_id": report.safety_checkpoint_id,
                "outcomes": result["outcomes"],
                "health": result["health"],
                "plan": result["plan"],
            }
        )
        if not report.healthy:
            bad = [str(h) for h in report.health if not h.ok]
            raise CheckpointError(
                f"data checkpoint {checkpoint_id} was restored, but its health check failed: {'; '.join(bad[:5])}",
                hint=f"the data before the restore is in safety checkpoint "
                f"{report.safety_checkpoint_id}; inspect the data before resuming",
            )
        for outcome in report.outcomes:
            log.info(
                "restore_data: %s restored %s; rollback copies: %s",
                outcome.component,
                outcome.restored,
                outcome.rollback,
            )
        return {
            "components": list(components),
            "safety_checkpoint_id": report.safety_checkpoint_id,
            "restore_id": report.restore_id,
        }
