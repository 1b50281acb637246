#!/usr/bin/env python3
"""Redis side-by-side restore throughput and memory, against ``redis-cli --pipe`` of the same commands.

    .venv/bin/python bench/redis_restore.py [--keys 1000000] [--repeat 5] [--batch 1000] [--plan-counts auto]

It starts a private Redis with ``scripts/services.py``, loads ``--keys`` keys into db0 (98%
strings of 10-60 bytes, a third of them with a TTL, plus hashes, lists, sets and sorted sets),
captures them once (``capture(mode="rdb")``) into a temporary store and seals the checkpoint.
Then ``--repeat`` (5) rounds, alternating:

* ours: a child process runs ``RedisRestore(...)``: ``plan()`` (which also counts the keys the
  checkpoint replaces in the non-empty db0: ``--plan-counts``, by default ``auto``, which for
  1M keys estimates from a sample; ``exact`` is a full pass over the artifact with ``EXISTS``
  batches), then ``prepare()`` (claim db15, stream the artifact out of the archive: zstd,
  sha256, RDB walk and CRC64, pipelined ``RESTORE ... ABSTTL``, verification: DBSIZE, TYPE
  and PEXPIRETIME of a sample) and ``cutover()`` (``SWAPDB 0 15`` in MULTI/EXEC). keys/s is
  keys / (prepare + cutover); the child reports its own peak RSS (``VmHWM``: ``wait4()`` would
  report the parent's size). The rollback copy is dropped after each run (and the lazy free
  waited for);
* reference: the same ``SELECT`` + ``RESTORE`` commands written to a file beforehand (not
  timed), piped into an empty db with ``redis-cli --pipe`` (password via REDISCLI_AUTH): what
  the server itself costs.

Every round is printed, then the medians: the load's throughput as a ratio to redis-cli's
(target >= 0.70), the plan's time (target < 0.5 s) and what the plan said, and the peak RSS
(target <= 150 MB). On a 2-core machine the server and the restore share the cores; the load
average is printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _services():
    spec = importlib.util.spec_from_file_location("bench_services", ROOT / "scripts" / "services.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_services"] = module
    spec.loader.exec_module(module)
    return module


def _target(info: dict):
    from airflow_checkpoint_provider.core.engines.targets import RedisTarget

    return RedisTarget(host=info["host"], port=int(info["port"]), password=info["password"], socket_timeout=120)


def seed(info: dict, n: int) -> None:
    """``n`` keys in db0 with pipelined writes (batches of 10k commands)."""
    from airflow_checkpoint_provider.core.engines.redis.resp import connect, encode_command

    rng = random.Random(n)
    with connect(_target(info)) as conn:
        conn.call("FLUSHALL")
        batch: list[bytes] = []

        def flush() -> None:
            conn.sendall(b"".join(batch))
            for _ in batch:
                conn.read_reply()
            batch.clear()

        for i in range(n):
            kind, key = i % 100, f"bench:{i:09d}"
            if kind < 98:
                value = f"v{i}-" + "x" * rng.randrange(0, 50)
                ttl = ("EX", 3600 + rng.randrange(3600)) if kind % 3 == 0 else ()
                batch.append(encode_command("SET", key, value, *ttl))
            elif kind == 98:
                fields = [x for f in range(rng.choice((5, 200))) for x in (f"f{f}", f"val{f}-{i}")]
                batch.append(encode_command("HSET", key, *fields))
            elif i % 3 == 0:
                batch.append(encode_command("RPUSH", key, *[f"item{j}" for j in range(rng.choice((10, 300)))]))
            elif i % 3 == 1:
                batch.append(encode_command("SADD", key, *[str(j * 7) for j in range(rng.choice((10, 600)))]))
            else:
                members = [x for j in range(rng.choice((10, 200))) for x in (str(j / 3), f"m{j}")]
                batch.append(encode_command("ZADD", key, *members))
            if len(batch) >= 10000:
                flush()
        flush()
        assert conn.call("DBSIZE") == n


def take_checkpoint(info: dict, store_dir: str) -> str:
    from airflow_checkpoint_provider.core import Store, staging_key
    from airflow_checkpoint_provider.core.engines.redis import capture

    store = Store.open(store_dir, create=True)
    staging = store.staging(staging_key("bench", "restore"))
    capture(_target(info), staging, mode="rdb")
    return store.seal(staging).checkpoint_id


def time_ours(info: dict, store_dir: str, cid: str, batch: int, plan_counts: str) -> dict:
    """One plan + prepare + cutover in a child process; its report plus its peak RSS in MB (VmHWM)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(
        json.dumps({"info": info, "store": store_dir, "cid": cid, "batch": batch, "plan_counts": plan_counts})
    )
    proc.stdin.close()
    out = proc.stdout.read()
    status = proc.wait()
    if status != 0:
        raise SystemExit(f"child restore failed with status {status}")
    report = json.loads(out)
    report["process_wall"] = time.perf_counter() - t0
    return report


