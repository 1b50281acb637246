"""HealthCheckSensor: wait until the stores look like a checkpoint says they should."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from airflow_checkpoint_provider.core.restore import HealthCheck
from airflow_checkpoint_provider.core.values import as_dict, as_list

if TYPE_CHECKING:
    from airflow.sdk import Context


def expectations_from_manifest(
    storage_root: str | None,
    checkpoint_id: str,
    components: list[str],
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Turn a manifest's fingerprints into per-component expectations (each engine's own shape)."""
    from airflow_checkpoint_provider.core.engines import registry
    from airflow_checkpoint_provider.operators.base import open_store

    manifest = open_store(storage_root, create=False).get(checkpoint_id).manifest
    out: dict[str, Any] = {}
    for name in components:
        engine = registry.get(name)
        artifacts = engine.artifacts_of(manifest.artifacts)
        if artifacts:
            out[name] = engine.expectations(artifacts, (options or {}).get(name, {}))
    return out


def run_health_checks(spec: dict[str, Any]) -> list[HealthCheck]:
    """Run every check of ``spec`` (components, conn ids, expectations, tolerance). Never raises for a
    failed check: an unreachable server is a failed ``connect`` check."""
    from airflow_checkpoint_provider import engines
    from airflow_checkpoint_provider.core.errors import CheckpointError

    checks: list[HealthCheck] = []
    tolerance = float(spec.get("tolerance", 0.0))
    for component in spec["components"]:
        try:
            target = engines.target(component, spec["conn_ids"][component])
            checks += engines.engines()[component].health(target, spec["expectations"].get(component, {}), tolerance)
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
    :param components: the stores to check (default: every registered engine).
    :param conn_ids: ``{component: Airflow connection id}``; each engine's own argument
        (``postgres_conn_id=``...) works too.
    :param options: ``{component: {...}}`` for the expectations (e.g. PostgreSQL's ``rename``).
    :param tolerance: allowed relative difference of counts (0.0 = exact).
    :param deferrable: wait in the triggerer between checks.
    """

    template_fields = ("checkpoint_id", "components", "conn_ids", "expectations", "options", "storage_root", "enabled")

    def __init__(
        self,
        *,
        checkpoint_id: str | None = "last-known-good",
        expectations: dict[str, Any] | None = None,
        components: list[str] | str | None = None,
        conn_ids: dict[str, str] | None = None,
        options: dict[str, dict[str, Any]] | None = None,
        tolerance: float = 0.0,
        storage_root: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        enabled: bool | str = True,
        **kwargs: Any,
    ) -> None:
        from airflow_checkpoint_provider import engines

        legacy_conn_ids, legacy_options = engines.take_engine_kwargs(kwargs, "restore_kwargs")
        kwargs.setdefault("poke_interval", 10)
        kwargs.setdefault("timeout", 600)
        super().__init__(**kwargs)
        self.checkpoint_id = checkpoint_id
        self.expectations = expectations
        self.components = components
        self.conn_ids = {**legacy_conn_ids, **(conn_ids or {})}
        self.options = engines.merge_options(legacy_options, options)
        self.tolerance = tolerance
        self.storage_root = storage_root
        self.deferrable = deferrable
        self.enabled = enabled
        self._last: list[HealthCheck] = []

    def spec(self) -> dict[str, Any]:
        from airflow_checkpoint_provider import engines

        components = as_list(self.components) or list(engines.names())
        expectations = as_dict(self.expectations) or expectations_from_manifest(
            self.storage_root, str(self.checkpoint_id), components, self.options
        )
        components = [c for c in components if c in expectations]
        conn_ids = {
            c: (self.conn_ids or {}).get(c) or engines.default_conn_id(engines.engines()[c]) for c in components
        }
        return {
            "components": components,
            "expectations": expectations,
            "tolerance": self.tolerance,
            "conn_ids": conn_ids,
        }

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

            self.defer(
                trigger=HealthCheckTrigger(
                    spec=self._spec, poke_interval=float(self.poke_interval), timeout=float(self.timeout)
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=float(self.timeout) + 60),
            )
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
