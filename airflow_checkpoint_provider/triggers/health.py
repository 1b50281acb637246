"""HealthCheckTrigger: re-run the health checks in the triggerer until they pass or time runs out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class HealthCheckTrigger(BaseTrigger):
    """Runs :func:`~airflow_checkpoint_provider.sensors.health.run_health_checks` every ``poke_interval``.

    The event holds the last checks (``ok`` or not); the spec holds connection ids, never secrets.
    """

    def __init__(self, *, spec: dict[str, Any], poke_interval: float = 10.0, timeout: float = 600.0) -> None:
        super().__init__()
        self.spec = spec
        self.poke_interval = poke_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"spec": self.spec, "poke_interval": self.poke_interval, "timeout": self.timeout},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from airflow_checkpoint_provider.sensors.health import run_health_checks

        deadline = time.monotonic() + self.timeout
        while True:
            checks = await sync_to_async(run_health_checks)(self.spec)
            ok = bool(checks) and all(c.ok for c in checks)
            if ok or time.monotonic() + self.poke_interval > deadline:
                yield TriggerEvent({"ok": ok, "checks": [c.to_dict() for c in checks]})
                return
            await asyncio.sleep(self.poke_interval)
