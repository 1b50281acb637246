#!/usr/bin/env python3
"""The main job on local defaults: seed sample data, checkpoint it, list and verify it.

    .venv/bin/python scripts/demo.py [--keep-services]

1. start local PostgreSQL, Redis and OpenSearch (scripts/services.py, state in .local/services);
2. seed sample data: tables in PostgreSQL, keys of several types in Redis, indices in OpenSearch;
3. capture each store into the staging area of the default store
   ($AIRFLOW_HOME/checkpoints_data, with AIRFLOW_HOME=.local/airflow), seal the checkpoint,
   verify it and mark it last-known-good;
4. list the store and verify the checkpoint again with the `airflow-checkpoint` CLI;
5. stop the services (unless --keep-services).

Passwords reach pg_dump through a 0600 passfile and redis-cli through REDISCLI_AUTH, never argv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / ".local"
os.environ.setdefault("AIRFLOW_HOME", str(LOCAL / "airflow"))
sys.path.insert(0, str(REPO / "scripts"))

import services  # noqa: E402

from airflow_checkpoint_provider import settings  # noqa: E402
from airflow_checkpoint_provider.core import Store, staging_key  # noqa: E402
from airflow_checkpoint_provider.core.manifest import config_hash  # noqa: E402


def step(n: int, text: str) -> None:
    print(f"\n== {n}. {text}", flush=True)


def seed(info: dict) -> None:
    import psycopg
    import redis

    pg = info["postgres"]
    with psycopg.connect(host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"],
                         dbname="postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS demo_app")
        conn.execute("CREATE DATABASE demo_app")
    with psycopg.connect(host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"],
                         dbname="demo_app", autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL, created date NOT NULL)")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, "
                     "total numeric(10,2), status text)")
        conn.execute("INSERT INTO customers SELECT g, 'user' || g || '@example.com', "
                     "date '2026-01-01' + (g % 300) FROM generate_series(1, 5000) g")
        conn.execute("INSERT INTO orders SELECT g, 1 + g % 5000, (g % 997) * 1.25, "
                     "(ARRAY['new','paid','shipped'])[1 + g % 3] FROM generate_series(1, 20000) g")
    print("  postgres: database demo_app with customers (5000 rows) and orders (20000 rows)")

    rd = info["redis"]
    r = redis.Redis(host=rd["host"], port=rd["port"], password=rd["password"], db=0)
    r.flushall()
    pipe = r.pipeline()
    for i in range(1000):
        pipe.set(f"session:{i}", f"token-{i}", ex=3600)
    pipe.hset("user:1", mapping={"name": "Ada", "plan": "pro"})
    pipe.rpush("queue:emails", *[f"mail-{i}" for i in range(50)])
    pipe.sadd("tags", "a", "b", "c")
    pipe.zadd("leaderboard", {"ada": 30, "grace": 20})
    pipe.xadd("events", {"type": "signup", "user": "1"})
    pipe.execute()
    redis.Redis(host=rd["host"], port=rd["port"], password=rd["password"], db=1).set("feature:dark-mode", "on")
    print("  redis: 1005 keys in db0 (strings with TTL, hash, list, set, zset, stream), 1 key in db1")

    os_url = info["opensearch"]["url"]
    with httpx.Client(base_url=os_url, timeout=30) as http:
        for index, n in (("products", 200), ("reviews", 500)):
            http.delete(f"/{index}")
            body = "".join(json.dumps({"index": {"_id": str(i)}}) + "\n" + json.dumps({"n": i, "name": f"{index}-{i}"})
                           + "\n" for i in range(n))
            resp = http.post(f"/{index}/_bulk?refresh=true", content=body,
                             headers={"Content-Type": "application/x-ndjson"})
            resp.raise_for_status()
    print("  opensearch: indices products (200 docs) and reviews (500 docs)")


def capture(store: Store, info: dict) -> str:
    """Capture the three stores into one staging area, then seal, verify and mark LKG."""
    staging = store.staging(staging_key("demo", time.strftime("%Y%m%dT%H%M%S")))
    pg, rd, search = info["postgres"], info["redis"], info["opensearch"]

    # PostgreSQL: pg_dump custom format, uncompressed, zstd-compressed by the sink in the same pass
    with tempfile.NamedTemporaryFile("w", delete=False, prefix="pgpass-") as passfile:
        os.chmod(passfile.name, 0o600)
        passfile.write(f"{pg['host']}:{pg['port']}:*:{pg['user']}:{pg['password']}\n")
    try:
        env = dict(os.environ, PGPASSFILE=passfile.name)
        cmd = [str(Path(pg["bin_dir"]) / "pg_dump"), "-h", pg["host"], "-p", str(pg["port"]), "-U", pg["user"],
               "-Fc", "-Z0", "demo_app"]
        with staging.artifact("postgres/demo_app.dump", store="postgres", kind="pg_dump/custom",
                              engine="postgresql", engine_version=pg["version"]) as sink:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            sink.write_from(proc.stdout)
            err = proc.stderr.read().decode()
            if proc.wait() != 0:
                raise SystemExit(f"pg_dump failed: {err}")
            sink.meta = {"database": "demo_app", "format": "custom"}
    finally:
        os.unlink(passfile.name)
    print("  postgres: pg_dump of demo_app captured")

    # Redis: an RDB over the replication protocol, as redis-cli --rdb does
    with tempfile.TemporaryDirectory() as tmp:
        rdb = Path(tmp) / "dump.rdb"
        env = dict(os.environ, REDISCLI_AUTH=rd["password"])
        with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", engine="redis",
                              engine_version=rd["version"]) as sink:
            subprocess.run(["redis-cli", "-h", rd["host"], "-p", str(rd["port"]), "--rdb", str(rdb)], env=env,
                           check=True, capture_output=True)
            with open(rdb, "rb") as f:
                sink.write_from(f)
    print("  redis: RDB snapshot captured")

    # Search: a snapshot in an fs repository; the archive records where it is
    with httpx.Client(base_url=search["url"], timeout=120) as http:
        location = str(Path(search["path_repo"]) / "demo")
        http.put("/_snapshot/demo", json={"type": "fs", "settings": {"location": location}}).raise_for_status()
        name = "demo-" + time.strftime("%Y%m%dt%H%M%S").lower()
        with staging.artifact("search/snapshot.json", store="search", kind="search/snapshot", engine="opensearch",
                              engine_version=search["version"]) as sink:
            resp = http.put(f"/_snapshot/demo/{name}?wait_for_completion=true",
                            json={"indices": "products,reviews", "include_global_state": False})
            resp.raise_for_status()
            snap = resp.json()["snapshot"]
            if snap["state"] != "SUCCESS":
                raise SystemExit(f"snapshot {name} ended {snap['state']}: {snap.get('failures')}")
            sink.write(json.dumps({"repository": "demo", "snapshot": snap}, sort_keys=True).encode())
            sink.meta = {"repository": "demo", "snapshot": name, "uuid": snap["uuid"]}
    print(f"  opensearch: snapshot {name} in repository demo")

    manifest = store.seal(staging, tags=["demo"], config_hash=config_hash({"demo": True}),
                          provenance={"dag_id": "demo", "run_id": staging.key, "provider_version": "0.1.0"})
    result = store.verify(manifest.checkpoint_id)
    store.mark_lkg(manifest.checkpoint_id, result=result, reason="demo: verified after sealing")
    print(f"  sealed {manifest.checkpoint_id}: {len(manifest.artifacts)} artifacts, verified, marked last-known-good")
    return manifest.checkpoint_id


def cli(*args: str) -> None:
    print(f"$ airflow-checkpoint {' '.join(args)}", flush=True)
    subprocess.run([str(Path(sys.executable).parent / "airflow-checkpoint"), *args], check=True)


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
        step(2, "seed sample data")
        seed(info)
        root = settings.storage_root()
        step(3, f"checkpoint into the default store {root}")
        store = Store.open(root, create=True, lock_timeout=settings.lock_timeout())
        checkpoint_id = capture(store, info)
        step(4, "list and verify")
        cli("list")
        cli("verify", checkpoint_id)
        cli("lkg")
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
