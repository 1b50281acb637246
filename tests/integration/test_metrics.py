"""The provider's metrics reach a real StatsD listener (a UDP socket on loopback) from real DAG runs.

Each run is ``dag.test()`` in a subprocess whose Airflow has ``[metrics] statsd_on``, so the
metrics go through Airflow's own Stats, exactly as on a worker.
"""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

from tests.integration.conftest import run_dag

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data

pytestmark = pytest.mark.integration

DB = "metrics_app"


class StatsdListener:
    """Every datagram sent to a loopback UDP port, parsed as ``name:value|type`` lines."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines += data.decode().splitlines()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def values(self, name: str) -> list[tuple[float, str]]:
        """(value, type) of every sample of ``airflow.<name>``."""
        out = []
        for line in self.lines:
            stat, _, rest = line.partition(":")
            if stat == f"airflow.{name}":
                value, _, kind = rest.partition("|")
                out.append((float(value), kind.split("|")[0]))
        return out

    def env(self) -> dict[str, str]:
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        }


def test_every_checkpoint_metric_reaches_a_statsd_listener_from_real_runs(airflow_env, services, tmp_path):
    sample_data.seed_postgres(services["postgres"], DB, customers=200, orders=400)
    listener = StatsdListener()
    env = {**listener.env(), "AIRFLOW__CHECKPOINT__STORAGE_ROOT": str(tmp_path / "store")}
    try:
        capture = run_dag(
            airflow_env, "checkpoint_scheduled", {"components": ["postgres", "redis"], "databases": DB}, extra_env=env
        )
        assert capture["state"] == "success", capture["log"][-4000:]
        bundle = capture["xcom"]["checkpoint.bundle"]
        verify = run_dag(airflow_env, "checkpoint_verify", {"level": "standard", "sample": 1}, extra_env=env)
        assert verify["state"] == "success", verify["log"][-4000:]
        drill = run_dag(airflow_env, "checkpoint_restore_drill", {"components": ["postgres"]}, extra_env=env)
        assert drill["state"] == "success", drill["log"][-4000:]
        restore = run_dag(airflow_env, "recovery_lkg", {"components": ["postgres"]}, extra_env=env)
        assert restore["state"] == "success", restore["log"][-4000:]
    finally:
        listener.close()
    for store in ("postgres", "redis"):
        [(ms, kind)] = listener.values(f"checkpoint.capture.duration.{store}")
        assert kind == "ms" and ms > 0
    assert listener.values("checkpoint.size_bytes") == [(float(bundle["size"]), "g")]
    assert listener.values("checkpoint.skew_ms") == [(float(bundle["consistency"]["skew_ms"]), "g")]
    [(age, kind)] = listener.values("checkpoint.lkg.age_seconds")[:1]
    assert kind == "g" and 0 <= age < 600
    assert (0.0, "c") in listener.values("checkpoint.verify.failures")
    assert listener.values("checkpoint.drill.result") == [(1.0, "g")]
    [(ms, kind)] = listener.values("checkpoint.restore.duration")
    assert kind == "ms" and ms > 0
