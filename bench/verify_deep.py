#!/usr/bin/env python3
"""``verify --level deep`` of a pgbench checkpoint against ``zstd -dc dump | pg_restore --list``, in one run.

    .venv/bin/python bench/verify_deep.py [--scale 20] [--repeat 5] [--workdir DIR]

It starts a private PostgreSQL with ``scripts/services.py`` (state in a temporary directory,
stopped at the end), creates a pgbench database (``pgbench -i -I dtGvp -s N``; 70 is about
1 GB), takes our checkpoint of it once (``capture`` + ``Store.seal``) and copies the dump's
zstd member out of the archive into a plain file. Then ``--repeat`` rounds, page cache warm,
each timing:

* raw:  ``zstd -dc dump.zst | pg_restore --list > /dev/null``, the tools the deep check of a dump
  runs, on the very same compressed bytes;
* ours: ``core.levels.verify_at(store, id, "deep")``: the manifests, the sha256 of every member,
  every zstd artifact decompressed to its raw size, ``pg_restore --list`` of the dump, and the
  state record; in a child process that reports its own peak RSS (``VmHWM``), timed after its
  imports (the child's whole wall time, Python start and imports included, is printed too);
* raw, same work: ``sha256sum archive && zstd -qt dump.zst && zstd -dc dump.zst | pg_restore --list``:
  the tools doing what deep verification does. ``pg_restore --list`` of a custom dump stops
  reading after the table of contents at the start of the dump, and ``zstd -dc`` then stops on the
  closed pipe; so the first pipeline's time does not grow with the data, while deep verification
  must read and decompress every byte (the sha256 of every member, as ``standard``; every zstd
  frame decoded and its raw size checked, as the format requires of ``deep``). The ratio against
  this line is the one that measures our overhead;
* references, to show where the time goes: ``zstd -dc dump.zst > /dev/null`` and
  ``sha256sum archive`` (what ``standard`` reads).

It prints each round, the medians, the ratios ours / raw (the issue's target, <= 1.2x) and
ours / raw same work, and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pg_capture import load_services  # noqa: E402
from pg_restore import self_hwm  # noqa: E402


def child(root: str, cid: str) -> None:
    from airflow_checkpoint_provider.core import Store
    from airflow_checkpoint_provider.core.engines import registry
    from airflow_checkpoint_provider.core.levels import verify_at

    registry.engines()  # imported before the clock starts: the process start is timed apart (wall)
    store = Store.open(root)
    t = time.perf_counter()
    result, record = verify_at(store, cid, "deep")
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "outcome": record.outcome, "ok": result.ok, "peak_rss_mb": self_hwm()}))


def run_ours(root: str, cid: str) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", root, cid], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed: {proc.stdout}{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall"] = time.perf_counter() - t
    if res["outcome"] != "ok":
        raise SystemExit(f"deep verification did not pass: {res}")
    return res


def shell(cmd: str) -> float:
    t = time.perf_counter()
    subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=20, help="pgbench scale factor (70 is about 1 GB)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    for tool in ("zstd", "sha256sum", "bash"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed")

    from airflow_checkpoint_provider.core import Store
    from airflow_checkpoint_provider.core.engines import postgres
    from airflow_checkpoint_provider.core.engines.postgres.deep import pg_restore_path
    from airflow_checkpoint_provider.core.engines.targets import PostgresTarget

    services = load_services()
    work = tempfile.mkdtemp(prefix="bench-deep-", dir=args.workdir)
    state = os.path.join(work, "services")
    try:
        info = services.start(Path(state), only=["postgres"])["postgres"]
        bin_dir = info["bin_dir"]
        pgbench = f"{bin_dir}/pgbench" if os.path.exists(f"{bin_dir}/pgbench") else shutil.which("pgbench")
        if not pgbench:
            raise SystemExit("pgbench not found: install postgresql-contrib")
        env = dict(os.environ, PGPASSWORD=info["password"], LC_ALL="C")  # the setup's password: env only
        conn = ["-h", info["host"], "-p", str(info["port"]), "-U", info["user"]]
        db = f"pgbench_s{args.scale}"
        subprocess.run([f"{bin_dir}/createdb", *conn, db], check=True, env=env)
        subprocess.run(
            [pgbench, *conn, "-i", "-I", "dtGvp", "-q", "-s", str(args.scale), db],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        target = PostgresTarget(
            host=info["host"], port=info["port"], user=info["user"], password=info["password"], dbname="postgres"
        )
        root = os.path.join(work, "store")
        store = Store.open(root, create=True)
        staging = store.staging("bench-deep")
        (art,) = postgres.capture(target, staging, databases=db, pg_dump=f"{bin_dir}/pg_dump")
        cid = store.seal(staging).checkpoint_id
        archive = os.path.join(root, "checkpoints", f"{cid}.tar")
        dump = os.path.join(work, "dump.zst")
        with tarfile.open(archive) as tf, open(dump, "wb") as out:
            member = tf.extractfile(art.member)
            assert member is not None
            shutil.copyfileobj(member, out, 1 << 20)
        exe = pg_restore_path()
        raw = f"zstd -q -dc {dump} | {exe} --list > /dev/null"
        full = f"zstd -q -dc {dump} > /dev/null"
        same = f"sha256sum {archive} > /dev/null && zstd -qt {dump} && {raw}"
        print(
            f"pgbench -s {args.scale}: dump {art.raw_size / 2**20:.0f} MiB raw, {art.size / 2**20:.0f} MiB zstd; "
            f"archive {os.path.getsize(archive) / 2**20:.0f} MiB; {os.cpu_count()} CPUs; {exe}\n",
            flush=True,
        )
        subprocess.run(["cat", archive, dump], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        times: dict[str, list[float]] = {
            "raw": [],
            "raw same work": [],
            "ours": [],
            "ours wall": [],
            "zstd -dc": [],
            "sha256sum": [],
        }
        rss: list[float] = []
        for i in range(args.repeat):
            times["raw"].append(shell(raw))
            times["raw same work"].append(shell(same))
            res = run_ours(root, cid)
            times["ours"].append(res["seconds"])
            times["ours wall"].append(res["wall"])
            rss.append(res["peak_rss_mb"])
            times["zstd -dc"].append(shell(full))
            times["sha256sum"].append(shell(f"sha256sum {archive}"))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\nmedians of {args.repeat}:")
        labels = {
            "raw": "zstd -dc | pg_restore --list",
            "raw same work": "sha256sum; zstd -t; zstd -dc | pg_restore",
            "ours": "ours: verify --level deep",
            "ours wall": "ours, the whole child process (wall)",
            "zstd -dc": "zstd -dc > /dev/null (reference)",
            "sha256sum": "sha256sum archive (reference)",
        }
        for key, label in labels.items():
            print(f"  {label:<44}{med[key]:>8.2f}s")
        ratio = med["ours"] / med["raw"]
        print(f"\nours / (zstd -dc | pg_restore --list): {ratio:.2f}x  (target <= 1.20)")
        same_ratio = med["ours"] / med["raw same work"]
        print(f"ours / (sha256sum; zstd -t; zstd -dc | pg_restore --list): {same_ratio:.2f}x  (the same work)")
        print(f"ours / (zstd -dc > /dev/null + sha256sum): {med['ours'] / (med['zstd -dc'] + med['sha256sum']):.2f}x")
        print(f"peak RSS of ours: {max(rss):.0f} MB")
        print(
            json.dumps(
                {
                    "scale": args.scale,
                    "dump_raw_mib": round(art.raw_size / 2**20),
                    "archive_mib": round(os.path.getsize(archive) / 2**20),
                    "median_seconds": {k: round(v, 3) for k, v in med.items()},
                    "ratio": round(ratio, 3),
                    "ratio_same_work": round(same_ratio, 3),
                    "peak_rss_mb": round(max(rss), 1),
                }
            )
        )
    finally:
        services.stop(Path(state))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
