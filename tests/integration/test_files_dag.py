"""The files engine in the ready-made DAGs, end to end through dag.test() on a real Airflow home.

Without a files connection the capture is skipped and the checkpoint of the other stores goes
on; with one, ``checkpoint_scheduled`` captures the directory and ``restore_checkpoint`` brings it
back side by side, checked by the health sensor.
"""

from __future__ import annotations

import json

import pytest

from airflow_checkpoint_provider.core import Store
from tests.integration.conftest import run_dag
from tests.unit.core.engines.files.helpers import damage, make_tree, siblings, state

pytestmark = pytest.mark.integration


def _store(env) -> Store:
    return Store.open(env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"])


def test_without_a_files_connection_the_capture_is_skipped_and_the_checkpoint_goes_on(airflow_env):
    result = run_dag(airflow_env, "checkpoint_scheduled", {"components": ["files", "redis"], "mark_lkg": False})
    assert result["state"] == "success", result["tasks"]
    assert result["tasks"]["checkpoint.files_snapshot"] == "skipped"
    assert "names a directory to checkpoint, so the files capture is skipped" in result["log"]
    cid = result["xcom"]["checkpoint.bundle"]["checkpoint_id"]
    assert set(_store(airflow_env).get(cid).manifest.stores()) == {"redis"}


def test_a_files_connection_that_is_not_defined_fails_when_named_in_the_form(airflow_env):
    result = run_dag(
        airflow_env,
        "checkpoint_scheduled",
        {"components": ["files"], "mark_lkg": False, "files_conn_id": "no_such_files"},
    )
    assert result["state"] == "failed" and result["tasks"]["checkpoint.files_snapshot"] == "failed"
    assert "no_such_files" in result["log"]


def test_scheduled_checkpoint_of_a_directory_and_its_restore(airflow_env, tmp_path):
    root = tmp_path / "srv" / "uploads"
    make_tree(root)
    original = state(root)
    conn = {"AIRFLOW_CONN_FILES_DEFAULT": json.dumps({"conn_type": "fs", "extra": {"path": str(root)}})}
    result = run_dag(
        airflow_env,
        "checkpoint_scheduled",
        {"components": ["files"], "mark_lkg": False, "files_consistency": "detect"},
        extra_env=conn,
    )
    assert result["state"] == "success", (result["tasks"], result["log"][-4000:])
    cid = result["xcom"]["checkpoint.bundle"]["checkpoint_id"]
    manifest = _store(airflow_env).get(cid).manifest
    assert set(manifest.stores()) == {"files"}
    assert sorted(a.kind for a in manifest.artifacts) == ["files/list", "files/tar"]
    assert result["xcom"]["checkpoint.files_snapshot"]["config"]["consistency"] == "detect"

    damage(root)
    result = run_dag(
        airflow_env,
        "restore_checkpoint",
        {"checkpoint_id": cid, "confirm": cid, "components": ["files"], "pause_capture_dags": False},
        extra_env=conn,
    )
    assert result["state"] == "success", (result["tasks"], result["log"][-5000:])
    assert result["tasks"]["health_check"] == "success"
    assert state(root) == original
    [rollback] = result["xcom"]["restore"]["outcomes"][0]["rollback"]
    assert siblings(root) == [rollback.rsplit("/", 1)[-1]]