def child() -> None:
    from airflow_checkpoint_provider.core import Store
    from airflow_checkpoint_provider.core.engines.redis import RedisRestore

    job = json.loads(sys.stdin.read())
    store = Store.open(job["store"])
    kw = {"plan_counts": job["plan_counts"]} if job["plan_counts"] else {}
    part = RedisRestore(
        _target(job["info"]), store, job["cid"], store.get(job["cid"]).manifest.artifacts, batch=job["batch"], **kw
    )
    t0, c0 = time.perf_counter(), time.process_time()
    items, problems = part.plan()
    assert not problems, problems
    t1, c1 = time.perf_counter(), time.process_time()
    part.prepare()
    t2 = time.perf_counter()
    outcome = part.cutover()
    t3 = time.perf_counter()
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    print(
        json.dumps(
            {
                "plan": t1 - t0,
                "prepare": t2 - t1,
                "cutover": t3 - t2,
                "cpu": time.process_time() - c1,
                "plan_cpu": c1 - c0,
                "keys": outcome.details["keys"]["db0"],
                "rollback": outcome.rollback,
                "rss_mb": hwm,
                "plan_lines": [c for i in items for c in i.conflicts],
            }
        )
    )


def write_pipe_file(store_dir: str, cid: str, path: str, db: int) -> int:
    """The SELECT + RESTORE commands our restore sends, into a file (for redis-cli --pipe)."""
    from airflow_checkpoint_provider.core import Store
    from airflow_checkpoint_provider.core.engines.redis._load import _Walk, restore_stream

    class FileConn:  # what restore_stream needs of a connection, writing into a file
        target = _target({"host": "file", "port": 0, "password": None})

        def __init__(self, f):
            self.f = f

        def call(self, *args):  # TIME
            return [str(int(time.time())).encode(), b"0"]

        def sendall(self, data):
            self.f.write(data)

        def read_some(self, n=0):  # every reply is +OK
            return b"+OK\r\n" * 100_000

    store = Store.open(store_dir)
    with store.open_artifact(cid, "redis/dump.rdb") as src, open(path, "wb") as f:
        walk = _Walk(src)
        version = walk.begin()
        stats = restore_stream(FileConn(f), walk.entries(), version, {0: db}, batch=10_000)
    return stats[0].restored


