#!/usr/bin/env python3
"""``verify --level standard`` against ``sha256sum`` of the same archive file, in one run.

    .venv/bin/python bench/verify_throughput.py [--size-mib 1024] [--workdir DIR] [--repeat 3]

It seals one checkpoint whose archive is about ``--size-mib`` MiB (an uncompressed artifact, so the
archive is as large as the data), warms the page cache, then alternately times

* ``sha256sum <archive>``                          the raw tool on the very same file
* ``openssl dgst -sha256 <archive>``               a second reference (OpenSSL's SHA-256, as hashlib uses)
* ours: ``core.levels.verify_at(..., "standard")``  every member's sha256 against the manifest, the
  manifests, and the state record; in a child process whose peak RSS is read with wait4().

It prints the medians, the throughput ratio sha256sum time / ours time (target >= 0.90) and our
peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_store(root: str, size_mib: int) -> tuple[str, str]:
    from airflow_checkpoint_provider.core import Store, staging_key

    store = Store.open(root, create=True)
    staging = store.staging(staging_key("bench", "verify"))
    block = os.urandom(4 * 1024 * 1024)
    with staging.artifact("bench/data.bin", store="bench", kind="bench/raw", compression="none") as sink:
        for i in range(size_mib // 4):
            sink.write(block[i % 7 :] + block[: i % 7])
    manifest = store.seal(staging)
    return manifest.checkpoint_id, os.path.join(root, "checkpoints", f"{manifest.checkpoint_id}.tar")


def ours_child(root: str, cid: str) -> None:
    from airflow_checkpoint_provider.core import Store
    from airflow_checkpoint_provider.core.levels import verify_at

    store = Store.open(root)
    t = time.perf_counter()
    result, record = verify_at(store, cid, "standard")
    elapsed = time.perf_counter() - t
    print(json.dumps({"seconds": elapsed, "ok": result.ok, "bytes": result.bytes_read, "outcome": record.outcome}))


def run_ours(root: str, cid: str) -> tuple[dict, float]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", root, cid], stdout=subprocess.PIPE, text=True)
    _, status, rusage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {out}")
    return json.loads(out), rusage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        ours_child(*args.child)
        return
    if not shutil.which("sha256sum"):
        raise SystemExit("sha256sum is not installed")
    work = tempfile.mkdtemp(prefix="bench-verify-", dir=args.workdir)
    try:
        root = os.path.join(work, "store")
        print(f"sealing a checkpoint of {args.size_mib} MiB in {root} ...", flush=True)
        cid, archive = make_store(root, args.size_mib)
        mib = os.path.getsize(archive) / 2**20
        subprocess.run(["cat", archive], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        tool, ours, rss, ossl = [], [], [], []
        openssl = shutil.which("openssl")
        for _ in range(args.repeat):
            t = time.perf_counter()
            subprocess.run(["sha256sum", archive], stdout=subprocess.DEVNULL, check=True)
            tool.append(time.perf_counter() - t)
            if openssl:  # a second reference: OpenSSL's SHA-256, as Python's hashlib uses
                t = time.perf_counter()
                subprocess.run([openssl, "dgst", "-sha256", archive], stdout=subprocess.DEVNULL, check=True)
                ossl.append(time.perf_counter() - t)
            result, peak = run_ours(root, cid)
            if not result["ok"]:
                raise SystemExit(f"verification failed: {result}")
            ours.append(result["seconds"])
            rss.append(peak)
        m_tool, m_ours = statistics.median(tool), statistics.median(ours)
        ratio = m_tool / m_ours
        print(f"\narchive: {mib:.0f} MiB; medians of {args.repeat}")
        print(f"{'path':<36}{'seconds':>9}{'MiB/s':>9}")
        print(f"{'sha256sum':<36}{m_tool:>9.2f}{mib / m_tool:>9.0f}")
        if ossl:
            m_ossl = statistics.median(ossl)
            print(f"{'openssl dgst -sha256 (reference)':<36}{m_ossl:>9.2f}{mib / m_ossl:>9.0f}")
        print(f"{'ours: verify --level standard':<36}{m_ours:>9.2f}{mib / m_ours:>9.0f}")
        print(f"\nthroughput ours / sha256sum: {ratio:.2f}x  (target >= 0.90)")
        if ossl:
            print(f"throughput ours / openssl dgst: {statistics.median(ossl) / m_ours:.2f}x")
        print(f"peak RSS of ours: {max(rss):.0f} MB")
        print(
            json.dumps(
                {
                    "archive_mib": round(mib),
                    "median_seconds": {"sha256sum": m_tool, "ours": m_ours},
                    "ratio": round(ratio, 3),
                    "peak_rss_mb": round(max(rss), 1),
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
