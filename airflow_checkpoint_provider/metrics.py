"""The provider's metrics, sent through Airflow's own Stats (StatsD, Datadog or OpenTelemetry, as ``[metrics]`` says).

Names (with ``[metrics] statsd_prefix``, ``airflow.`` by default, in front):

- ``checkpoint.capture.duration.<store>``: timer, ms, one capture task of that store;
- ``checkpoint.size_bytes``: gauge, the compressed size of the checkpoint just sealed;
- ``checkpoint.skew_ms``: gauge, the spread between the stores' points in time of that checkpoint;
- ``checkpoint.lkg.age_seconds``: gauge, how old the last-known-good checkpoint is (bundle and verify);
- ``checkpoint.verify.failures``: counter, checkpoints (or damaged entries) a verification found bad;
- ``checkpoint.restore.duration``: timer, ms, one restore that cut over (dry runs are not counted);
- ``checkpoint.drill.result``: gauge, 1 when the drill passed, 0 when it failed.

Metrics never fail a task: a backend that cannot send is logged and ignored.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

CAPTURE_DURATION = "checkpoint.capture.duration"
SIZE_BYTES = "checkpoint.size_bytes"
SKEW_MS = "checkpoint.skew_ms"
LKG_AGE = "checkpoint.lkg.age_seconds"
VERIFY_FAILURES = "checkpoint.verify.failures"
RESTORE_DURATION = "checkpoint.restore.duration"
DRILL_RESULT = "checkpoint.drill.result"


def _send(kind: str, name: str, value: float, tags: dict[str, Any] | None = None) -> None:
    try:
        from airflow.sdk.observability import stats

        if kind == "incr":
            stats.incr(name, int(value), tags=tags)
        elif kind == "gauge":
            stats.gauge(name, value, tags=tags)
        else:
            stats.timing(name, value, tags=tags)
    except Exception as exc:
        log.warning("Metric %s not sent: %s", name, exc)


def capture_duration(store: str, seconds: float) -> None:
    """One capture of ``store`` took ``seconds``."""
    _send("timing", f"{CAPTURE_DURATION}.{store}", seconds * 1000, {"store": store})


def sealed(size_bytes: int, skew_ms: int) -> None:
    """A checkpoint was sealed: its size and the skew between its stores."""
    _send("gauge", SIZE_BYTES, size_bytes)
    _send("gauge", SKEW_MS, skew_ms)


def lkg_age(store: Any, now: datetime | None = None) -> tuple[str, float] | None:
    """Send the age of the last-known-good checkpoint; return (its id, age in seconds), or None without one."""
    from airflow_checkpoint_provider.core.manifest import parse_ts

    pointer = store.lkg()
    if pointer is None or not store.exists(pointer.checkpoint_id):
        return None
    created = parse_ts(store.get(pointer.checkpoint_id).created_at)
    age = max(0.0, ((now or datetime.now(UTC)) - created).total_seconds())
    _send("gauge", LKG_AGE, age)
    return pointer.checkpoint_id, age


def verify_failures(count: int) -> None:
    """A verification found ``count`` bad checkpoints or entries (0 is sent too: the series stays alive)."""
    _send("incr", VERIFY_FAILURES, count)


def restore_duration(seconds: float) -> None:
    """A restore that cut over took ``seconds``."""
    _send("timing", RESTORE_DURATION, seconds * 1000)


def drill_result(ok: bool) -> None:
    """A drill passed (1) or failed (0)."""
    _send("gauge", DRILL_RESULT, 1 if ok else 0, {"outcome": "ok" if ok else "failed"})
