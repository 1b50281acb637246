#!/usr/bin/env python3
"""``airflow-checkpoint list`` over 2,000 checkpoints (target < 1 s), the Checkpoints page's list view
(target < 300 ms, rendered server-side), and the listing under both.

    .venv/bin/python bench/list_checkpoints.py [--count 2000] [--repeat 5] [--dir /tmp/bench-list]

The store is built once in ``--dir`` (reused by later runs): ``--count`` sealed checkpoints of
three small artifacts each (PostgreSQL, Redis and search shaped, realistic manifests with
fingerprints), each with a verification record, one of them the LKG. Timed, each ``--repeat``
times: the whole command in a fresh process (``airflow-checkpoint list`` and ``list --json``,
interpreter start-up and imports included, with the bytecode cache an installed package has); in-process, the list view's HTML exactly as its route
renders it (``ui.html.list_view``: the newest 500 rows, the chart of all 2,000), warm; and
:meth:`Store.scan` with the states, cold (no listing cache) and warm. It prints the median and
worst of each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build(path: str, count: int) -> None:
    from airflow_checkpoint_provider.core import Store, staging_key

    store = Store.open(path, create=True)
    have = len(store.list())
    tables = {f"public.t{i}": {"rows": 1000 + i, "schema_sha256": "ab" * 32} for i in range(40)}
    for n in range(have, count):
        staging = store.staging(staging_key("bench", f"run{n}"))
        for name, component in (("postgres/app.dump", "postgres"), ("redis/dump.rdb", "redis")):
            with staging.artifact(name, store=component, kind=f"{component}/x", engine=component) as sink:
                sink.write(os.urandom(64) * 16)
                sink.fingerprints = {"tables": tables} if component == "postgres" else {"keys": {"0": n, "1": 7}}
        with staging.artifact("search/snapshot.json", store="search", kind="search/snapshot", engine="search") as sink:
            sink.write(b'{"snapshot": "s"}')
            sink.fingerprints = {"indices": {f"idx{i}": {"docs": i} for i in range(10)}}
        m = store.seal(staging, tags=["scheduled"] if n % 10 else ["pre-migration"], provenance={"dag_id": "bench"})
        info = store.get(m.checkpoint_id)
        store.record_verify(info, store.verify(m.checkpoint_id), 5, by={"bench": "list"})
        if n == count - 1:
            store.mark_lkg(m.checkpoint_id, reason="bench")
        if n % 200 == 0:
            print(f"built {n}/{count}", file=sys.stderr)


def timed(fn, repeat: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds of this process and its children) of each of ``repeat`` calls."""
    out = []
    for _ in range(repeat):
        before = _cpu()
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t, _cpu() - before))
    return out


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default="/tmp/bench-list-store")
    args = ap.parse_args()
    build(args.dir, args.count)
    from airflow_checkpoint_provider.core import Store
    from airflow_checkpoint_provider.core.listing import CACHE_FILE

    cli = os.path.join(os.path.dirname(sys.executable), "airflow-checkpoint")
    # as an installed package runs: with its bytecode cache (pip compiles it at install; Python writes it
    # on first import), so a PYTHONDONTWRITEBYTECODE of this shell is dropped and one untimed run warms it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"] = args.dir

    def run_cli(*extra: str) -> None:
        proc = subprocess.run([cli, "list", *extra], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.count("ckpt-") >= args.count, "not every checkpoint listed"

    def scan() -> None:
        store = Store.open(args.dir)
        infos, _ = store.scan()
        for info in infos:
            store.state_of(info)
        assert len(infos) == args.count

    def cold() -> None:
        cache = os.path.join(args.dir, CACHE_FILE)
        if os.path.exists(cache):
            os.remove(cache)
        scan()

    def page() -> None:
        from airflow_checkpoint_provider.ui.html import list_view

        body = list_view(Store.open(args.dir), base="/checkpoints", rows=500)
        assert body.count("class=checkpoint ") == min(500, args.count), "not every row rendered"

    run_cli()  # untimed: writes the bytecode cache and the listing cache
    results = {
        "ui_list_page": timed(page, args.repeat),
        "cli_list": timed(run_cli, args.repeat),
        "cli_list_json": timed(lambda: run_cli("--json"), args.repeat),
        "scan_cold": timed(cold, args.repeat),
        "scan_warm": timed(scan, args.repeat),
    }
    run_cli()  # leave the cache warm
    load = os.getloadavg()[0]
    print(f"{args.count} checkpoints; load average {load:.1f} on {os.cpu_count()} CPUs (wall time grows with it)")
    for name, runs in results.items():
        wall, cpu = [w for w, _ in runs], [c for _, c in runs]
        print(
            f"{name:<14} wall median {statistics.median(wall):.3f} s (worst {max(wall):.3f}), "
            f"CPU median {statistics.median(cpu):.3f} s, of {args.repeat}  "
            f"(target < {'0.3' if name == 'ui_list_page' else '1'} s)"
        )
    summary = {
        k: {
            "wall_s": round(statistics.median([w for w, _ in v]), 4),
            "cpu_s": round(statistics.median([c for _, c in v]), 4),
        }
        for k, v in results.items()
    }
    print(json.dumps({"count": args.count, "load": round(load, 1), **summary}))


if __name__ == "__main__":
    main()
