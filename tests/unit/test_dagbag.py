"""Every shipped DAG imports without errors and has the promised shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_checkpoint_provider.core.engines import registry

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
        "params": {k: {"default": p.value, "description": p.description, "title": p.schema.get("title"),
                       "schema": p.schema} for k, p in dag.params.items()},
        "fileloc": dag.fileloc,
        "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
        "teardowns": sorted(t.task_id for t in dag.tasks if t.is_teardown),
        "on_failure": {t.task_id: [type(cb).__name__ for cb in (t.on_failure_callback or [])] for t in dag.tasks},
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
    assert set(bag["dags"]) == {
        "checkpoint_scheduled",
        "checkpoint_pre_migration",
        "checkpoint_pre_deploy",
        "example_migration_after_checkpoint",
        "recovery_lkg",
        "restore_checkpoint",
        "example_resumable_simulation",
        "checkpoint_verify",
        "checkpoint_retention",
        "checkpoint_restore_drill",
    }


def test_scheduled_dag_runs_every_30_minutes_one_at_a_time(bag):
    dag = bag["dags"]["checkpoint_scheduled"]
    assert dag["schedule"] == "*/30 * * * *"
    assert dag["max_active_runs"] == 1
    assert {
        "checkpoint.pg_dump",
        "checkpoint.redis_snapshot",
        "checkpoint.search_snapshot",
        "checkpoint.bundle",
    } <= set(dag["tasks"])
    assert dag["teardowns"] == ["checkpoint.discard_staging"]


def test_every_param_has_a_title_a_description_and_a_default(bag):
    for dag_id, dag in bag["dags"].items():
        for name, p in dag["params"].items():
            assert p["title"] and p["description"], f"{dag_id}.{name} lacks a title or a description"
            assert "default" in p, f"{dag_id}.{name}"


def _nullable(schema) -> bool:
    types = schema.get("type")
    return isinstance(types, list) and "null" in types


def test_no_param_greys_out_the_trigger_button_with_its_default(bag):
    """The form treats a non-nullable field whose value is empty as missing (Trigger disabled)."""
    for dag_id, dag in bag["dags"].items():
        for name, p in dag["params"].items():
            if p["default"] in (None, "", [], {}):
                assert _nullable(p["schema"]), (
                    f"{dag_id}.{name} has the empty default {p['default']!r} but is not nullable"
                )
                assert p["default"] is None, f"{dag_id}.{name}: an empty optional field defaults to None"


def test_components_is_a_multi_select_of_the_stores(bag):
    for dag_id in (
        "checkpoint_scheduled",
        "checkpoint_pre_migration",
        "checkpoint_pre_deploy",
        "recovery_lkg",
        "restore_checkpoint",
    ):
        schema = bag["dags"][dag_id]["params"]["components"]["schema"]
        # Airflow 3.3's form renders an array with `examples` as a multi-select (FieldMultiSelect)
        names = list(registry.names())  # every registered engine, in registry order
        assert schema["type"] == "array" and schema["examples"] == names, dag_id
        assert schema["items"]["enum"] == names
        assert set(schema["values_display"]) == set(names) and schema["minItems"] == 1


def test_connection_id_fields_are_described(bag):
    for dag_id, dag in bag["dags"].items():
        for name, p in dag["params"].items():
            if name.endswith("_conn_id"):
                assert "connection" in p["description"] and "[checkpoint]" in p["description"], (dag_id, name)


def test_capture_dags_offer_the_redis_write_fence_with_its_bound(bag):
    for dag_id in ("checkpoint_scheduled", "checkpoint_pre_migration", "checkpoint_pre_deploy"):
        p = bag["dags"][dag_id]["params"]["redis_fence"]
        assert p["default"] is None and p["schema"]["type"] == ["null", "number"]
        assert p["schema"]["maximum"] == 300 and "CLIENT PAUSE WRITE" in p["description"]
        assert "at most" in p["description"]


def test_pre_deploy_validates_before_checkpointing(bag):
    tasks = bag["dags"]["checkpoint_pre_deploy"]["tasks"]
    assert {"validate.environment", "validate.connections", "validate.config_files", "validate.dependencies"} <= set(
        tasks
    )


def test_recovery_resumes_writers_even_if_the_restore_fails(bag):
    dag = bag["dags"]["recovery_lkg"]
    assert dag["tasks"] == ["drain", "health_check", "restore", "resume"]
    assert dag["teardowns"] == ["resume"]
    assert dag["params"]["dry_run"]["default"] is False


def test_restore_dags_take_no_commands_or_callables_from_the_form(bag):
    for dag_id in ("recovery_lkg", "restore_checkpoint"):
        params = bag["dags"][dag_id]["params"]
        assert not {n for n in params if "command" in n or "callable" in n}, dag_id
        assert params["pause_capture_dags"]["default"] is True
        location = params["search_repository_location"]
        assert _nullable(location["schema"]) and location["default"] is None  # [checkpoint] option unset here


def test_restore_checkpoint_requires_confirmation_and_guards_the_restore(bag):
    dag = bag["dags"]["restore_checkpoint"]
    assert dag["params"]["confirm"]["default"] is None and _nullable(dag["params"]["confirm"]["schema"])
    # the guard's output (the id it checked) is what the restore uses, so the guard runs first
    assert "check_confirmation" in dag["upstream"]["restore"] or "check_confirmation" in dag["upstream"]["drain"]
    assert dag["upstream"]["drain"] == ["check_confirmation"]
    assert dag["teardowns"] == ["resume"]


def test_restore_checkpoint_offers_checkpoints_with_labels(bag):
    p = bag["dags"]["restore_checkpoint"]["params"]
    schema = p["checkpoint_id"]["schema"]
    assert p["checkpoint_id"]["default"] == "last-known-good" and schema["enum"][0] == "last-known-good"
    assert set(schema["values_display"]) == set(schema["enum"])
    assert _nullable(p["other_checkpoint_id"]["schema"])


def test_restore_checkpoint_exposes_the_pg_restore_ownership_switches(bag):
    p = bag["dags"]["restore_checkpoint"]["params"]
    assert p["no_owner"]["default"] is True and p["no_privileges"]["default"] is False


def test_shipped_dag_files_are_thin_calls_of_the_package_factories(bag):
    for dag_id, dag in bag["dags"].items():
        assert dag["fileloc"] == str(REPO / "dags" / f"{dag_id}.py")  # workers re-parse the thin file
    for path in sorted((REPO / "dags").glob("*.py")):
        code = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith(('"""', "#"))]
        assert code == [f"from airflow_checkpoint_provider.dags import {path.stem}", f"dag = {path.stem}()"], path


