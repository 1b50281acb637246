#!/usr/bin/env python3
"""Archive + checksum throughput against the raw tools, on the same bytes, in one run.

    .venv/bin/python bench/archive_throughput.py [--size-mib 1024] [--workdir DIR] [--repeat 2]

It writes a data file of ``--size-mib`` MiB (dump-like text, about 3:1 compressible), then times:

* ``cat data > /dev/null``                      the floor: reading the bytes
* ``zstd -T0 -3 -c data | sha256sum``           the raw-tool pipeline
* ours: stage (zstd + sha256 into the store's staging area) then seal (copy into the
  archive re-hashing every byte, fsync, atomic publish), in a child process whose
  peak RSS is read with wait4().

It prints the times, MiB/s of input, the throughput ratio ours / pipeline (target >= 0.8),
and our peak RSS (target <= 150 MB). The page cache is warmed before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_data(path: str, size_mib: int) -> None:
    """Dump-like text: ids, emails, hex tokens, dates. Built from a 16 MiB block of varied lines."""
    rng = random.Random(42)
    lines = []
    n = 0
    while n < 16 * 1024 * 1024:
        i = rng.randrange(10**9)
        line = (
            f"{i}\tuser{rng.randrange(10**6)}@example.com\t{rng.getrandbits(64):016x}\t"
            f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}\t{rng.choice(['active', 'closed', 'pending'])}"
            f"\t{rng.random() * 1000:.2f}\n"
        ).encode()
        lines.append(line)
        n += len(line)
    block = b"".join(lines)
    with open(path, "wb") as f:
        written = 0
        target = size_mib * 1024 * 1024
        k = 0
        while written < target:
            # vary each copy so long-range matching cannot collapse the repeats
            piece = block if k == 0 else block.replace(b"user", b"u%03d" % (k % 1000))
            piece = piece[: target - written]
            f.write(piece)
            written += len(piece)
            k += 1


def timed_shell(cmd: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, out.strip()


def ours_child(data: str, root: str) -> None:
    """Runs in a child process: stage + seal, print timings as JSON."""
    from airflow_checkpoint_provider.core import Store, staging_key

    store = Store.open(root, create=True)
    t0 = time.perf_counter()
    staging = store.staging(staging_key("bench", str(time.time())))
    with staging.artifact("bench/data.bin", store="bench", kind="bench/raw") as sink, open(data, "rb") as src:
        sink.write_from(src)
    t1 = time.perf_counter()
    manifest = store.seal(staging)
    t2 = time.perf_counter()
    art = manifest.artifacts[0]
    print(
        json.dumps(
            {
                "stage_s": t1 - t0,
                "seal_s": t2 - t1,
                "total_s": t2 - t0,
                "sha256": art.sha256,
                "stored": art.size,
                "raw": art.raw_size,
                "id": manifest.checkpoint_id,
            }
        )
    )


def run_ours(data: str, root: str) -> tuple[dict, float]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", data, root], stdout=subprocess.PIPE, text=True)
    _, status, rusage = os.wait4(proc.pid, 0)
    out = proc.stdout.read()
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {out}")
    return json.loads(out), rusage.ru_maxrss / 1024  # KiB -> MiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        ours_child(*args.child)
        return
    for tool in ("zstd", "sha256sum", "cat"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed; run scripts/bootstrap.sh first")
    work = tempfile.mkdtemp(prefix="bench-archive-", dir=args.workdir)
    try:
        data = os.path.join(work, "data.bin")
        print(f"writing {args.size_mib} MiB of dump-like data to {data} ...", flush=True)
        make_data(data, args.size_mib)
        mib = os.path.getsize(data) / 2**20
        timed_shell(f"cat {data} > /dev/null")  # warm the page cache
        results: dict[str, list[float]] = {"cat": [], "zstd|sha256sum": [], "ours": [], "ours_stage": []}
        rss = []
        for i in range(args.repeat):
            results["cat"].append(timed_shell(f"cat {data} > /dev/null")[0])
            t, pipe_out = timed_shell(f"zstd -q -T0 -3 -c {data} | sha256sum")
            results["zstd|sha256sum"].append(t)
            root = os.path.join(work, f"store{i}")
            ours, peak = run_ours(data, root)
            shutil.rmtree(root)
            results["ours"].append(ours["total_s"])
            results["ours_stage"].append(ours["stage_s"])
            rss.append(peak)
        best = {k: min(v) for k, v in results.items()}
        print(
            f"\ninput: {mib:.0f} MiB; stored (zstd level 3): {ours['stored'] / 2**20:.0f} MiB "
            f"(ratio {ours['raw'] / ours['stored']:.2f}:1); best of {args.repeat}"
        )
        print(f"{'path':<34}{'seconds':>9}{'MiB/s':>10}")
        for label, key in (
            ("cat > /dev/null", "cat"),
            ("zstd -T0 -3 | sha256sum", "zstd|sha256sum"),
            ("ours: stage only (zstd+sha256)", "ours_stage"),
            ("ours: stage + seal + fsync", "ours"),
        ):
            print(f"{label:<34}{best[key]:>9.2f}{mib / best[key]:>10.0f}")
        ratio = best["zstd|sha256sum"] / best["ours"]
        print(f"\nthroughput ours / (zstd|sha256sum): {ratio:.2f}x  (target >= 0.80)")
        print(f"peak RSS of ours: {max(rss):.0f} MB  (target <= 150 MB)")
        print(
            json.dumps(
                {
                    "input_mib": round(mib),
                    "best_seconds": best,
                    "ratio": round(ratio, 3),
                    "peak_rss_mb": round(max(rss), 1),
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
