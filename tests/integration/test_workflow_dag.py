"""``example_resumable_simulation`` run by Airflow's real scheduler (LocalExecutor, api-server,
dag-processor; runs triggered through the REST API) against real PostgreSQL servers.

* the task process is SIGKILLed in the middle of its loop; Airflow's retry resumes at the next
  year, and ``simulation_log`` (one row per computed year, with the try) proves that the years
  saved before the kill ran exactly once; the result equals an uninterrupted run's;
* a corrupted latest state falls back, a config change is refused, ``force_restart`` starts over
  and ``resume_from`` re-runs from the chosen year;
* two runs of one workflow id are serialized;
* a dropped year table refuses the resume, and ``resume_from`` + ``restore_data`` restores the data
  checkpoint of the year before and re-runs from there, in one run;
* with the PostgreSQL workflow store, the server restarts between the killed attempt and its retry;
* a state that cannot be serialised fails its task at once (no retry), before anything of it is
  written (``workflow_unserializable_state``, a DAG of this module's own).

Airflow runs with ``[workers] state_store_backend`` set to ``CheckpointStateBackend`` and a low
offload threshold, so the workflow's ``task_state_store`` pointer is kept in the checkpoint store
and read back through the backend by every retry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.workflow import FileWorkflowStore
from airflow_checkpoint_provider.workflow import CheckpointStateBackend
from tests.integration.airflow_support import REPO, Airflow, admin_password, airflow_env, free_port, wait
from tests.integration.workflow_support import restart_postgres

pytestmark = pytest.mark.integration

DAG = "example_resumable_simulation"
YEARS = [2025, 2026, 2027, 2028, 2029]
#: the extra time of each year in the runs a test kills: the window in which the kill lands
YEAR_SECONDS = 1.5
UNSERIALIZABLE = "workflow_unserializable_state"
UNSERIALIZABLE_DAG = '''"""Saves a state holding a set at its second step (a test DAG of test_workflow_dag.py)."""
from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def workflow_unserializable_state():
    @task(retries=2, retry_delay=timedelta(seconds=2))
    def save_a_set(**context):
        from airflow_checkpoint_provider.workflow import workflow_checkpoints

        wf = workflow_checkpoints(context, workflow_id="unserializable")
        for step in wf.steps([1, 2]):
            wf.save(step, {"year": step, "seen": [1, 2] if step == 1 else {1, 2}})
        return wf.summary()

    save_a_set()


workflow_unserializable_state()
'''


def _connect(pg: dict[str, Any], db: str) -> psycopg.Connection:
    return psycopg.connect(
        host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname=db, autocommit=True
    )


def _fresh_db(pg: dict[str, Any], db: str) -> str:
    with _connect(pg, "postgres") as conn:
        for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{db}%",)).fetchall():
            conn.execute(f'DROP DATABASE "{row[0]}" WITH (FORCE)')  # and rollback copies of earlier runs
        conn.execute(f'CREATE DATABASE "{db}"')
    return f"postgres://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{db}"


@pytest.fixture(scope="module")
def store_pg(services_module, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A private PostgreSQL for the workflow store, restarted by one test."""
    state = tmp_path_factory.mktemp("wf_store_pg")
    try:
        yield services_module.start(state, only=["postgres"])["postgres"]
    finally:
        services_module.stop(state)