def time_redis_cli(info: dict, path: str, db: int) -> tuple[float, int]:
    from airflow_checkpoint_provider.core.engines.redis.resp import connect

    env = dict(os.environ, REDISCLI_AUTH=info["password"])
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        subprocess.run(
            ["redis-cli", "-h", info["host"], "-p", str(info["port"]), "--pipe"],
            stdin=f,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    seconds = time.perf_counter() - t0
    with connect(_target(info)) as conn:
        conn.call("SELECT", db)
        n = conn.call("DBSIZE")
        conn.call("FLUSHDB", "ASYNC")
    wait_lazyfree(info)
    return seconds, n


def wait_lazyfree(info: dict) -> None:
    from airflow_checkpoint_provider.core.engines.redis.resp import connect
    from airflow_checkpoint_provider.core.engines.redis.resp import info as server_info

    with connect(_target(info)) as conn:
        while server_info(conn, "memory").get("lazyfree_pending_objects", "0") != "0":
            time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--plan-counts", default="", help="RedisRestore(plan_counts=...): auto, exact, estimate")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        child()
        return 0
    from airflow_checkpoint_provider.core.engines.redis import drop_rollback

    services = _services()
    workdir = tempfile.mkdtemp(prefix="redis-restore-bench-")
    state, store_dir = Path(workdir) / "svc", os.path.join(workdir, "store")
    try:
        info = services.start(state, only=["redis"])["redis"]
        print(
            f"Redis {info['version']} on {info['host']}:{info['port']}; {os.cpu_count()} CPUs; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        t0 = time.perf_counter()
        seed(info, args.keys)
        print(f"seeded {args.keys:,} keys in {time.perf_counter() - t0:.1f}s")
        from airflow_checkpoint_provider.core.engines.redis.resp import connect

        with connect(_target(info)) as conn:
            conn.call("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        cid = take_checkpoint(info, store_dir)
        pipe_file = os.path.join(workdir, "restore.resp")
        n_cmds = write_pipe_file(store_dir, cid, pipe_file, 13)
        print(
            f"checkpoint {cid}; redis-cli --pipe file: {n_cmds:,} RESTOREs, "
            f"{os.path.getsize(pipe_file) / 2**20:.0f} MiB\n"
        )
        ours, cli = [], []
        for i in range(args.repeat):
            r = time_ours(info, store_dir, cid, args.batch, args.plan_counts)
            assert r["keys"] == args.keys and r["rollback"] == ["db0 -> db15"], r
            drop_rollback(_target(info), 15)
            wait_lazyfree(info)
            r["load"] = r["prepare"] + r["cutover"]
            ours.append(r)
            print(
                f"  round {i + 1}: ours plan {r['plan']:.2f}s  prepare {r['prepare']:.2f}s  cutover "
                f"{r['cutover'] * 1000:.1f} ms  -> {args.keys / r['load']:,.0f} keys/s  (CPU {r['cpu']:.2f}s "
                f"prepare + cutover, {r['plan_cpu']:.2f}s plan; peak RSS {r['rss_mb']:.0f} MB)",
                flush=True,
            )
            seconds, n = time_redis_cli(info, pipe_file, 13)
            assert n == n_cmds, (n, n_cmds)
            cli.append(seconds)
            print(
                f"  round {i + 1}: redis-cli --pipe of the same RESTOREs {seconds:.2f}s -> {n / seconds:,.0f} keys/s",
                flush=True,
            )
        med = statistics.median
        load, plan, cli_s = med([r["load"] for r in ours]), med([r["plan"] for r in ours]), med(cli)
        rss = max(r["rss_mb"] for r in ours)
        ratio = cli_s / load  # throughput ours / throughput redis-cli
        print(f"\nmedian of {args.repeat} rounds (every round above):")
        print(
            f"  ours load (prepare + cut-over) {load:.2f}s = {args.keys / load:,.0f} keys/s   rounds: "
            f"{', '.join(f'{x:.2f}' for x in (r['load'] for r in ours))}"
        )
        print(
            f"  redis-cli --pipe {cli_s:.2f}s = {n_cmds / cli_s:,.0f} keys/s   rounds: "
            f"{', '.join(f'{t:.2f}' for t in cli)}"
        )
        print(f"  throughput ours / redis-cli: {ratio:.2f}x  [{'ok' if ratio >= 0.7 else 'UNDER'} >= 0.70]")
        print(
            f"  plan {plan:.2f}s  [{'ok' if plan < 0.5 else 'OVER'} < 0.5]   rounds: "
            f"{', '.join(f'{x:.2f}' for x in (r['plan'] for r in ours))}"
        )
        print(f"    it said: {' | '.join(ours[0]['plan_lines'])}")
        print(
            f"  peak RSS {rss:.0f} MB [{'ok' if rss <= 150 else 'OVER'} <= 150]   rounds: "
            f"{', '.join(f'{x:.0f}' for x in (r['rss_mb'] for r in ours))}"
        )
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        print(
            json.dumps(
                {
                    "keys": args.keys,
                    "ours_load_s": [round(r["load"], 3) for r in ours],
                    "plan_s": [round(r["plan"], 3) for r in ours],
                    "redis_cli_s": [round(t, 3) for t in cli],
                    "ratio": round(ratio, 3),
                    "peak_rss_mb": round(rss, 1),
                }
            )
        )
    finally:
        services.stop(state)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