TWO_LINES = """from airflow_checkpoint_provider.dags import recovery_lkg
dag = recovery_lkg("recovery_lkg_{n}", drain_command="echo drained")
"""


def test_a_pip_user_deploys_a_factory_with_a_two_line_dag_file(tmp_path_factory):
    """What the README tells a pip user to write, loaded from a folder outside the repository."""
    folder = tmp_path_factory.mktemp("user_dags")
    (folder / "mine.py").write_text(TWO_LINES.format(n=1))
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path_factory.mktemp("home2")), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(folder)], env=env, capture_output=True, text=True, cwd=str(folder)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == {} and list(out["dags"]) == ["recovery_lkg_1"]
    assert out["dags"]["recovery_lkg_1"]["tasks"] == ["drain", "health_check", "restore", "resume"]


def test_verify_dag_runs_daily_at_the_configured_level_one_at_a_time(bag):
    dag = bag["dags"]["checkpoint_verify"]
    assert dag["schedule"] == "0 0 * * *" and dag["max_active_runs"] == 1 and dag["tasks"] == ["lkg_age", "verify"]
    assert dag["upstream"] == {"lkg_age": [], "verify": []}  # both leaves: either one fails the run
    assert dag["params"]["level"]["default"] == "standard"
    assert dag["params"]["level"]["schema"]["enum"] == ["basic", "standard", "deep", None]
    assert dag["params"]["checkpoint_id"]["default"] is None
    assert dag["params"]["checkpoint_id"]["schema"]["type"] == ["null", "string"]


