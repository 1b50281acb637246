"""The user's path under fire: recovery_lkg SIGKILLed at random moments, captures racing a recovery,
and killed captures, all through the shipped DAGs (dag.test() in a subprocess) on the real servers.

After every kill the next run heals: the data is exactly the LKG's, and nothing is left behind
(no journal, no lease, no side-by-side copy, no claimed spare db, no write-blocked index, no
staging area). ``CHECKPOINT_RANDOM_KILLS`` sets how many random kills run (2 here by default;
``scripts/random_kills.sh`` runs 20), ``CHECKPOINT_KILL_SEED`` makes a run repeatable.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.journal import open_journals
from airflow_checkpoint_provider.core.lease import read_leases
from tests.integration.conftest import REPO, run_dag

sys.path.insert(0, str(REPO / "scripts"))
import sample_data

pytestmark = pytest.mark.integration

DB = "kill_app"
PREFIX = "killtest-"
DBS = range(2)
KILLS = int(os.environ.get("CHECKPOINT_RANDOM_KILLS", "2"))
SEED = int(os.environ.get("CHECKPOINT_KILL_SEED", str(int(time.time()))))
CAPTURE_CONF = {"databases": DB, "search_indices": f"{PREFIX}*"}


def _state(services: dict[str, Any], indices: list[str]) -> dict[str, Any]:
    return {
        "postgres": sample_data.state_postgres(services["postgres"], DB),
        "redis": sample_data.state_redis(services["redis"], dbs=DBS),
        "search": sample_data.state_search(services["opensearch"]["url"], indices),
    }


def _differs(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The stores whose data differ between two states ([] when all are exactly equal)."""
    out = []
    if a["postgres"] != b["postgres"]:
        out.append(
            "postgres: "
            + ", ".join(
                t
                for t in sorted(set(a["postgres"]) | set(b["postgres"]))
                if a["postgres"].get(t) != b["postgres"].get(t)
            )
        )
    redis = sample_data.same_redis_state(a["redis"], b["redis"])
    if redis:
        out.append(f"redis: {redis[:5]}")
    if a["search"] != b["search"]:
        out.append(
            "search: "
            + ", ".join(
                i for i in sorted(set(a["search"]) | set(b["search"])) if a["search"].get(i) != b["search"].get(i)
            )
        )
    return out


def _damage(services: dict[str, Any], indices: list[str], n: int) -> None:
    with sample_data.pg_connect(services["postgres"], DB) as conn:
        conn.execute("DROP TABLE IF EXISTS attachments")
        conn.execute("DELETE FROM orders WHERE id %% %s = 0" % (n % 5 + 2))
        conn.execute("INSERT INTO customers VALUES (%s, 'junk@example.com', '2026-01-01', NULL)", (900000 + n,))
    r = sample_data.redis_client(services["redis"])
    r.delete("hash:big", "list:small")
    r.set(f"junk:{n}", "x")
    url = services["opensearch"]["url"]
    httpx.delete(f"{url}/{indices[0]}")
    httpx.post(f"{url}/{indices[1]}/_doc/junk{n}?refresh=true", json={"n": -n, "name": "junk"}).raise_for_status()


def _spawn(env: dict[str, str], dag_id: str, conf: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "run_dag.py"), dag_id, json.dumps(conf)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the run and everything it started in its session (pg_restore, pg_dump...)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=60)


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=900)
    lines = [line for line in out.splitlines() if line.startswith("DAG_RESULT ")]
    assert lines, out[-5000:]
    return {**json.loads(lines[-1][len("DAG_RESULT ") :]), "log": out}


def _allows_connections(pg: dict[str, Any]) -> bool:
    with psycopg.connect(
        host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname="postgres", autocommit=True
    ) as conn:
        row = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (DB,)).fetchone()
    return bool(row and row[0])


