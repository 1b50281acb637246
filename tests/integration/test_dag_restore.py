"""recovery_lkg and restore_checkpoint end to end through dag.test(), on real servers.

Seed, checkpoint (LKG), damage every store, recover, and compare the data exactly:
every table row, every Redis key with type, value and TTL, every search document.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from airflow_checkpoint_provider.core import Store
from tests.integration.conftest import run_dag

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data

DB = "restore_app"
PREFIX = "restoretest-"


def _store(env) -> Store:
    return Store.open(env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"])


def _state(services, indices, dbs):
    return {
        "postgres": sample_data.state_postgres(services["postgres"], DB),
        "redis": sample_data.state_redis(services["redis"], dbs=dbs),
        "search": sample_data.state_search(services["opensearch"]["url"], indices),
    }


def _assert_same(before, after):
    assert after["postgres"] == before["postgres"]
    assert sample_data.same_redis_state(before["redis"], after["redis"]) == []
    assert after["search"] == before["search"]


def _damage(services, indices):
    with sample_data.pg_connect(services["postgres"], DB) as conn:
        conn.execute("DROP TABLE IF EXISTS attachments")
        conn.execute("DELETE FROM orders WHERE id % 3 = 0")
        conn.execute("INSERT INTO customers VALUES (999999, 'junk@example.com', '2026-01-01', NULL)")
    r = sample_data.redis_client(services["redis"])
    r.delete("hash:big", "stream:events", "list:small")
    r.set("junk", "x")
    r.persist("session:1")
    sample_data.redis_client(services["redis"], 1).flushdb()
    url = services["opensearch"]["url"]
    httpx.delete(f"{url}/{indices[0]}")
    httpx.post(f"{url}/{indices[1]}/_doc/junk?refresh=true", json={"n": -1, "name": "junk"}).raise_for_status()


@pytest.fixture(scope="module")
def lkg(airflow_env, services):
    """Seeded stores and a verified LKG checkpoint of them; returns (checkpoint id, indices, state)."""
    sample_data.seed_postgres(services["postgres"], DB)
    sample_data.seed_redis(services["redis"])
    indices = sample_data.seed_search(services["opensearch"]["url"], prefix=PREFIX)
    result = run_dag(airflow_env, "checkpoint_scheduled", {"databases": DB, "search_indices": f"{PREFIX}*"})
    assert result["state"] == "success", result["tasks"]
    cid = result["xcom"]["checkpoint.bundle"]["checkpoint_id"]
    dbs = range(2)
    return cid, indices, dbs, _state(services, indices, dbs)


RESTORE_CONF = {"databases": DB}


def test_recovery_lkg_restores_every_store_exactly(airflow_env, services, lkg):
    cid, indices, dbs, original = lkg
    _damage(services, indices)
    assert _state(services, indices, dbs) != original
    result = run_dag(airflow_env, "recovery_lkg", {})
    assert result["state"] == "success", (result["tasks"], result["log"][-5000:])
    assert result["tasks"]["health_check"] == "success" and result["tasks"]["resume"] == "success"
    _assert_same(original, _state(services, indices, dbs))
    report = result["xcom"]["restore"]
    assert report["checkpoint_id"] == cid and report["health"]["ok"] is True
    # the health sensor checked what the restore loaded: every db's keys, every table, every index
    expected = report["expectations"]
    assert expected["redis"]["keys"] == {str(db): len(keys) for db, keys in original["redis"].items()}
    assert set(expected["search"]["indices"]) == set(indices)
    assert result["xcom"]["health_check"]["ok"] is True
    assert {o["component"] for o in report["outcomes"]} == {"postgres", "redis", "search"}
    store = _store(airflow_env)
    safety = store.get(report["safety_checkpoint_id"])
    assert "safety" in safety.tags and f"before-restore-of:{cid}" in safety.tags
    audit = store.audit_log()[0]
    assert audit["status"] == "restored" and audit["checkpoint_id"] == cid
    assert audit["dag_id"] == "recovery_lkg" and audit["health"]["ok"] is True
    assert audit["components"] == ["postgres", "redis", "search"]  # what it held; files was asked for too
    assert set(audit["requested_components"]) == {"postgres", "redis", "search", "files"}


def test_dry_run_changes_nothing(airflow_env, services, lkg):
    cid, indices, dbs, _original = lkg
    _damage(services, indices)
    before = _state(services, indices, dbs)
    checkpoints_before = [i.checkpoint_id for i in _store(airflow_env).list()]
    result = run_dag(airflow_env, "restore_checkpoint", {"checkpoint_id": cid, "dry_run": True})
    assert result["state"] == "success", (result["tasks"], result["log"][-6000:])
    assert result["tasks"]["health_check"] == "skipped"
    assert result["log"].count("restore plan for") == 1  # the plan is logged once
    plan = result["xcom"]["restore"]["plan"]
    assert {i["component"] for i in plan["items"]} == {"postgres", "redis", "search"}
    assert any(i["action"] == "replace" for i in plan["items"])
    after = _state(services, indices, dbs)
    assert after["postgres"] == before["postgres"] and after["search"] == before["search"]
    assert sample_data.same_redis_state(before["redis"], after["redis"]) == []
    assert [i.checkpoint_id for i in _store(airflow_env).list()] == checkpoints_before  # no safety checkpoint
    assert _store(airflow_env).audit_log()[0]["status"] == "planned"
    # the dropped table is drift the restore undoes: a warning in the plan, the log and the audit
    line = "table public.attachments was removed since the checkpoint; the restore brings it back"
    assert [d for d in plan["drift"] if line in d] and plan["drift_accepted"] is False
    assert "DRIFT: postgres: " in result["log"] and line in result["log"]
    audit = _store(airflow_env).audit_log()[0]
    assert audit["allow_drift"] is False and audit["plan"]["drift"] == plan["drift"]
    accepted = run_dag(airflow_env, "restore_checkpoint", {"checkpoint_id": cid, "dry_run": True, "allow_drift": True})
    assert accepted["state"] == "success" and accepted["xcom"]["restore"]["plan"]["drift_accepted"] is True
    assert "drift (accepted): postgres: " in accepted["log"]
    audit = [a for a in _store(airflow_env).audit_log() if a.get("run_id") == accepted["run_id"]][0]
    assert audit["allow_drift"] is True and audit["plan"]["drift_accepted"] is True


def test_destructive_restore_needs_confirmation(airflow_env, services, lkg):
    cid, indices, dbs, _original = lkg
    before = _state(services, indices, dbs)
    result = run_dag(airflow_env, "restore_checkpoint", {"checkpoint_id": cid, "confirm": "yes please"})
    assert result["state"] == "failed"
    assert result["tasks"]["check_confirmation"] == "failed" and result["tasks"]["restore"] == "upstream_failed"
    assert "does not equal the checkpoint id" in result["log"]
    after = _state(services, indices, dbs)
    assert after["postgres"] == before["postgres"] and after["search"] == before["search"]


def test_restore_postgres_into_another_database(airflow_env, services, lkg):
    cid, indices, dbs, original = lkg
    current = sample_data.state_postgres(services["postgres"], DB)
    copy = "restore_app_copy"
    result = run_dag(
        airflow_env,
        "restore_checkpoint",
        {
            "checkpoint_id": cid,
            "confirm": cid,
            "components": ["postgres"],
            "rename_databases": {DB: copy},
            "safety_checkpoint": False,
        },
    )
    assert result["state"] == "success", (result["tasks"], result["log"][-4000:])
    assert sample_data.state_postgres(services["postgres"], copy) == original["postgres"]
    assert sample_data.state_postgres(services["postgres"], DB) == current  # the original is untouched


def test_corrupt_archive_is_refused_and_nothing_changes(airflow_env, services, lkg, tmp_path):
    import shutil
    import tarfile

    cid, indices, dbs, _original = lkg
    store = _store(airflow_env)
    path = Path(store.root) / "checkpoints" / f"{cid}.tar"
    backup = tmp_path / "backup.tar"
    shutil.copy(path, backup)
    before = _state(services, indices, dbs)
    try:
        with tarfile.open(path) as tf:
            member = next(m for m in tf.getmembers() if m.name.startswith("artifacts/postgres/"))
        with open(path, "r+b") as f:
            f.seek(member.offset_data + member.size // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
        result = run_dag(airflow_env, "restore_checkpoint", {"checkpoint_id": cid, "confirm": cid})
        assert result["state"] == "failed"
        assert result["tasks"]["restore"] == "failed"
        assert "failed verification" in result["log"] and member.name in result["log"]
        after = _state(services, indices, dbs)
        assert after["postgres"] == before["postgres"] and after["search"] == before["search"]
        assert sample_data.same_redis_state(before["redis"], after["redis"]) == []
        assert store.audit_log()[0]["status"] == "failed"
    finally:
        shutil.copy(backup, path)


def _reseal(store: Store, cid: str, new_id: str) -> str:
    """The same artifacts sealed again under another id (a store may hold any valid id)."""
    from dataclasses import asdict

    from airflow_checkpoint_provider.core import staging_key

    staging = store.staging(staging_key("reseal", new_id))
    for art in store.get(cid).manifest.artifacts:
        with store.open_artifact(cid, art.name, decompress=False) as f:
            store.fs.write_bytes(staging.data_rel(art.name), f.read())
        store.fs.write_bytes(staging.desc_rel(art.name), json.dumps(asdict(art), sort_keys=True).encode())
    return store.seal(staging, checkpoint_id=new_id).checkpoint_id


def _airflow(env, *args: str) -> str:
    import subprocess

    airflow = str(Path(sys.executable).parent / "airflow")
    proc = subprocess.run([airflow, *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_checkpoint_id_1_000_is_restored_as_1_000_not_as_1000(airflow_env, services, lkg):
    """Natively rendered templates turn '1_000' into the number 1000; the guard's id reaches the restore intact."""
    cid, *_ = lkg
    store = _store(airflow_env)
    for new_id in ("1000", "1_000"):
        if not store.exists(new_id):
            _reseal(store, cid, new_id)
    result = run_dag(
        airflow_env, "restore_checkpoint", {"other_checkpoint_id": "1_000", "dry_run": True, "components": ["redis"]}
    )
    assert result["state"] == "success", (result["tasks"], result["log"][-4000:])
    assert result["xcom"]["check_confirmation"] == "1_000"
    assert result["xcom"]["restore"]["checkpoint_id"] == "1_000"
    audit = store.audit_log()[0]
    assert audit["requested_checkpoint"] == "1_000" and audit["checkpoint_id"] == "1_000"


