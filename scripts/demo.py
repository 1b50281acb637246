"""The main job on local defaults: seed sample data, run checkpoint_scheduled, list the result.

    .venv/bin/python scripts/demo.py [--keep-services]

1. start local PostgreSQL, Redis and OpenSearch (scripts/services.py, state in .local/services);
2. seed sample data: tables in PostgreSQL, every Redis type in two dbs, indices in OpenSearch;
3. run the ``checkpoint_scheduled`` DAG end to end with ``dag.test()`` (Airflow home in
   .local/airflow, connections pointing at the local services): the three stores are captured
   in parallel, sealed into one archive in the default store ($AIRFLOW_HOME/checkpoints_data),
   verified, and marked last-known-good;
4. list the store, show the LKG and verify it with the ``airflow-checkpoint`` CLI;
5. stop the services (unless --keep-services).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

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
    env.update({
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CHECKPOINT__SEARCH_REPOSITORY_LOCATION": str(Path(info["opensearch"]["path_repo"]) / "checkpoints"),
        "PYTHONPATH": str(REPO),
    })
    return env


def run_dag(env: dict[str, str], dag_id: str, conf: dict) -> dict:
    """``dag.test()`` through scripts/run_dag.py; prints the task states."""
    print(f"$ airflow dags test {dag_id} --conf '{json.dumps(conf)}'", flush=True)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "run_dag.py"), dag_id, json.dumps(conf)],
                          env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DAG_RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"{dag_id} could not run")
    result = json.loads(lines[-1][len("DAG_RESULT "):])
    for task, state in sorted(result["tasks"].items()):
        print(f"  {task:<34} {state}")
    print(f"  run {result['run_id']}: {result['state']}")
    if result["state"] != "success":
        sys.stderr.write(proc.stdout[-8000:])
        raise SystemExit(f"{dag_id} failed")
    return result


def cli(env: dict[str, str], *args: str) -> None:
    print(f"$ airflow-checkpoint {' '.join(args)}", flush=True)
    subprocess.run([str(Path(sys.executable).parent / "airflow-checkpoint"), *args], check=True,
                   env={**os.environ, **env})


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
        subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, check=True,
                       capture_output=True)

        step(2, "seed sample data")
        sample_data.seed_postgres(info["postgres"], DATABASE)
        sample_data.seed_redis(info["redis"])
        indices = sample_data.seed_search(info["opensearch"]["url"], prefix=INDEX_PREFIX)
        pg_rows = {t: len(r) for t, r in sample_data.state_postgres(info["postgres"], DATABASE).items()
                   if t != "__sequences__"}
        keys = {db: len(k) for db, k in sample_data.state_redis(info["redis"]).items()}
        print(f"  postgres {DATABASE}: {pg_rows}")
        print(f"  redis keys per db: {keys}")
        print(f"  opensearch indices: {', '.join(indices)}")

        step(3, "run the checkpoint_scheduled DAG")
        result = run_dag(env, "checkpoint_scheduled", {"databases": DATABASE, "search_indices": f"{INDEX_PREFIX}*"})
        bundle = result["xcom"]["checkpoint.bundle"]
        print(f"  checkpoint {bundle['checkpoint_id']}: {bundle['size']} bytes, artifacts {bundle['artifacts']}, "
              f"skew between stores {bundle['consistency']['skew_ms']} ms, LKG: {bundle['lkg']}")

        step(4, "list the store and show the last-known-good")
        cli_env = {"AIRFLOW_HOME": str(AIRFLOW_HOME)}
        cli(cli_env, "list")
        cli(cli_env, "lkg")
        cli(cli_env, "verify", "last-known-good")
    finally:
        if args.keep_services:
            print(f"\nservices left running; connection variables: source {state / 'env.sh'}")
        else:
            step(5, "stop the services")
            services.stop(state)
    print("\ndemo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
