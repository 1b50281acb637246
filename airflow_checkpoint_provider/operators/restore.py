"""RestoreOperator: restore a checkpoint (or the LKG) side by side, verify, then cut over."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_checkpoint_provider import engines, metrics, settings
from airflow_checkpoint_provider.core import recovery
from airflow_checkpoint_provider.core.manifest import Manifest
from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.core.values import as_dict, as_list, truthy
from airflow_checkpoint_provider.operators.base import open_store, provenance
from airflow_checkpoint_provider.operators.heal import heal, liveness, run_ended

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["RestoreOperator", "as_dict", "as_list", "truthy"]


class RestoreOperator(BaseOperator):
    """Restore a checkpoint into the registered stores, never destroying the current state first.

    The archive is verified, the plan checked for incompatibilities, a safety checkpoint of
    the current state taken, every component loaded side by side and verified against the
    manifest's fingerprints, and only then cut over (keeping rollback copies). A failure
    before the cut-over leaves the originals untouched; during it, they are put back. Every
    restore, dry runs included, writes an audit record into the store.

    :param checkpoint_id: the checkpoint, or ``last-known-good``.
    :param components: which stores (default: every registered engine the checkpoint holds).
    :param conn_ids: ``{component: Airflow connection id}`` of the targets (which may differ from
        where the checkpoint came from); each engine's own argument works too
        (``postgres_conn_id=``, ``redis_conn_id=``, ``elasticsearch_conn_id=``).
    :param options: ``{component: {...}}``: arguments of that engine's restore, e.g.
        ``{"postgres": {"databases": ["app"], "rename": {"app": "app_copy"}, "no_owner": True},
        "redis": {"spare_db": 10}, "search": {"indices": ["products"], "swap": "alias"}}``. The
        engines' shorthand arguments work too: ``databases``, ``rename_databases``,
        ``pg_restore``, ``jobs``, ``pg_options``, ``indices``, ``search_options``, ``redis_options``.
    :param mode: ``side_by_side`` (default) or ``in_place`` (then the safety checkpoint is the rollback).
    :param safety_checkpoint: checkpoint the current state before changing it (default True).
    :param dry_run: print the plan (what would be replaced, the conflicts) and change nothing.
    :param tolerance: allowed relative difference of counts in the final health check.
    :param allow_drift: accept the drift since the checkpoint (tables, columns, mappings, config keys the
        restore undoes; core/drift.py): the plan lists it as accepted notes instead of warnings, and
        the audit records ``drift_accepted``. Drift never blocks a restore; this never overrides a
        compatibility refusal (newer PostgreSQL major, RDB version or search major than the target).

    The checkpoint id must arrive as a string: under ``render_template_as_native_obj`` a
    template such as ``"{{ params.checkpoint_id }}"`` turns ``1_000`` into the number 1000, so
    pass the guard task's output (an XComArg, resolved without rendering) instead.
    """

    template_fields = (
        "checkpoint_id",
        "components",
        "conn_ids",
        "options",
        "mode",
        "safety_checkpoint",
        "plan_only",
        "allow_drift",
        "storage_root",
    )

    def __init__(
        self,
        *,
        checkpoint_id: Any = "last-known-good",
        components: list[str] | str | None = None,
        conn_ids: dict[str, str] | None = None,
        options: dict[str, dict[str, Any]] | None = None,
        mode: str = "side_by_side",
        safety_checkpoint: bool | str = True,
        dry_run: bool | str = False,
        tolerance: float = 0.0,
        allow_drift: bool | str = False,
        storage_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        legacy_conn_ids, legacy_options = engines.take_engine_kwargs(kwargs, "restore_kwargs")
        super().__init__(**kwargs)
        self.checkpoint_id = checkpoint_id
        self.components = components
        self.conn_ids = {**legacy_conn_ids, **(conn_ids or {})}
        self.options = engines.merge_options(legacy_options, options)
        self.mode = mode
        self.safety_checkpoint = safety_checkpoint
        self.plan_only = dry_run  #: ``dry_run``; BaseOperator.dry_run() is another thing
        self.tolerance = tolerance
        self.allow_drift = allow_drift
        self.storage_root = storage_root

    def _conn_id(self, name: str) -> str:
        return (self.conn_ids or {}).get(name) or engines.default_conn_id(engines.engines()[name])

    def build(self, store: Store, manifest: Manifest, request: recovery.RestoreRequest) -> list[Any]:
        """One component restore per requested store the checkpoint holds, in registry order."""
        return engines.build_restores(
            store, manifest, request, lambda name: engines.target(name, self._conn_id(name)), self.options
        )

    def expectations(self, report: recovery.RestoreReport, components: tuple[str, ...]) -> dict[str, Any]:
        """What a health check should find now: each engine's reading of the manifest's fingerprints,
        given its options and what its restore did (e.g. Redis keys that expired meanwhile)."""
        from airflow_checkpoint_provider.sensors.health import expectations_from_manifest

        details = {o.component: o.details for o in report.outcomes}
        options = {
            name: {**(self.options or {}).get(name, {}), "outcome": details.get(name, {})} for name in components
        }
        return expectations_from_manifest(self.storage_root, report.checkpoint_id, list(components), options)

    def execute(self, context: Context) -> dict[str, Any]:
        if not isinstance(self.checkpoint_id, str):
            raise AirflowFailException(
                f"checkpoint_id arrived as {type(self.checkpoint_id).__name__} {self.checkpoint_id!r}, not as a "
                "string: a natively rendered template changed it (e.g. '1_000' became 1000); nothing was restored. "
                "HINT: pass the id as a plain string or an XComArg, not through a template"
            )
        store = open_store(self.storage_root, create=False)
        components = tuple(as_list(self.components) or engines.names())
        request = recovery.RestoreRequest(
            checkpoint_id=self.checkpoint_id,
            components=components,
            mode=self.mode,
            safety_checkpoint=truthy(self.safety_checkpoint),
            dry_run=truthy(self.plan_only),
            tolerance=self.tolerance,
            provenance=provenance(context, self.task_id),
            conn_ids={name: self._conn_id(name) for name in components},
            is_alive=liveness(context),
            lease_ttl=settings.lease_ttl(),
            rollback_keep=settings.rollback_keep(),
            allow_drift=truthy(self.allow_drift),
            deployment=settings.deployment(),
        )
        if not request.dry_run:
            heal(store, context)  # finish or undo what an interrupted restore (this task's last try?) left
        audit = {
            "action": "restore-dry-run" if request.dry_run else "restore",
            "requested_checkpoint": request.checkpoint_id,
            "components": list(components),
            "mode": request.mode,
            "allow_drift": request.allow_drift,
            "dag_id": context["dag"].dag_id,
            "run_id": context["run_id"],
            "task_id": self.task_id,
            "targets": {name: self._conn_id(name) for name in components},
        }
        started = time.monotonic()
        try:
            report = restore_audited(store, request, self.build, audit)
        except recovery.RestoreRefusedError as exc:
            if exc.plan is not None:
                self.log.info("%s", exc.plan.describe(problems=False))
            # the PROBLEM and HINT lines end the message: they are the last lines of the task log
            raise AirflowFailException(str(exc)) from None
        if not report.dry_run:
            metrics.restore_duration(time.monotonic() - started)
        result = report.to_dict()
        result["expectations"] = None if report.dry_run else self.expectations(report, components)
        for line in report.plan.drift:
            if report.plan.drift_accepted:
                self.log.info("drift (accepted): %s", line)
            else:
                self.log.warning("DRIFT: %s (the restore undoes it; allow_drift records it as accepted)", line)
        for outcome in report.outcomes:
            self.log.info("%s restored %s; rollback copies: %s", outcome.component, outcome.restored, outcome.rollback)
        for check in report.health:
            self.log.info("health: %s", check)
        if not report.dry_run:  # housekeeping: staging areas of runs that died (a killed safety checkpoint)
            for rel in store.cleanup(stale_after=settings.stale_staging_after(), is_dead=run_ended(context)):
                self.log.info("Removed %s, left by a run that ended without sealing", rel)
        # separate keys, so the health check can take them as XComArgs (no native rendering of the id)
        context["ti"].xcom_push(key="checkpoint_id", value=report.checkpoint_id)
        context["ti"].xcom_push(key="expectations", value=result["expectations"] or {})  # None would read as missing
        return result


def restore_audited(
    store: Store, request: recovery.RestoreRequest, build: recovery.Builder, audit: dict[str, Any]
) -> recovery.RestoreReport:
    """Run :func:`core.recovery.restore` and write its audit record, whatever the outcome.

    ``audit`` holds who asked (dag/run/task or the command line), the requested checkpoint,
    components and targets; refusals and failures are recorded with their error, then re-raised.
    """
    try:
        report = recovery.restore(store, request, build)
    except recovery.RestoreRefusedError as exc:
        store.write_audit(
            {**audit, "status": "refused", "error": exc.message, "plan": exc.plan.to_dict() if exc.plan else None}
        )
        raise
    except Exception as exc:
        store.write_audit({**audit, "status": "failed", "error": str(exc)})
        raise
    result = report.to_dict()
    components = list(request.components)
    touched = sorted(
        {i.component for i in report.plan.items} | {o.component for o in report.outcomes}, key=components.index
    )  # what the checkpoint held of those asked for
    store.write_audit(
        {
            **audit,
            "status": "planned" if report.dry_run else "restored",
            "components": touched,
            "requested_components": components,
            "checkpoint_id": report.checkpoint_id,
            "safety_checkpoint_id": report.safety_checkpoint_id,
            "outcomes": result["outcomes"],
            "health": result["health"],
            "plan": result["plan"],
        }
    )
    return report