def test_dry_run_whose_plan_has_a_problem_fails_and_is_audited_as_refused(airflow_env, services, lkg):
    cid, *_ = lkg
    url = services["opensearch"]["url"]
    repo = httpx.get(f"{url}/_snapshot/checkpoints").json()["checkpoints"]
    httpx.delete(f"{url}/_snapshot/checkpoints").raise_for_status()  # unregistered; the snapshots stay on disk
    try:
        refused = run_dag(
            airflow_env,
            "restore_checkpoint",
            {"checkpoint_id": cid, "dry_run": True, "components": ["search"], "search_repository_location": None},
        )
        # the same dry run with the repository location: the restore would register the repository
        located = run_dag(
            airflow_env, "restore_checkpoint", {"checkpoint_id": cid, "dry_run": True, "components": ["search"]}
        )
    finally:
        httpx.put(f"{url}/_snapshot/checkpoints", json=repo).raise_for_status()
    assert refused["state"] == "failed" and refused["tasks"]["restore"] == "failed"
    assert refused["tasks"]["resume"] == "success"
    log = refused["log"]
    assert log.count("restore plan for") == 1  # logged once
    problem = log.index("PROBLEM: snapshot repository 'checkpoints' is not registered")
    assert log.index("restore plan for") < problem < log.index("HINT: nothing was changed")
    audit = [a for a in _store(airflow_env).audit_log() if a.get("run_id") == refused["run_id"]][0]
    assert audit["status"] == "refused" and audit["plan"]["problems"]
    assert located["state"] == "success", (located["tasks"], located["log"][-4000:])
    notes = [n for i in located["xcom"]["restore"]["plan"]["items"] for n in i["notes"]]
    assert any("is not registered yet: the restore registers" in n for n in notes), notes


