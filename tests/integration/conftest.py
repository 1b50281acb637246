"""Fixtures for running the shipped DAGs end to end against the real services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def airflow_env(services, services_module, tmp_path_factory) -> dict[str, str]:
    """Environment for a migrated sqlite Airflow home whose connections point at the real services."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = dict(os.environ)
    env.update(services_module.connection_env(services))
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CHECKPOINT__STORAGE_ROOT": str(home / "checkpoints_data"),
            "AIRFLOW__CHECKPOINT__SEARCH_REPOSITORY_LOCATION": str(Path(services["opensearch"]["path_repo"]) / "dags"),
            "AIRFLOW__CHECKPOINT__TASK_RETRIES": "0",
            "PYTHONPATH": str(REPO),
        }
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    proc = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env


def run_dag(
    env: dict[str, str],
    dag_id: str,
    conf: dict[str, Any] | None = None,
    *,
    extra_env: dict[str, str] | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """``dag.test()`` in a subprocess; returns the summary printed by scripts/run_dag.py."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_dag.py"), dag_id, json.dumps(conf or {})],
        env={**env, **(extra_env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DAG_RESULT ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"dag {dag_id} runner failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    result = json.loads(lines[-1][len("DAG_RESULT ") :])
    result["log"] = proc.stdout + proc.stderr
    return result