@pytest.fixture(scope="module")
def airflow(pg, store_pg, services, services_module, tmp_path_factory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("wf_airflow_home")
    port = free_port()
    password, passwords = admin_password(home)
    connections = {
        **services_module.connection_env(services),
        "AIRFLOW_CONN_WF_SIM": _fresh_db(pg, "wf_sim"),
        "AIRFLOW_CONN_WF_RESTORE": _fresh_db(pg, "wf_restore"),
        "AIRFLOW_CONN_WF_STORE": _fresh_db(store_pg, "wf_store"),
    }
    dags = home / "dags"  # the shipped example and this module's own DAG
    dags.mkdir()
    shutil.copy(REPO / "dags" / f"{DAG}.py", dags)
    (dags / f"{UNSERIALIZABLE}.py").write_text(UNSERIALIZABLE_DAG)
    env = airflow_env(
        home,
        connections,
        port=port,
        password_file=passwords,
        dags_folder=dags,
        extra={
            "AIRFLOW__CHECKPOINT__TASK_RETRIES": "2",
            "AIRFLOW__CHECKPOINT__RETRY_DELAY": "2",
            "AIRFLOW__WORKERS__STATE_STORE_BACKEND": "airflow_checkpoint_provider.workflow.CheckpointStateBackend",
            "AIRFLOW__CHECKPOINT__TASK_STATE_OFFLOAD_BYTES": "256",  # the workflow's pointer goes to the store
        },
    )
    af = Airflow(
        home,
        env,
        port,
        password,
        components=("api-server", "scheduler", "dag-processor"),
        dag_ids=[DAG, UNSERIALIZABLE],
    )
    try:
        af.start()
        wait("Airflow to be healthy with the simulation DAG parsed", af.ready, timeout=180, interval=1)
        yield af
    except BaseException:
        print(af.logs())
        raise
    finally:
        af.stop()


def _store(af: Airflow) -> FileWorkflowStore:
    return FileWorkflowStore(Store.open(af.env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"]))


def _run(
    af: Airflow, conf: dict[str, Any], *, state: str = "success", dag_id: str = DAG, task_id: str = "simulate"
) -> dict[str, Any]:
    run_id = af.trigger(dag_id, conf)
    run = af.finish(dag_id, run_id)
    if run["state"] != state:
        log = af.task_log(dag_id, run_id, task_id, run["tasks"][task_id][1])
        raise AssertionError(f"run {run_id} ended {run['state']}, expected {state}:\n{log[-5000:]}\n{af.logs()}")
    if state == "success":
        run["result"] = af.xcom(dag_id, run_id, task_id)
    return run


def _log(pg: dict[str, Any], db: str, schema: str) -> list[tuple[int, str, int, int]]:
    with _connect(pg, db) as conn:
        return conn.execute(
            f'SELECT year, run_id, try_number, pid FROM "{schema}".simulation_log ORDER BY started_at'
        ).fetchall()


def _tables(pg: dict[str, Any], db: str, schema: str) -> dict[int, str]:
    with _connect(pg, db) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE 'year_%%'", (schema,)
            ).fetchall()
        ]
        return {
            int(n[5:]): conn.execute(
                f'SELECT count(*) || md5(string_agg(t::text, \',\' ORDER BY employee_id)) FROM "{schema}"."{n}" t'
            ).fetchone()[0]
            for n in names
        }


def _kill_when_year_starts(
    af: Airflow, pg: dict[str, Any], db: str, schema: str, run_id: str, year: int, saved_before: int, saved: Any
) -> int:
    """SIGKILL the task process once it started ``year`` (so ``saved_before`` is saved); returns its pid."""

    def started() -> int | None:
        try:
            rows = [r for r in _log(pg, db, schema) if r[1] == run_id and r[0] == year]
        except psycopg.errors.UndefinedTable:
            return None
        return rows[0][3] if rows else None

    pid = wait(f"run {run_id} to start year {year}", started, timeout=120, interval=0.3)
    assert saved() == saved_before, "the year before should be saved when the next one starts"
    os.kill(pid, signal.SIGKILL)
    return pid


def test_sigkill_mid_loop_retry_resumes_at_the_next_year_and_saved_years_ran_exactly_once(airflow, pg):
    base = {"postgres_conn_id": "wf_sim", "checkpoint_data": False}
    run_id = airflow.trigger(DAG, {**base, "schema": "sim_killed", "year_seconds": YEAR_SECONDS})
    plain_id = airflow.trigger(DAG, {**base, "workflow_id": "uninterrupted", "schema": "sim_plain"})  # meanwhile
    wid = f"{DAG}/{run_id}/simulate"

    def latest_saved() -> int | None:
        entries = [e for e in _store(airflow).entries(wid) if e.header]
        return entries[0].header.step if entries else None

    killed = _kill_when_year_starts(airflow, pg, "wf_sim", "sim_killed", run_id, 2027, 2026, latest_saved)
    run = airflow.finish(DAG, run_id)
    assert run["state"] == "success" and run["tasks"]["simulate"] == ("success", 2), run
    result = airflow.xcom(DAG, run_id, "simulate")
    log = [r for r in _log(pg, "wf_sim", "sim_killed") if r[1] == run_id]
    assert Counter(r[0] for r in log) == {2025: 1, 2026: 1, 2027: 2, 2028: 1, 2029: 1}
    assert [(r[0], r[2]) for r in log] == [(2025, 1), (2026, 1), (2027, 1), (2027, 2), (2028, 2), (2029, 2)]
    assert {r[3] for r in log if r[2] == 1} == {killed} and killed not in {r[3] for r in log if r[2] == 2}
    assert result["resumed_from"] == {"step": 2026, "seq": 2} and result["steps_run"] == [2027, 2028, 2029]
    # the same outcome as the uninterrupted run: the final state and every year's table
    plain = airflow.finish(DAG, plain_id)
    assert plain["state"] == "success" and plain["tasks"]["simulate"] == ("success", 1), plain
    assert result["result"] == airflow.xcom(DAG, plain_id, "simulate")["result"] and result["result"]["years"] == YEARS
    assert _tables(pg, "wf_sim", "sim_killed") == _tables(pg, "wf_sim", "sim_plain") != {}
    # Airflow's task state shows the workflow's progress (what the UI lists for the task instance);
    # with the state backend, Airflow's database holds a reference to the value in the checkpoint store
    entries = airflow.api("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/simulate/state-store")
    stored = {e["key"]: e["value"] for e in entries["task_state_store"]}["workflow_checkpoint"]
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    ref = stored["__airflow_state_ref__"]
    assert ref.startswith("checkpoint-store:task-state/tasks/") and wid not in json.dumps(stored)
    assert (Path(airflow.env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"]) / ref.partition(":")[2]).is_file()
    pointer = CheckpointStateBackend(
        airflow.env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"]
    ).deserialize_task_state_store_from_ref(ref)
    assert pointer["workflow_id"] == wid and pointer["latest"]["step"] == 2029 and pointer["status"] == "completed"


def test_fallback_drift_refusal_force_restart_and_resume_from_through_the_scheduler(airflow, pg):
    base = {"postgres_conn_id": "wf_sim", "checkpoint_data": False, "workflow_id": "drift", "schema": "sim_drift"}
    first = _run(airflow, {**base, "years": [2025, 2026, 2027]})
    assert first["result"]["steps_run"] == [2025, 2026, 2027]
    # a damaged latest state: the next run falls back to 2026 and computes 2027 again
    store = _store(airflow)
    latest = store.entries("drift")[0]
    path = store.fs.local_path(f"{store._dir('drift')}/states/{latest.seq:012d}.state")
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x55
    path.write_bytes(bytes(data))
    second = _run(airflow, base)
    assert second["result"]["fallbacks"][0]["step"] == 2027 and "sha256" in second["result"]["fallbacks"][0]["problem"]
    assert second["result"]["steps_run"] == [2027, 2028, 2029]
    # another growth rate: refused at once (no retry), naming the key
    refused = _run(airflow, {**base, "growth_rate": 0.05}, state="failed")
    assert refused["tasks"]["simulate"] == ("failed", 1)
    text = airflow.task_log(DAG, refused["dag_run_id"], "simulate", 1)
    assert "the config changed since step 2029 was saved" in text and "changed keys: growth_rate" in text
    assert "force_restart=True" in text
    # force_restart starts over with the new config; resume_from re-runs from 2028
    restarted = _run(airflow, {**base, "growth_rate": 0.05, "force_restart": True})
    assert restarted["result"]["steps_run"] == YEARS and restarted["result"]["discarded"] >= 5
    rerun = _run(airflow, {**base, "growth_rate": 0.05, "resume_from": 2028})
    assert rerun["result"]["steps_run"] == [2028, 2029] and rerun["result"]["resumed_from"]["step"] == 2027
    assert rerun["result"]["result"] == restarted["result"]["result"]
    by_run = Counter(r[1] for r in _log(pg, "wf_sim", "sim_drift"))
    assert by_run[refused["dag_run_id"]] == 0 and by_run[rerun["dag_run_id"]] == 2


def test_two_runs_of_one_workflow_are_serialized(airflow, pg):
    years = YEARS[:3]
    conf = {
        "postgres_conn_id": "wf_sim",
        "checkpoint_data": False,
        "workflow_id": "pair",
        "schema": "sim_pair",
        "year_seconds": 1,
        "years": years,
    }
    runs = [airflow.trigger(DAG, conf), airflow.trigger(DAG, conf)]  # both run at once (max_active_runs=4)
    done = [airflow.finish(DAG, r) for r in runs]
    assert [d["state"] for d in done] == ["success", "success"]
    log = _log(pg, "wf_sim", "sim_pair")
    assert Counter(r[0] for r in log) == dict.fromkeys(years, 1)  # every year computed once, by one of them
    ran = [airflow.xcom(DAG, r, "simulate")["steps_run"] for r in runs]
    assert sorted(ran[0] + ran[1]) == years and sorted(map(len, ran)) == [0, 3]


def test_dropped_year_table_refuses_the_resume_and_restore_data_brings_it_back_in_one_run(airflow, pg):
    base = {"postgres_conn_id": "wf_restore", "workflow_id": "restore", "schema": "sim"}
    full = _run(airflow, base)
    before = _tables(pg, "wf_restore", "sim")
    assert sorted(before) == YEARS
    with _connect(pg, "wf_restore") as conn:
        conn.execute('DROP TABLE "sim"."year_2027"')
    refused = _run(airflow, base, state="failed")
    text = airflow.task_log(DAG, refused["dag_run_id"], "simulate", refused["tasks"]["simulate"][1])
    assert re.search(r"step 2027: payroll_cents: saved \d+, now 0, rows: saved \d+, now 0", text), text[-3000:]
    assert "resume_from=2028 with restore_data=True restores the data checkpoint of step 2027" in text
    restored = _run(airflow, {**base, "resume_from": 2028, "restore_data": True})
    result = restored["result"]
    step_2027 = [e for e in _store(airflow).entries("restore") if e.header and e.header.step == 2027][0]
    assert result["restored_data"]["checkpoint_id"] == step_2027.header.data_checkpoint
    assert result["restored_data"]["safety_checkpoint_id"]
    assert result["steps_run"] == [2028, 2029] and result["result"] == full["result"]["result"]
    assert _tables(pg, "wf_restore", "sim") == before  # 2027 is back, 2028 and 2029 computed again
    ran = Counter(r[0] for r in _log(pg, "wf_restore", "sim") if r[1] == restored["dag_run_id"])
    assert ran == {2028: 1, 2029: 1}  # 2027 came back from its data checkpoint, it was not computed again


def test_postgres_workflow_store_survives_a_restart_between_the_killed_attempt_and_its_retry(
    airflow, pg, store_pg, services_module
):
    conf = {
        "postgres_conn_id": "wf_sim",
        "checkpoint_data": False,
        "schema": "sim_pgstore",
        "year_seconds": YEAR_SECONDS,
        "workflow_store": "postgresql",
        "workflow_store_conn_id": "wf_store",
    }
    run_id = airflow.trigger(DAG, conf)
    wid = f"{DAG}/{run_id}/simulate"

    def latest_saved() -> int | None:
        with _connect(store_pg, "wf_store") as conn:
            row = conn.execute(
                "SELECT step FROM workflow_checkpoints WHERE workflow_id = %s ORDER BY seq DESC LIMIT 1", (wid,)
            ).fetchone()
        return row[0] if row else None

    _kill_when_year_starts(airflow, pg, "wf_sim", "sim_pgstore", run_id, 2027, 2026, latest_saved)
    restart_postgres(services_module, store_pg)  # between the killed attempt and its retry
    run = airflow.finish(DAG, run_id)
    assert run["state"] == "success", run
    result = airflow.xcom(DAG, run_id, "simulate")
    assert result["resumed_from"]["step"] == 2026 and result["steps_run"] == [2027, 2028, 2029]
    assert result["store"].startswith("postgresql://") and latest_saved() == 2029
    log = [r for r in _log(pg, "wf_sim", "sim_pgstore") if r[1] == run_id]
    assert Counter(r[0] for r in log) == {2025: 1, 2026: 1, 2027: 2, 2028: 1, 2029: 1}


def test_a_state_that_cannot_be_serialized_fails_the_task_at_once_before_anything_of_it_is_written(airflow):
    run = _run(airflow, {}, state="failed", dag_id=UNSERIALIZABLE, task_id="save_a_set")
    assert run["tasks"]["save_a_set"] == ("failed", 1)  # no retry: another try would fail the same way
    text = airflow.task_log(UNSERIALIZABLE, run["dag_run_id"], "save_a_set", 1)
    assert "the state of step 2['seen'] is a builtins.set, not a JSON value; nothing was saved" in text
    assert "convert sets to lists" in text
    store = _store(airflow)
    assert [e.header.step for e in store.entries("unserializable")] == [1]  # step 1's state, nothing of step 2
    assert store.load("unserializable", 1).state() == {"year": 1, "seen": [1, 2]}
    states = store.fs.local_path(f"{store._dir('unserializable')}/states")
    assert sorted(p.name for p in states.iterdir()) == ["000000000001.state"]  # no temporary file either