def _leftovers(services: dict[str, Any], store: Store) -> list[str]:
    """Everything a restore or capture may leave behind, named."""
    out = [f"journal {j}" for j in open_journals(store.fs)]
    out += [f"lease {r.key} of {r.holder}" for r in read_leases(store.fs)]
    out += [f"staging/{e}" for e in store.fs.listdir("staging")]
    pg = services["postgres"]
    with psycopg.connect(
        host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname="postgres", autocommit=True
    ) as conn:
        out += [
            f"database {r[0]}"
            for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{DB}__restoring%",))
        ]
    url = services["opensearch"]["url"]
    rows = httpx.get(
        f"{url}/_cat/indices/{PREFIX}*", params={"format": "json", "h": "index", "expand_wildcards": "all"}
    ).json()
    out += [f"index {r['index']}" for r in rows if "__restoring" in r["index"]]
    settings = httpx.get(f"{url}/{PREFIX}*/_settings/index.blocks.*", params={"flat_settings": "true"}).json()
    out += [
        f"write block on {i}"
        for i, s in settings.items()
        if str(s.get("settings", {}).get("index.blocks.write")).lower() == "true" and "__rollback_" not in i
    ]
    r = sample_data.redis_client(services["redis"])
    for db in r.info("keyspace"):
        n = int(db[2:])
        if n not in DBS and _loading_claim(services, n):
            out.append(f"redis db{n} holds a side-by-side copy of a dead restore")
    return out


def _loading_claim(services: dict[str, Any], db: int) -> bool:
    from airflow_checkpoint_provider.core.engines import redis as R
    from airflow_checkpoint_provider.core.engines.targets import RedisTarget

    rs = services["redis"]
    target = RedisTarget(host=rs["host"], port=rs["port"], password=rs.get("password"))
    return any(str(c.get("state")) == "loading" and int(c.get("db", -1)) == db for c in R.list_rollbacks(target))


