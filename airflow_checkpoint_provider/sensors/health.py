"""HealthCheckSensor: wait until the stores look like a checkpoint says they should."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from airflow_checkpoint_provider.core.restore import HealthCheck

if TYPE_CHECKING:
    from airflow.sdk import Context

COMPONENTS = ("postgres", "redis", "search")


def expectations_from_manifest(storage_root: str | None, checkpoint_id: str, components: list[str],
                               rename: dict[str, str] | None = None) -> dict[str, Any]:
    """Turn a manifest's fingerprints into per-component expectations."""
    from airflow_checkpoint_provider.operators.base import open_store

    manifest = open_store(storage_root, create=False).get(checkpoint_id).manifest
    out: dict[str, Any] = {}
    for art in manifest.artifacts:
        if art.store not in components:
            continue
        if art.store == "postgres":
            db = (rename or {}).get(art.meta.get("database"), art.meta.get("database"))
            out.setdefault("postgres", {"databases": {}})["databases"][db] = {"rows": art.fingerprints.get("rows", {})}
        elif art.store == "redis":
            out["redis"] = {"keys": art.fingerprints.get("keys", {})}
        elif art.store == "search":
            out["search"] = {"indices": art.fingerprints.get("indices", {})}
    return out


def run_health_checks(spec: dict[str, Any]) -> list[HealthCheck]:
    """Run every check of ``spec`` (components, conn ids, expectations, tolerance). Never raises for a
    failed check: an unreachable server is a failed ``connect`` check."""
    from airflow_checkpoint_provider.core.errors import CheckpointError

    checks: list[HealthCheck] = []
    tolerance = float(spec.get("tolerance", 0.0))
    expectations = spec["expectations"]
    for component in spec["components"]:
        expected = expectations.get(component, {})
        try:
            if component == "postgres":
                from airflow_checkpoint_provider.core.engines.postgres import health
                from airflow_checkpoint_provider.hooks.postgres import PgCheckpointHook

                target = PgCheckpointHook(postgres_conn_id=spec["postgres_conn_id"]).target()
                checks += health(target, expected, tolerance=tolerance)
            elif component == "redis":
                from airflow_checkpoint_provider.core.engines.redis import health
                from airflow_checkpoint_provider.hooks.redis import RedisCheckpointHook

                target = RedisCheckpointHook(redis_conn_id=spec["redis_conn_id"]).target()
                checks += health(target, expected, tolerance=tolerance)
            elif component == "search":
                from airflow_checkpoint_provider.core.engines.search import SearchClient
                from airflow_checkpoint_provider.core.engines.search.health import health
                from airflow_checkpoint_provider.hooks.search import SearchCheckpointHook

                target = SearchCheckpointHook(elasticsearch_conn_id=spec["elasticsearch_conn_id"]).target()
                with SearchClient(target) as client:
                    checks += health(client, expected, tolerance=tolerance)
        except CheckpointError as exc:
            checks.append(HealthCheck(component, "connect", False, detail=exc.message))
    return checks


class HealthCheckSensor(BaseSensorOperator):
    """Check PostgreSQL, Redis and search against expectations; report which check failed and by how much.

    Expectations come from a checkpoint's manifest (row counts per table, keys per Redis db,
    docs per index) or are given explicitly in the same shape:
    ``{"postgres": {"databases": {"app": {"rows": {"public.orders": 100}}}},
    "redis": {"keys": {"0": 1005}}, "search": {"indices": {"products": {"docs": 200}}}}``.

    Checks: PostgreSQL connect, ``SELECT 1``, expected tables, row counts within ``tolerance``;
    Redis ``PING`` and keys per db; search cluster health green or yellow, the expected
    indices and their doc counts.

    :param checkpoint_id: take expectations from this checkpoint (``last-known-good`` allowed).
    :param expectations: explicit expectations instead.
    :param tolerance: allowed relative difference of counts (0.0 = exact).
    :param deferrable: wait in the triggerer between checks.
    """

    template_fields = ("checkpoint_id", "components", "postgres_conn_id", "redis_conn_id", "elasticsearch_conn_id",
                       "expectations", "rename_databases", "storage_root", "enabled")

    def __init__(
        self,
        *,
        checkpoint_id: str | None = "last-known-good",
        expectations: dict[str, Any] | None = None,
        components: list[str] | str = COMPONENTS,
        postgres_conn_id: str = "postgres_default",
        redis_conn_id: str = "redis_default",
        elasticsearch_conn_id: str = "elasticsearch_default",
        rename_databases: dict[str, str] | str | None = None,
        tolerance: float = 0.0,
        storage_root: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        enabled: bool | str = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 10)
        kwargs.setdefault("timeout", 600)
        super().__init__(**kwargs)
        self.checkpoint_id = checkpoint_id
        self.expectations = expectations
        self.components = components
        self.postgres_conn_id = postgres_conn_id
        self.redis_conn_id = redis_conn_id
        self.elasticsearch_conn_id = elasticsearch_conn_id
        self.rename_databases = rename_databases
        self.tolerance = tolerance
        self.storage_root = storage_root
        self.deferrable = deferrable
        self.enabled = enabled
        self._last: list[HealthCheck] = []

    def spec(self) -> dict[str, Any]:
        from airflow_checkpoint_provider.operators.restore import as_dict, as_list

        components = as_list(self.components) or list(COMPONENTS)
        expectations = as_dict(self.expectations) or expectations_from_manifest(
            self.storage_root, str(self.checkpoint_id), components, as_dict(self.rename_databases))
        components = [c for c in components if c in expectations]
        return {"components": components, "expectations": expectations, "tolerance": self.tolerance,
                "postgres_conn_id": self.postgres_conn_id, "redis_conn_id": self.redis_conn_id,
                "elasticsearch_conn_id": self.elasticsearch_conn_id}

    def _report(self, checks: list[HealthCheck]) -> bool:
        self._last = checks
        for check in checks:
            (self.log.info if check.ok else self.log.warning)("%s", check)
        return bool(checks) and all(c.ok for c in checks)

    def poke(self, context: Context) -> bool:
        return self._report(run_health_checks(self._spec))

    def execute(self, context: Context) -> dict[str, Any]:
        if str(self.enabled).lower() in ("false", "0", "no", "off", "none", ""):
            raise AirflowSkipException("health check not needed for this run (dry run)")
        self._spec = self.spec()
        if self.deferrable:
            from airflow_checkpoint_provider.triggers.health import HealthCheckTrigger

            self.defer(trigger=HealthCheckTrigger(spec=self._spec, poke_interval=float(self.poke_interval),
                                                  timeout=float(self.timeout)),
                       method_name="execute_complete", timeout=timedelta(seconds=float(self.timeout) + 60))
        try:
            super().execute(context)
        except Exception as exc:
            failed = [str(c) for c in self._last if not c.ok]
            if failed:
                raise AirflowException("health check failed:\n  - " + "\n  - ".join(failed)) from exc
            raise
        return {"ok": True, "checks": [c.to_dict() for c in self._last]}

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        checks = [HealthCheck(**c) for c in event["checks"]]
        if not self._report(checks):
            failed = [str(c) for c in checks if not c.ok]
            raise AirflowException("health check failed:\n  - " + "\n  - ".join(failed))
        return {"ok": True, "checks": event["checks"]}
