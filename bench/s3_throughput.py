#!/usr/bin/env python3
"""Upload into the S3 store against boto3's own ``upload_file`` of the same file to the same server, in one run.

    .venv/bin/python bench/s3_throughput.py --services-dir DIR [--size-mib 1024] [--repeat 3]

``DIR`` holds services started with ``scripts/services.py start --only s3``. One file of
``--size-mib`` MiB (random bytes) is written once; then, alternately, each in a child process of its own
whose peak RSS (``VmHWM``) is read from ``/proc``:

* ``boto3``: ``client.upload_file`` (s3transfer, the engine of ``aws s3 cp``: threads, 8 MiB parts);
* ``store``: ``S3FS.atomic_writer`` fed 1 MiB reads of the file (one part in memory, one thread);
* ``store+aes``: the same through the AES-256-GCM chunked writer of ``core/crypt.py``;
* ``read``: ``S3FS.open_read`` streamed to nowhere (what a restore reads).

It prints the medians, the ratios boto3 time / store time (target >= 0.80), encrypted / plain
(target >= 0.85), and the peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from airflow_checkpoint_provider.core.fs_s3 import S3FS, S3Options
mode, path, info = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
opts = S3Options.from_file(info["creds"])
fs = S3FS(f"s3://{info['bucket']}/bench", opts)
t0 = time.monotonic()
if mode == "boto3":
    fs.client.upload_file(path, info["bucket"], "bench/boto3.bin")
elif mode in ("store", "store+aes"):
    with fs.atomic_writer(f"{mode}.bin") as w, open(path, "rb") as f:
        out = w
        if mode == "store+aes":
            from airflow_checkpoint_provider.core.crypt import EncryptingWriter
            out = EncryptingWriter(w, os.urandom(32), "bench")
        while piece := f.read(1024 * 1024):
            out.write(piece)
        if mode == "store+aes":
            out.close()
        w.commit()
elif mode == "read":
    with fs.open_read("store.bin") as f:
        while f.read(1024 * 1024):
            pass
took = time.monotonic() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"seconds": took, "peak_mib": int(hwm) / 1024}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services-dir", required=True)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    s3 = json.load(open(os.path.join(args.services_dir, "services.json")))["s3"]
    with tempfile.TemporaryDirectory(prefix="s3-bench-") as work:
        creds = os.path.join(work, "s3.json")
        fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:  # the credentials go to the children in a 0600 file, not argv or env
            json.dump(
                {
                    "endpoint_url": s3["url"],
                    "access_key_id": s3["access_key_id"],
                    "secret_access_key": s3["secret_access_key"],
                },
                fh,
            )
        data = os.path.join(work, "data.bin")
        with open(data, "wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(1024 * 1024))
        info = json.dumps({"bucket": s3["bucket"], "creds": creds})
        modes = ("boto3", "store", "store+aes", "read")
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for _ in range(args.repeat):
            for mode in modes:
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, ROOT, mode, data, info], capture_output=True, text=True, check=True
                )
                runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {m: statistics.median(r["seconds"] for r in runs[m]) for m in modes}
    for m in modes:
        peak = max(r["peak_mib"] for r in runs[m])
        print(f"{m:<10} {med[m]:7.2f}s  {args.size_mib / med[m]:7.1f} MiB/s  peak RSS {peak:6.1f} MiB")
    print(f"store vs boto3 upload_file: {med['boto3'] / med['store']:.2f}x (target >= 0.80)")
    print(f"encrypted vs plain:         {med['store'] / med['store+aes']:.2f}x (target >= 0.85)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
