"""Every shipped DAG imports without errors and has the promised shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CODE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "tasks": sorted(dag.task_ids),
        "max_active_runs": dag.max_active_runs,
        "schedule": str(getattr(dag.timetable, "expression", None)),
        "params": {k: {"default": p.value, "description": p.description, "title": p.schema.get("title")}
                   for k, p in dag.params.items()},
        "teardowns": sorted(t.task_id for t in dag.tasks if t.is_teardown),
    }
print(json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path_factory.mktemp("home")), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    env.pop("AIRFLOW__CHECKPOINT__SCHEDULE", None)
    proc = subprocess.run([sys.executable, "-c", CODE, str(REPO / "dags")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_dag_imports_without_errors(bag):
    assert bag["errors"] == {}
    assert set(bag["dags"]) == {"checkpoint_scheduled", "checkpoint_pre_migration", "checkpoint_pre_deploy",
                                "example_migration_after_checkpoint", "recovery_lkg", "restore_checkpoint"}


def test_scheduled_dag_runs_every_30_minutes_one_at_a_time(bag):
    dag = bag["dags"]["checkpoint_scheduled"]
    assert dag["schedule"] == "*/30 * * * *"
    assert dag["max_active_runs"] == 1
    assert {"checkpoint.pg_dump", "checkpoint.redis_snapshot", "checkpoint.search_snapshot",
            "checkpoint.bundle"} <= set(dag["tasks"])
    assert dag["teardowns"] == ["checkpoint.discard_staging"]


def test_every_param_has_a_description_or_title_and_a_default(bag):
    for dag_id, dag in bag["dags"].items():
        for name, p in dag["params"].items():
            assert p["description"] or p["title"], f"{dag_id}.{name} has no description"
            assert "default" in p, f"{dag_id}.{name}"


def test_pre_deploy_validates_before_checkpointing(bag):
    tasks = bag["dags"]["checkpoint_pre_deploy"]["tasks"]
    assert {"validate.environment", "validate.connections", "validate.config_files",
            "validate.dependencies"} <= set(tasks)


def test_recovery_resumes_writers_even_if_the_restore_fails(bag):
    dag = bag["dags"]["recovery_lkg"]
    assert dag["tasks"] == ["drain", "health_check", "restore", "resume"]
    assert dag["teardowns"] == ["resume"]
    assert dag["params"]["dry_run"]["default"] is False


def test_restore_checkpoint_requires_confirmation(bag):
    dag = bag["dags"]["restore_checkpoint"]
    assert "check_confirmation" in dag["tasks"]
    assert dag["params"]["confirm"]["default"] == ""
