"""checkpoint_pre_deploy: every failed check blocks the deploy and is named; nothing is checkpointed."""

from __future__ import annotations

import os

from airflow_checkpoint_provider.core import Store
from tests.integration.conftest import run_dag


def test_failed_checks_block_the_checkpoint_and_name_what_failed(airflow_env, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    conf = {
        "required_env": ["PATH", "CHECKPOINT_TEST_MISSING_VAR"],
        "required_files": [str(empty), "/nonexistent/app.yaml"],
        "required_packages": {"apache-airflow": "<3.0", "zstandard": ">=0.1"},
        "required_connections": ["postgres_default", "no_such_connection"],
    }
    result = run_dag(airflow_env, "checkpoint_pre_deploy", conf)
    assert result["state"] == "failed"
    tasks = result["tasks"]
    for check in ("environment", "config_files", "dependencies", "connections"):
        assert tasks[f"validate.{check}"] == "failed", tasks
    for task in ("checkpoint.pg_dump", "checkpoint.redis_snapshot", "checkpoint.search_snapshot", "checkpoint.bundle"):
        assert tasks[task] == "upstream_failed", tasks
    log = result["log"]
    assert "deployment check 'env' failed" in log and "CHECKPOINT_TEST_MISSING_VAR is not set" in log
    assert f"config file {empty} is empty" in log and "/nonexistent/app.yaml does not exist" in log
    assert "package apache-airflow is 3.3" in log and "required <3.0" in log
    assert "connection 'no_such_connection' is not defined" in log
    assert "connection 'postgres_default' (" not in log  # the reachable one is not reported
    root = airflow_env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"]
    if os.path.exists(os.path.join(root, "store.json")):
        assert Store.open(root).list(tag="pre-deploy") == []