@pytest.fixture(scope="module")
def world(airflow_env, services):
    sample_data.seed_postgres(services["postgres"], DB)
    sample_data.seed_redis(services["redis"])
    indices = sample_data.seed_search(services["opensearch"]["url"], prefix=PREFIX)
    result = run_dag(airflow_env, "checkpoint_scheduled", CAPTURE_CONF)
    assert result["state"] == "success", result["tasks"]
    store = Store.open(airflow_env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"])
    return {
        "indices": indices,
        "original": _state(services, indices),
        "store": store,
        "lkg": result["xcom"]["checkpoint.bundle"]["checkpoint_id"],
    }


def test_random_kills_of_recovery_lkg_are_healed_by_the_next_run(airflow_env, services, world):
    rng = random.Random(SEED)
    print(f"CHECKPOINT_KILL_SEED={SEED}")
    indices, original, store = world["indices"], world["original"], world["store"]
    _damage(services, indices, 0)
    t0 = time.monotonic()
    first = run_dag(airflow_env, "recovery_lkg", {})
    duration = time.monotonic() - t0
    assert first["state"] == "success", first["log"][-5000:]
    assert _differs(_state(services, indices), original) == []
    for n in range(1, KILLS + 1):
        _damage(services, indices, n)
        damaged = _state(services, indices)
        proc = _spawn(airflow_env, "recovery_lkg", {})
        delay = rng.uniform(0.5, duration)
        time.sleep(delay)
        _kill(proc)
        # right after the kill: PostgreSQL lets clients in (the guard acts within moments), and
        # the data is one of the two states
        deadline = time.monotonic() + 15
        while not _allows_connections(services["postgres"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _allows_connections(services["postgres"]), f"kill {n} after {delay:.1f}s (seed {SEED})"
        now = sample_data.state_postgres(services["postgres"], DB)
        assert now in (damaged["postgres"], original["postgres"]), f"kill {n} after {delay:.1f}s (seed {SEED})"
        _fail_running_runs(airflow_env, "recovery_lkg")  # what the scheduler does with a killed task's run
        healed = run_dag(airflow_env, "recovery_lkg", {})
        assert healed["state"] == "success", (n, delay, SEED, healed["tasks"], _errors(healed["log"]))
        assert _differs(_state(services, indices), original) == [], f"kill {n} after {delay:.1f}s (seed {SEED})"
        assert _leftovers(services, store) == [], f"kill {n} after {delay:.1f}s (seed {SEED})"


def test_captures_started_with_a_recovery_never_make_a_half_restored_state_last_known_good(
    airflow_env, services, world
):
    indices, original, store = world["indices"], world["original"], world["store"]
    _damage(services, indices, 99)
    procs = [
        _spawn(airflow_env, "checkpoint_scheduled", CAPTURE_CONF),
        _spawn(airflow_env, "recovery_lkg", {}),
        _spawn(airflow_env, "checkpoint_scheduled", CAPTURE_CONF),
    ]
    results = [_result(p) for p in procs]
    assert results[1]["state"] == "success", results[1]["log"][-6000:]
    assert _differs(_state(services, indices), original) == []
    lkg = store.get(store.resolve("last-known-good")).manifest
    want = _data_fingerprints(store.get(world["lkg"]).manifest)
    assert _data_fingerprints(lkg) == want, "the LKG holds exactly the recovered state"
    for r in (results[0], results[2]):  # each capture waited, or ran and was kept from becoming LKG
        bundle = r["xcom"].get("checkpoint.bundle") or {}
        if bundle.get("lkg"):
            assert _data_fingerprints(store.get(bundle["checkpoint_id"]).manifest) == want
    assert _leftovers(services, store) == []


def test_the_leftovers_of_killed_captures_are_removed_by_the_next_run(airflow_env, services, world):
    rng = random.Random(SEED + 1)
    store = world["store"]
    kills = max(3, KILLS * 3)
    for _ in range(kills):
        proc = _spawn(airflow_env, "checkpoint_scheduled", CAPTURE_CONF)
        time.sleep(rng.uniform(3.0, 15.0))
        _kill(proc)
    _fail_running_runs(airflow_env, "checkpoint_scheduled")  # what the scheduler does with killed tasks' runs
    result = run_dag(airflow_env, "checkpoint_scheduled", CAPTURE_CONF)
    assert result["state"] == "success", result["log"][-5000:]
    assert _leftovers(services, store) == []
    assert [e for e in store.fs.listdir("checkpoints") if e.startswith(".tmp-")] == []
    assert not list(Path("/tmp").glob("ckpt-pg-*/pgpass")), "no passfile of a killed pg_dump survives"


#: fingerprints that describe where and how the data is stored, not the data itself
PHYSICAL = {"database_size", "snapshot_uuid"}


def _data_fingerprints(manifest: Any) -> dict[str, Any]:
    """Each artifact's fingerprints of the data (rows, schema, keys, documents, mappings)."""
    return {a.name: {k: v for k, v in a.fingerprints.items() if k not in PHYSICAL} for a in manifest.artifacts}


def _errors(log: str) -> str:
    """The lines of a run's log that say what went wrong."""
    keep = [line for line in log.splitlines() if any(w in line for w in ("Error", "HINT", "error", "refus", "FAILED"))]
    return "\n".join(keep[-40:])


def _fail_running_runs(env: dict[str, str], dag_id: str) -> None:
    """Mark the DAG's runs that are still 'running' (their process was killed) as failed, as the
    scheduler does once the killed tasks miss their heartbeats."""
    code = (
        "from airflow.models.dagrun import DagRun\n"
        "from airflow.models.taskinstance import TaskInstance\n"
        "from airflow.utils.session import create_session\n"
        "from airflow.utils.state import DagRunState, TaskInstanceState\n"
        "with create_session() as s:\n"
        f"    for dr in s.query(DagRun).filter(DagRun.dag_id == {dag_id!r}, DagRun.state == DagRunState.RUNNING):\n"
        "        for ti in s.query(TaskInstance).filter(TaskInstance.dag_id == dr.dag_id,\n"
        "                                               TaskInstance.run_id == dr.run_id):\n"
        "            if ti.state not in (TaskInstanceState.SUCCESS, TaskInstanceState.SKIPPED):\n"
        "                ti.state = TaskInstanceState.FAILED\n"
        "        dr.state = DagRunState.FAILED\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