NOTIFIERS = """
from airflow.sdk import BaseNotifier


class PagerNotifier(BaseNotifier):
    def notify(self, context):
        pass


def make():
    return [PagerNotifier()]
"""


def test_every_task_of_every_shipped_dag_alerts_through_the_configured_notifiers(tmp_path_factory):
    mod = tmp_path_factory.mktemp("notifiers")
    (mod / "site_alerts.py").write_text(NOTIFIERS)
    env = dict(
        os.environ,
        AIRFLOW_HOME=str(tmp_path_factory.mktemp("home3")),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CHECKPOINT__NOTIFY_ON_FAILURE="site_alerts:make",
        AIRFLOW__CHECKPOINT__NOTIFY_EMAIL="ops@example.com, dba@example.com",
        PYTHONPATH=os.pathsep.join([str(mod), str(REPO)]),
    )
    proc = subprocess.run([sys.executable, "-c", CODE, str(REPO / "dags")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == {} and len(out["dags"]) == 10
    for dag_id, dag in out["dags"].items():
        for task_id, callbacks in dag["on_failure"].items():
            assert callbacks == ["PagerNotifier", "SmtpNotifier"], f"{dag_id}.{task_id}: {callbacks}"


def test_a_notify_on_failure_that_is_not_an_import_path_is_refused_naming_it(monkeypatch):
    from airflow_checkpoint_provider.core.errors import CheckpointError
    from airflow_checkpoint_provider.dags.alerts import alert_args

    monkeypatch.setenv("AIRFLOW__CHECKPOINT__NOTIFY_ON_FAILURE", "site_alerts.make")
    with pytest.raises(CheckpointError, match="'site_alerts.make', not an import path") as caught:
        alert_args()
    assert "package.module:function" in str(caught.value)


def test_factory_notifiers_come_before_the_configured_ones_and_keep_the_other_default_args(monkeypatch):
    from airflow_checkpoint_provider.dags.alerts import alert_args

    monkeypatch.delenv("AIRFLOW__CHECKPOINT__NOTIFY_ON_FAILURE", raising=False)
    monkeypatch.setenv("AIRFLOW__CHECKPOINT__NOTIFY_EMAIL", "ops@example.com")
    mine = object()
    args = alert_args([mine], retries=2)  # type: ignore[list-item]
    assert args["retries"] == 2 and args["on_failure_callback"][0] is mine
    assert type(args["on_failure_callback"][1]).__name__ == "SmtpNotifier"
    assert args["on_failure_callback"][1].to == ["ops@example.com"]
    monkeypatch.delenv("AIRFLOW__CHECKPOINT__NOTIFY_EMAIL")
    assert alert_args(retries=2) == {"retries": 2}  # nothing configured: no callback at all


def test_retention_dag_runs_daily_at_two_utc_and_deletes_unless_a_dry_run(bag):
    dag = bag["dags"]["checkpoint_retention"]
    assert dag["schedule"] == "0 2 * * *" and dag["max_active_runs"] == 1
    assert dag["tasks"] == ["expire", "expire_rollbacks"]
    assert dag["params"]["dry_run"]["default"] is False and dag["params"]["policy"]["default"] is None


def test_drill_dag_runs_weekly_on_the_lkg_with_every_component(bag):
    dag = bag["dags"]["checkpoint_restore_drill"]
    assert dag["schedule"] == "0 0 * * 0" and dag["max_active_runs"] == 1 and dag["tasks"] == ["drill"]
    assert dag["params"]["checkpoint_id"]["default"] == "last-known-good"
    assert dag["params"]["components"]["default"] == list(registry.names())
