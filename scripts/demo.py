"""The main job on local defaults: checkpoint, break things, recover the last-known-good.

    .venv/bin/python scripts/demo.py [--keep-services]

1. start local PostgreSQL, Redis and OpenSearch (scripts/services.py, state in .local/services);
2. seed sample data: tables in PostgreSQL, every Redis type in two dbs, indices in OpenSearch;
3. run the ``checkpoint_scheduled`` DAG end to end with ``dag.test()`` (Airflow home in
   .local/airflow, connections pointing at the local services): the three stores are captured
   in parallel, sealed into one archive in the default store ($AIRFLOW_HOME/checkpoints_data),
   verified, and marked last-known-good;
4. damage the data: drop a table, delete rows and Redis keys, delete a search index;
5. run the ``recovery_lkg`` DAG: safety checkpoint, side-by-side restore, verification,
   cut-over, and the health check, which must come out green;
6. compare every table row, Redis key (type, value, TTL) and search document with the
   state before the damage, and list the store with the ``airflow-checkpoint`` CLI;
7. stop the services (unless --keep-services).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / ".local"
AIRFLOW_HOME = LOCAL / "airflow"
sys.path.insert(0, str(REPO / "scripts"))

import sample_data  # noqa: E402
import services  # noqa: E402

DATABASE = "demo_app"
INDEX_PREFIX = "demo-"


def step(n: int, text: str) -> None:
    print(f"\n== {n}. {text}", flush=True)


def airflow_env(info: dict) -> dict[str, str]:
    env = dict(os.environ)
    env.update(services.connection_env(info))
    env.update(
        {
            "AIRFLOW_HOME": str(AIRFLOW_HOME),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CHECKPOINT__SEARCH_REPOSITORY_LOCATION": str(
                Path(info["opensearch"]["path_repo"]) / "checkpoints"
            ),
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def run_dag(env: dict[str, str], dag_id: str, conf: dict) -> dict:
    """``dag.test()`` through scripts/run_dag.py; prints the task states."""
    print(f"$ airflow dags test {dag_id} --conf '{json.dumps(conf)}'", flush=True)
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_dag.py"), dag_id, json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DAG_RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"{dag_id} could not run")
    result = json.loads(lines[-1][len("DAG_RESULT ") :])
    for task, state in sorted(result["tasks"].items()):
        print(f"  {task:<34} {state}")
    print(f"  run {result['run_id']}: {result['state']}")
    if result["state"] != "success":
        sys.stderr.write(proc.stdout[-8000:])
        raise SystemExit(f"{dag_id} failed")
    return result


def cli(env: dict[str, str], *args: str) -> None:
    print(f"$ airflow-checkpoint {' '.join(args)}", flush=True)
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow-checkpoint"), *args], check=True, env={**os.environ, **env}
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep-services", action="store_true", help="leave the services running afterwards")
    args = ap.parse_args()
    state = LOCAL / "services"
    step(1, "start PostgreSQL, Redis and OpenSearch on loopback")
    services.stop(state)  # leftovers of an interrupted earlier run
    info = services.start(state, only=["postgres", "redis", "opensearch"])
    try:
        for name in ("postgres", "redis", "opensearch"):
            print(f"  {name} {info[name]['version']} on port {info[name]['port']}")
        env = airflow_env(info)
        subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True
        )

        step(2, "seed sample data")
        sample_data.seed_postgres(info["postgres"], DATABASE)
        sample_data.seed_redis(info["redis"])
        indices = sample_data.seed_search(info["opensearch"]["url"], prefix=INDEX_PREFIX)
        pg_rows = {
            t: len(r) for t, r in sample_data.state_postgres(info["postgres"], DATABASE).items() if t != "__sequences__"
        }
        keys = {db: len(k) for db, k in sample_data.state_redis(info["redis"]).items()}
        print(f"  postgres {DATABASE}: {pg_rows}")
        print(f"  redis keys per db: {keys}")
        print(f"  opensearch indices: {', '.join(indices)}")

        step(3, "run the checkpoint_scheduled DAG")
        result = run_dag(env, "checkpoint_scheduled", {"databases": DATABASE, "search_indices": f"{INDEX_PREFIX}*"})
        bundle = result["xcom"]["checkpoint.bundle"]
        print(
            f"  checkpoint {bundle['checkpoint_id']}: {bundle['size']} bytes, artifacts {bundle['artifacts']}, "
            f"skew between stores {bundle['consistency']['skew_ms']} ms, LKG: {bundle['lkg']}"
        )

        before = {
            "postgres": sample_data.state_postgres(info["postgres"], DATABASE),
            "redis": sample_data.state_redis(info["redis"], dbs=range(2)),
            "search": sample_data.state_search(info["opensearch"]["url"], indices),
        }

        step(4, "damage the data")
        with sample_data.pg_connect(info["postgres"], DATABASE) as conn:
            conn.execute("DROP TABLE attachments")
            deleted = conn.execute("DELETE FROM orders WHERE status = 'paid'").rowcount
        print(f"  postgres: dropped table attachments, deleted {deleted} paid orders")
        r = sample_data.redis_client(info["redis"])
        gone = r.delete(*[f"session:{i}" for i in range(100)], "hash:big", "stream:events")
        print(f"  redis: deleted {gone} keys (sessions, a hash, the events stream)")
        httpx.delete(f"{info['opensearch']['url']}/{indices[0]}").raise_for_status()
        print(f"  opensearch: deleted index {indices[0]}")

        step(5, "run the recovery_lkg DAG")
        result = run_dag(env, "recovery_lkg", {})
        report = result["xcom"]["restore"]
        print(
            f"  restored {report['checkpoint_id']}; safety checkpoint of the damaged state: "
            f"{report['safety_checkpoint_id']}"
        )
        for outcome in report["outcomes"]:
            print(f"  {outcome['component']}: serving {outcome['restored']}; rollback copies {outcome['rollback']}")
        for check in result["xcom"]["health_check"]["checks"]:
            status = "ok" if check["ok"] else "FAILED"
            print(f"  health {check['component']}: {check['check']}: {status}")

        step(6, "compare with the state before the damage, and list the store")
        after = {
            "postgres": sample_data.state_postgres(info["postgres"], DATABASE),
            "redis": sample_data.state_redis(info["redis"], dbs=range(2)),
            "search": sample_data.state_search(info["opensearch"]["url"], indices),
        }
        same = {
            "postgres": after["postgres"] == before["postgres"],
            "redis": sample_data.same_redis_state(before["redis"], after["redis"]) == [],
            "search": after["search"] == before["search"],
        }
        for name, ok in same.items():
            print(f"  {name}: {'identical to before the damage' if ok else 'DIFFERS'}")
        cli_env = {"AIRFLOW_HOME": str(AIRFLOW_HOME)}
        cli(cli_env, "list")
        cli(cli_env, "lkg")
        if not all(same.values()):
            raise SystemExit("the recovered data differs from the checkpoint")
    finally:
        if args.keep_services:
            print(f"\nservices left running; connection variables: source {state / 'env.sh'}")
        else:
            step(7, "stop the services")
            services.stop(state)
    print("\ndemo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
