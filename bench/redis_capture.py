#!/usr/bin/env python3
"""Redis capture time and memory against ``redis-cli --rdb``, on the same server, in one run.

    .venv/bin/python bench/redis_capture.py [--sizes 250000,1000000,2000000] [--repeat 5] [--no-logical]

It starts a private Redis with ``scripts/services.py``, and for each size loads that many keys
(pipelined: 98% strings of 10-60 bytes, a third of them with a TTL, plus hashes, lists, sets
and sorted sets), then times, best of ``--repeat`` (5):

* ``redis-cli --rdb FILE`` (password through REDISCLI_AUTH);
* ours: ``capture(target, staging, mode="rdb")`` into a temporary store, in a child process
  whose peak RSS is read with ``wait4()``: transfer, zstd, sha256, CRC64 check and the
  fingerprint walk, all in one pass;
* ours, ``mode="logical"`` (SCAN + DUMP), once.

The runs alternate (redis-cli, ours, redis-cli, ...) so both see the same background load.
Both are timed with the server's default ``repl-diskless-sync-delay`` (5 s: the server waits
for more replicas before forking, which dominates small captures) and with the delay set to
0, where the transfer itself dominates. It prints the times, our CPU time, the ratio
ours / redis-cli (target <= 1.1) and our peak RSS (target <= 150 MB). RSS grows up to about
1M keys (zstd's multi-threaded buffer pool filling up) and is flat beyond. On a 2-core machine
the server's fork, our parser and zstd share the cores: other load on the machine shows up in
the delay-0 ratio first (the load average is printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
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
    """Load ``n`` keys with pipelined writes (raw RESP, batches of 10k commands)."""
    from airflow_checkpoint_provider.core.engines.redis.resp import connect, encode_command

    rng = random.Random(n)
    with connect(_target(info)) as conn:
        conn.call("FLUSHALL")
        batch: list[bytes] = []
        pending = 0

        def flush() -> None:
            nonlocal batch, pending
            conn.sendall(b"".join(batch))
            for _ in range(pending):
                conn.read_reply()
            batch, pending = [], 0

        for i in range(n):
            kind = i % 100
            key = f"bench:{i:09d}"
            if kind < 98:
                value = f"v{i}-" + "x" * rng.randrange(0, 50)
                if kind % 3 == 0:
                    batch.append(encode_command("SET", key, value, "EX", 3600 + rng.randrange(3600)))
                else:
                    batch.append(encode_command("SET", key, value))
            elif kind == 98:
                fields = []
                for f in range(rng.choice((5, 200))):
                    fields += [f"f{f}", f"val{f}-{i}"]
                batch.append(encode_command("HSET", key, *fields))
            else:
                sub = i % 3
                if sub == 0:
                    batch.append(encode_command("RPUSH", key, *[f"item{j}" for j in range(rng.choice((10, 300)))]))
                elif sub == 1:
                    batch.append(encode_command("SADD", key, *[str(j * 7) for j in range(rng.choice((10, 600)))]))
                else:
                    members = []
                    for j in range(rng.choice((10, 200))):
                        members += [str(j / 3), f"m{j}"]
                    batch.append(encode_command("ZADD", key, *members))
            pending += 1
            if pending >= 10000:
                flush()
        flush()
        dbsize = conn.call("DBSIZE")
        assert dbsize == n, (dbsize, n)


def time_redis_cli(info: dict, out: str) -> float:
    env = dict(os.environ, REDISCLI_AUTH=info["password"])
    t0 = time.perf_counter()
    subprocess.run(
        ["redis-cli", "-h", info["host"], "-p", str(info["port"]), "--rdb", out],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def time_ours(info: dict, mode: str, workdir: str) -> dict:
    """Run one capture in a child process; return its report plus peak RSS in MB."""
    store = tempfile.mkdtemp(dir=workdir, prefix="store-")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--store", store],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(info))
    proc.stdin.close()
    out = proc.stdout.read()
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    shutil.rmtree(store, ignore_errors=True)
    if status != 0:
        raise SystemExit(f"child capture ({mode}) failed with status {status}")
    report = json.loads(out)
    report["rss_mb"] = rusage.ru_maxrss / 1024
    report["process_wall"] = wall
    return report


def child(mode: str, store_dir: str) -> None:
    from airflow_checkpoint_provider.core import Store, staging_key
    from airflow_checkpoint_provider.core.engines.redis import capture
    from airflow_checkpoint_provider.core.manifest import parse_ts

    info = json.loads(sys.stdin.read())
    store = Store.open(store_dir, create=True, lock_timeout=10)
    staging = store.staging(staging_key("bench", mode))
    t0, c0 = time.perf_counter(), time.process_time()
    art = capture(_target(info), staging, mode=mode)[0]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    window = (parse_ts(art.capture_end) - parse_ts(art.capture_start)).total_seconds()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "window": window,
                "raw_size": art.raw_size,
                "size": art.size,
                "keys": sum(art.fingerprints["keys"].values()),
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="250000,1000000,2000000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-logical", action="store_true")
    ap.add_argument("--delays", default="5,0", help="repl-diskless-sync-delay values to run with")
    ap.add_argument("--child")
    ap.add_argument("--store")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.store)
        return 0
    services = _services()
    workdir = tempfile.mkdtemp(prefix="redis-bench-")
    state = Path(workdir) / "svc"
    try:
        info = services.start(state, only=["redis"])["redis"]
        print(
            f"Redis {info['version']} on {info['host']}:{info['port']}; {os.cpu_count()} CPUs; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        from airflow_checkpoint_provider.core.engines.redis.resp import connect

        rows = []
        for n in [int(s) for s in args.sizes.split(",")]:
            t0 = time.perf_counter()
            seed(info, n)
            print(f"\n== {n:,} keys (seeded in {time.perf_counter() - t0:.1f}s)")
            for delay in [int(d) for d in args.delays.split(",")]:
                with connect(_target(info)) as conn:
                    conn.call("CONFIG", "SET", "repl-diskless-sync-delay", str(delay))
                rdb_file = os.path.join(workdir, "cli.rdb")
                cli_times, ours = [], []
                for _ in range(args.repeat):  # interleaved, so that both see the same background load
                    cli_times.append(time_redis_cli(info, rdb_file))
                    ours.append(time_ours(info, "rdb", workdir))
                cli = min(cli_times)
                rdb_size = os.path.getsize(rdb_file)
                best = min(ours, key=lambda r: r["seconds"])
                assert best["keys"] == n, best
                ratio = best["seconds"] / cli
                rss = max(r["rss_mb"] for r in ours)
                print(
                    f"  diskless-sync-delay {delay}s: redis-cli --rdb {cli:6.2f}s ({rdb_size / 2**20:.1f} MiB)   "
                    f"ours rdb {best['seconds']:6.2f}s (transfer window {best['window']:.2f}s, "
                    f"CPU {best['cpu']:.2f}s, "
                    f"zstd {best['size'] / 2**20:.1f} MiB)   ratio {ratio:.2f} "
                    f"[{'ok' if ratio <= 1.1 else 'OVER'} <= 1.1]   peak RSS {rss:.0f} MB "
                    f"[{'ok' if rss <= 150 else 'OVER'} <= 150]"
                )
                rows.append(
                    {
                        "keys": n,
                        "delay": delay,
                        "redis_cli": cli,
                        "ours": best["seconds"],
                        "ratio": ratio,
                        "rss_mb": rss,
                    }
                )
            if not args.no_logical:
                lg = time_ours(info, "logical", workdir)
                assert lg["keys"] == n, lg
                print(
                    f"  logical (SCAN + DUMP): {lg['seconds']:6.2f}s (CPU {lg['cpu']:.2f}s), "
                    f"{lg['raw_size'] / 2**20:.1f} MiB raw, "
                    f"peak RSS {lg['rss_mb']:.0f} MB"
                )
                rows.append({"keys": n, "mode": "logical", "ours": lg["seconds"], "rss_mb": lg["rss_mb"]})
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n" + json.dumps(rows))
    finally:
        services.stop(state)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
