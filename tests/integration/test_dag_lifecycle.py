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


#: loaded by the DAG runner's interpreter (``sitecustomize``): drops a table from the drill's PostgreSQL
#: copy right after pg_restore loaded it, before the copy is compared with the manifest
_DROP_FROM_THE_DRILL_COPY = """
import psycopg
from airflow_checkpoint_provider.core.engines.postgres import _load

_verify = _load._LoadMixin._verify


def _dropping(self, item, dbname, *, in_place):
    if "__drill_" in dbname:
        t = self.target
        with psycopg.connect(host=t.host, port=t.port, user=t.user, password=t.password, dbname=dbname,
                             autocommit=True) as conn:
            conn.execute("DROP TABLE public.attachments")
        print("TEST HOOK: dropped public.attachments from", dbname, flush=True)
    return _verify(self, item, dbname, in_place=in_place)


_load._LoadMixin._verify = _dropping
"""


def _checkpoint_of(store, samples, run: str) -> str:
    from airflow_checkpoint_provider.core.engines import registry

    staging = store.staging(f"dag-drill-{run}")
    for name, sample in samples.items():
        registry.get(name).capture(sample.target, staging, **sample.capture_options)
    return store.seal(staging).checkpoint_id


def _drill_setup(request, tmp_path, names=("postgres", "search")):
    """The engines' samples seeded on the real servers, and one checkpoint of them, marked LKG."""
    from tests.integration.engine_samples import SAMPLES

    samples = {n: SAMPLES[n](request, tmp_path) for n in names}
    store = Store.open(tmp_path / "store", create=True)
    for sample in samples.values():
        sample.seed()
    cid = _checkpoint_of(store, samples, "lkg")
    store.mark_lkg(cid)
    return store, samples, cid


def test_drill_dag_drills_the_lkg_and_leaves_production_untouched(airflow_env, request, tmp_path):
    from tests.integration.test_postgres_restore import admin

    store, samples, cid = _drill_setup(request, tmp_path)
    try:
        before = {n: s.state() for n, s in samples.items()}
        session = admin(samples["postgres"].pg, samples["postgres"].db)  # a live session must survive
        pid = session.execute("SELECT pg_backend_pid()").fetchone()[0]
        env = {"AIRFLOW__CHECKPOINT__STORAGE_ROOT": store.root}
        conf = {"checkpoint_id": "last-known-good", "components": ["postgres", "search"]}
        result = run_dag(airflow_env, "checkpoint_restore_drill", conf, extra_env=env)
        assert result["state"] == "success", result["log"][-4000:]
        assert session.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        session.close()
        for name, sample in samples.items():
            assert sample.differences(before[name], sample.state()) == [], name
        state = store.state_of(store.get(cid))
        assert state.label == "drilled" and store.lkg().checkpoint_id == cid
        (record,) = [r for r in store.state_records(cid) if r.kind == "drill"]
        assert record.outcome == "ok" and record.by["dag_id"] == "checkpoint_restore_drill"
        assert set(record.evidence["stores"]) == {"postgres", "search"}
        assert all(record.evidence["stores"][n]["load_and_verify_ms"] >= 0 for n in samples)
        assert result["xcom"]["drill"]["checkpoint_id"] == cid
    finally:
        for sample in samples.values():
            sample.cleanup()


def test_a_table_dropped_from_the_drill_copy_fails_the_run_marks_drill_failed_and_keeps_the_lkg(
    airflow_env, request, tmp_path
):
    from tests.integration.test_lifecycle_drill import _copies

    store, samples, lkg = _drill_setup(request, tmp_path, names=("postgres",))
    sample = samples["postgres"]
    try:
        cid = _checkpoint_of(store, samples, "newer")  # a passed drill of it would move the LKG (drilled)
        history = len(store.lkg_history())
        before = sample.state()
        hook = tmp_path / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(_DROP_FROM_THE_DRILL_COPY)
        env = {
            "AIRFLOW__CHECKPOINT__STORAGE_ROOT": store.root,
            "AIRFLOW__CHECKPOINT__LKG_REQUIRES": "drilled",
            "PYTHONPATH": f"{hook}:{airflow_env['PYTHONPATH']}",
        }
        conf = {"checkpoint_id": cid, "components": ["postgres"]}
        result = run_dag(airflow_env, "checkpoint_restore_drill", conf, extra_env=env)
        assert "TEST HOOK: dropped public.attachments from" in result["log"]  # the fault did happen
        assert result["state"] == "failed" and result["tasks"]["drill"] == "failed"
        assert store.state_of(store.get(cid)).state == "drill_failed"
        (record,) = [r for r in store.state_records(cid) if r.kind == "drill"]
        assert record.outcome == "failed" and "public.attachments is missing" in record.problems[0]["detail"]
        assert store.lkg().checkpoint_id == lkg and len(store.lkg_history()) == history  # the LKG did not move
        assert sample.state() == before  # production byte-identical
        assert _copies(sample, "postgres") == []  # the drill copy was dropped
    finally:
        sample.cleanup()


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
