"""The lifecycle DAGs through Airflow's own runner (dag.test()), each over a store of its own."""

from __future__ import annotations

import pytest

from airflow_checkpoint_provider.core import Store
from tests.integration.conftest import run_dag
from tests.unit.core.helpers import archive_path, flip_byte, make_checkpoint, member_data_offsets

pytestmark = pytest.mark.integration


def test_verify_dag_marks_a_damaged_lkg_corrupt_falls_back_and_fails_the_run(airflow_env, tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    older = make_checkpoint(store, run="older")
    lkg = make_checkpoint(store, run="lkg")
    store.mark_lkg(older.checkpoint_id)
    store.mark_lkg(lkg.checkpoint_id)
    env = {"AIRFLOW__CHECKPOINT__STORAGE_ROOT": store.root}
    path = archive_path(store, lkg.checkpoint_id)
    offset, size = member_data_offsets(path)[lkg.artifacts[0].member]
    flip_byte(path, offset + size // 2)
    damaged = run_dag(airflow_env, "checkpoint_verify", {"level": "standard", "sample": 5}, extra_env=env)
    assert damaged["state"] == "failed" and damaged["tasks"]["verify"] == "failed"
    assert f"the last-known-good {lkg.checkpoint_id} fell back to {older.checkpoint_id}" in damaged["log"]
    assert store.lkg().checkpoint_id == older.checkpoint_id
    assert store.state_of(store.get(lkg.checkpoint_id)).state == "corrupt"
    [record] = [r for r in store.state_records(lkg.checkpoint_id) if r.outcome == "corrupt"]
    assert record.by["dag_id"] == "checkpoint_verify" and record.problems[0]["kind"] == "checksum_mismatch"
    # the older one was in the run's rolling sample and stays good
    assert store.state_of(store.get(older.checkpoint_id)).label == "verified:standard"


def test_retention_dag_deletes_what_no_rule_keeps_and_never_the_lkg(airflow_env, tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    ms = [make_checkpoint(store, run=f"r{i}") for i in range(4)]
    store.mark_lkg(ms[0].checkpoint_id)
    env = {"AIRFLOW__CHECKPOINT__STORAGE_ROOT": store.root}
    result = run_dag(airflow_env, "checkpoint_retention", {"policy": '{"keep_last": 1}'}, extra_env=env)
    assert result["state"] == "success", result["log"][-3000:]
    report = result["xcom"]["expire"]
    assert report["executed"] is True and sorted(report["plan"]["delete"]) == sorted(
        [ms[1].checkpoint_id, ms[2].checkpoint_id]
    )
    assert {i.checkpoint_id for i in store.list()} == {ms[0].checkpoint_id, ms[3].checkpoint_id}
    assert f"keep {ms[0].checkpoint_id}: protected: last-known-good" in result["log"]


def test_verify_dag_with_a_checkpoint_id_verifies_only_that_one_at_the_chosen_level(airflow_env, tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    asked = make_checkpoint(store, run="asked")
    other = make_checkpoint(store, run="other")
    env = {"AIRFLOW__CHECKPOINT__STORAGE_ROOT": store.root}
    result = run_dag(
        airflow_env, "checkpoint_verify", {"checkpoint_id": asked.checkpoint_id, "level": "basic"}, extra_env=env
    )
    assert result["state"] == "success", result["log"][-3000:]
    report = result["xcom"]["verify"]
    assert [(r["checkpoint_id"], r["why"], r["level"]) for r in report["verified"]] == [
        (asked.checkpoint_id, "requested", "basic")
    ]
    assert store.state_of(store.get(asked.checkpoint_id)).level == "basic"
    assert store.state_of(store.get(other.checkpoint_id)).state == "sealed"  # not in this run