def test_no_owner_from_the_form_reaches_the_postgres_restore(airflow_env, services, lkg):
    cid, *_ = lkg
    notes = {}
    for no_owner in (True, False):
        result = run_dag(
            airflow_env,
            "restore_checkpoint",
            {
                "checkpoint_id": cid,
                "dry_run": True,
                "components": ["postgres"],
                "no_owner": no_owner,
                "no_privileges": True,
            },
        )
        assert result["state"] == "success", (result["tasks"], result["log"][-4000:])
        notes[no_owner] = [n for i in result["xcom"]["restore"]["plan"]["items"] for n in i["notes"]]
    assert any("(no_owner=True)" in n for n in notes[True])
    assert not any("(no_owner=True)" in n for n in notes[False])


def test_recovery_pauses_the_capture_dags_and_resumes_only_those_it_paused(airflow_env, services, lkg, tmp_path):
    _airflow(airflow_env, "dags", "unpause", "checkpoint_scheduled")
    marker = tmp_path / "from-the-conf"
    # a shell command in the run's conf is never run: commands come from the DAG file or [checkpoint]
    result = run_dag(
        airflow_env,
        "recovery_lkg",
        {"components": ["redis"], "drain_command": f"touch {marker}", "resume_command": f"touch {marker}"},
    )
    assert result["state"] == "success", (result["tasks"], result["log"][-4000:])
    assert not marker.exists()
    # checkpoint_scheduled was running unpaused: paused during the restore, then unpaused; the other
    # capture DAGs (paused, or never deployed in this home) were left as they were
    assert result["xcom"]["drain"]["paused"] == ["checkpoint_scheduled"]
    assert result["xcom"]["resume"]["unpaused"] == ["checkpoint_scheduled"]
    listed = _airflow(airflow_env, "dags", "list", "-o", "json").strip().splitlines()[-1]
    dags = {d["dag_id"]: d["is_paused"] for d in json.loads(listed)}
    assert str(dags["checkpoint_scheduled"]).lower() == "false"
    assert "Paused DAG checkpoint_scheduled (through the metadata database)" in result["log"]


def test_a_dry_run_drains_nothing(airflow_env, services, lkg, tmp_path):
    result = run_dag(
        airflow_env,
        "recovery_lkg",
        {"dry_run": True},
        extra_env={"AIRFLOW__CHECKPOINT__DRAIN_COMMAND": f"touch {tmp_path / 'drained'}"},
    )
    assert result["state"] == "success", (result["tasks"], result["log"][-4000:])
    assert result["xcom"]["drain"] == {"action": "drain", "dry_run": True, "paused": []}
    assert not (tmp_path / "drained").exists()
