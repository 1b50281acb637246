"""RestoreOperator: restore a checkpoint (or the LKG) side by side, verify, then cut over."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_checkpoint_provider.core import recovery
from airflow_checkpoint_provider.core.manifest import Manifest
from airflow_checkpoint_provider.core.rollbacks import RollbackPolicy
from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.operators.base import open_store, provenance
from airflow_checkpoint_provider.operators.heal import heal, liveness, run_ended

if TYPE_CHECKING:
    from airflow.sdk import Context


def as_list(value: Any) -> list[str] | None:
    if value in (None, "", [], "all"):
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] or None
    return [str(v) for v in value if str(v).strip()] or None


def as_dict(value: Any) -> dict[str, Any]:
    if value in (None, "", {}):
        return {}
    return json.loads(value) if isinstance(value, str) else dict(value)


def truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


class RestoreOperator(BaseOperator):
    """Restore a checkpoint into PostgreSQL, Redis and search, never destroying the current state first.

    The archive is verified, the plan checked for incompatibilities, a safety checkpoint of
    the current state taken, every component loaded side by side and verified against the
    manifest's fingerprints, and only then cut over (keeping rollback copies). A failure
    before the cut-over leaves the originals untouched; during it, they are put back. Every
    restore, dry runs included, writes an audit record into the store.

    :param checkpoint_id: the checkpoint, or ``last-known-good``.
    :param components: any of ``postgres``, ``redis``, ``search``.
    :param databases: PostgreSQL databases to restore (default: all in the checkpoint).
    :param indices: search indices to restore (default: all in the checkpoint).
    :param rename_databases: ``{"app": "app_copy"}`` restores a database under another name.
    :param postgres_conn_id: target PostgreSQL (may differ from where the checkpoint came from).
    :param redis_conn_id: target Redis.
    :param elasticsearch_conn_id: target search cluster.
    :param mode: ``side_by_side`` (default) or ``in_place`` (then the safety checkpoint is the rollback).
    :param safety_checkpoint: checkpoint the current state before changing it (default True).
    :param dry_run: print the plan (what would be replaced, the conflicts) and change nothing.
    :param tolerance: allowed relative difference of counts in the final health check.
    :param pg_restore: path of pg_restore; ``jobs``: its -j.
    :param pg_options: extra arguments for the PostgreSQL restore (e.g. ``no_owner``, ``no_privileges``).
    :param redis_options: extra arguments for the Redis restore (e.g. ``spare_db``, file placement).
    :param search_options: extra arguments for the search restore (e.g. ``swap``, ``repository_settings``).

    The checkpoint id must arrive as a string: under ``render_template_as_native_obj`` a
    template such as ``"{{ params.checkpoint_id }}"`` turns ``1_000`` into the number 1000, so
    pass the guard task's output (an XComArg, resolved without rendering) instead.
    """

    template_fields = ("checkpoint_id", "components", "databases", "indices", "rename_databases", "postgres_conn_id",
                       "redis_conn_id", "elasticsearch_conn_id", "mode", "safety_checkpoint", "dry_run", "storage_root",
                       "pg_options", "search_options")

    def __init__(
        self,
        *,
        checkpoint_id: str = "last-known-good",
        components: list[str] | str = recovery.COMPONENTS,
        databases: list[str] | str | None = None,
        indices: list[str] | str | None = None,
        rename_databases: dict[str, str] | str | None = None,
        postgres_conn_id: str = "postgres_default",
        redis_conn_id: str = "redis_default",
        elasticsearch_conn_id: str = "elasticsearch_default",
        mode: str = "side_by_side",
        safety_checkpoint: bool | str = True,
        dry_run: bool | str = False,
        tolerance: float = 0.0,
        pg_restore: str = "pg_restore",
        jobs: int = 1,
        pg_options: dict[str, Any] | None = None,
        redis_options: dict[str, Any] | None = None,
        search_options: dict[str, Any] | None = None,
        storage_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.checkpoint_id = checkpoint_id
        self.components = components
        self.databases = databases
        self.indices = indices
        self.rename_databases = rename_databases
        self.postgres_conn_id = postgres_conn_id
        self.redis_conn_id = redis_conn_id
        self.elasticsearch_conn_id = elasticsearch_conn_id
        self.mode = mode
        self.safety_checkpoint = safety_checkpoint
        self.dry_run = dry_run
        self.tolerance = tolerance
        self.pg_restore = pg_restore
        self.jobs = jobs
        self.pg_options = pg_options or {}
        self.redis_options = redis_options or {}
        self.search_options = search_options or {}
        self.storage_root = storage_root

    def build(self, store: Store, manifest: Manifest, request: recovery.RestoreRequest) -> list[Any]:
        """One component restore per requested store present in the checkpoint, search last."""
        parts: list[Any] = []
        cid = manifest.checkpoint_id
        by_store = {c: [a for a in manifest.artifacts if a.store == c] for c in recovery.COMPONENTS}
        if "postgres" in request.components and by_store["postgres"]:
            from airflow_checkpoint_provider.core.engines.postgres import PostgresRestore
            from airflow_checkpoint_provider.hooks.postgres import PgCheckpointHook

            target = PgCheckpointHook(postgres_conn_id=self.postgres_conn_id).target()
            parts.append(PostgresRestore(target, store, cid, by_store["postgres"], mode=request.mode,
                                         databases=as_list(self.databases), rename=as_dict(self.rename_databases),
                                         pg_restore=self.pg_restore, jobs=int(self.jobs), **self._pg_options()))
        if "redis" in request.components and by_store["redis"]:
            from airflow_checkpoint_provider.core.engines.redis import RedisRestore
            from airflow_checkpoint_provider.hooks.redis import RedisCheckpointHook

            target = RedisCheckpointHook(redis_conn_id=self.redis_conn_id).target()
            policy = RollbackPolicy.parse(request.rollback_keep)  # also what may be reclaimed when spares run short
            options = {"rollback_keep": policy.keep_last, "rollback_max_age": policy.max_age, **self.redis_options}
            parts.append(RedisRestore(target, store, cid, by_store["redis"], mode=request.mode, **options))
        if "search" in request.components and by_store["search"]:
            from airflow_checkpoint_provider.core.engines.search.component import SearchRestore
            from airflow_checkpoint_provider.hooks.search import SearchCheckpointHook

            target = SearchCheckpointHook(elasticsearch_conn_id=self.elasticsearch_conn_id).target()
            parts.append(SearchRestore(target, store, cid, by_store["search"][0], indices=as_list(self.indices),
                                       **self.search_options))
        return parts

    def expectations(self, report: recovery.RestoreReport, components: tuple[str, ...]) -> dict[str, Any]:
        """What a health check should find now: the manifest's fingerprints, except that Redis keys
        whose TTL ran out between the checkpoint and the restore were (rightly) not restored."""
        from airflow_checkpoint_provider.sensors.health import expectations_from_manifest

        expected = expectations_from_manifest(self.storage_root, report.checkpoint_id, list(components),
                                              as_dict(self.rename_databases))
        for outcome in report.outcomes:
            loaded = outcome.details.get("keys") if outcome.component == "redis" else None
            if loaded is not None and "redis" in expected:
                expected["redis"] = {**expected["redis"], "keys": {k.removeprefix("db"): n for k, n in loaded.items()}}
        return expected

    def _pg_options(self) -> dict[str, Any]:
        flags = ("no_owner", "no_privileges")
        return {k: truthy(v) if k in flags else v for k, v in self.pg_options.items()}

    def execute(self, context: Context) -> dict[str, Any]:
        if not isinstance(self.checkpoint_id, str):
            raise AirflowFailException(
                f"checkpoint_id arrived as {type(self.checkpoint_id).__name__} {self.checkpoint_id!r}, not as a "
                "string: a natively rendered template changed it (e.g. '1_000' became 1000); nothing was restored. "
                "HINT: pass the id as a plain string or an XComArg, not through a template")
        store = open_store(self.storage_root, create=False)
        components = tuple(as_list(self.components) or recovery.COMPONENTS)
        request = recovery.RestoreRequest(
            checkpoint_id=self.checkpoint_id, components=components, mode=self.mode,
            safety_checkpoint=truthy(self.safety_checkpoint), dry_run=truthy(self.dry_run), tolerance=self.tolerance,
            provenance=provenance(context, self.task_id),
            conn_ids={"postgres": self.postgres_conn_id, "redis": self.redis_conn_id,
                      "search": self.elasticsearch_conn_id},
            is_alive=liveness(context), lease_ttl=settings.lease_ttl(), rollback_keep=settings.rollback_keep(),
        )
        if not request.dry_run:
            heal(store, context)  # finish or undo what an interrupted restore (this task's last try?) left
        audit = {"action": "restore-dry-run" if request.dry_run else "restore",
                 "requested_checkpoint": request.checkpoint_id, "components": list(components),
                 "mode": request.mode, "dag_id": context["dag"].dag_id, "run_id": context["run_id"],
                 "task_id": self.task_id,
                 "targets": {"postgres": self.postgres_conn_id, "redis": self.redis_conn_id,
                             "search": self.elasticsearch_conn_id}}
        try:
            report = recovery.restore(store, request, self.build)
        except recovery.RestoreRefusedError as exc:
            store.write_audit({**audit, "status": "refused", "error": exc.message,
                               "plan": exc.plan.to_dict() if exc.plan else None})
            if exc.plan is not None:
                self.log.info("%s", exc.plan.describe(problems=False))
            # the PROBLEM and HINT lines end the message: they are the last lines of the task log
            raise AirflowFailException(str(exc)) from None
        except Exception as exc:
            store.write_audit({**audit, "status": "failed", "error": str(exc)})
            raise
        result = report.to_dict()
        result["expectations"] = None if report.dry_run else self.expectations(report, components)
        store.write_audit({**audit, "status": "planned" if report.dry_run else "restored",
                           "checkpoint_id": report.checkpoint_id, "safety_checkpoint_id": report.safety_checkpoint_id,
                           "outcomes": result["outcomes"], "health": result["health"], "plan": result["plan"]})
        for outcome in report.outcomes:
            self.log.info("%s restored %s; rollback copies: %s", outcome.component, outcome.restored,
                          outcome.rollback)
        for check in report.health:
            self.log.info("health: %s", check)
        if not report.dry_run:  # housekeeping: staging areas of runs that died (a killed safety checkpoint)
            for rel in store.cleanup(stale_after=settings.stale_staging_after(), is_dead=run_ended(context)):
                self.log.info("Removed %s, left by a run that ended without sealing", rel)
        # separate keys, so the health check can take them as XComArgs (no native rendering of the id)
        context["ti"].xcom_push(key="checkpoint_id", value=report.checkpoint_id)
        context["ti"].xcom_push(key="expectations", value=result["expectations"] or {})  # None would read as missing
        return result
