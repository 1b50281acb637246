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


def test_a_passing_pre_deploy_checkpoint_records_what_the_checks_covered_and_the_plan_lists_what_changed(
    airflow_env, pg, tmp_path
):
    import json
    import sys
    import uuid
    from pathlib import Path

    from airflow_checkpoint_provider.core.recovery import RestoreRequest, restore
    from tests.integration.test_postgres_restore import builder, make_target

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import sample_data as S

    app = tmp_path / "app.yaml"
    app.write_text("workers: 4\n")
    db = f"predeploy_{uuid.uuid4().hex[:8]}"
    S.seed_postgres(pg, db, customers=20, orders=40)
    store = Store.open(tmp_path / "store", create=True)
    conf = {
        "components": ["postgres"],
        "databases": db,
        "required_env": ["PATH"],
        "required_files": [str(app)],
        "required_packages": {"zstandard": ">=0.1"},
    }
    try:
        result = run_dag(
            airflow_env, "checkpoint_pre_deploy", conf, extra_env={"AIRFLOW__CHECKPOINT__STORAGE_ROOT": store.root}
        )
        assert result["state"] == "success", result["log"][-3000:]
        (info,) = store.list(tag="pre-deploy")
        keys = info.manifest.config_keys
        assert {f"deployment.config_files.{app}", "deployment.env.PATH", "deployment.packages.zstandard"} <= set(keys)
        assert os.environ["PATH"] not in json.dumps(info.manifest.to_dict())  # names, never values

        app.write_text("workers: 8\n")
        plan = restore(
            store, RestoreRequest(info.checkpoint_id, components=("postgres",), dry_run=True), builder(make_target(pg))
        ).plan
        assert plan.drift == [f"config deployment.config_files.{app} changed since the checkpoint"]
    finally:
        from tests.integration.test_postgres_restore import admin

        with admin(pg) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
