#!/usr/bin/env python3
"""Retention planning over 10,000 checkpoints (target < 2 s), with every rule, tag rules and a cap.

    .venv/bin/python bench/retention_plan.py [--count 10000] [--repeat 5]

The checkpoints are synthetic :class:`~airflow_checkpoint_provider.core.retention.Candidate`
records spread over two years (every 30 minutes, with tags and a few protected); the timing
covers :func:`~airflow_checkpoint_provider.core.retention.plan` only, which is what runs
after the store was read. It prints the median and worst time and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

POLICY = {
    "keep_last": 10,
    "keep_within": "7d",
    "keep_hourly": 48,
    "keep_daily": 30,
    "keep_weekly": 12,
    "keep_monthly": 24,
    "keep_yearly": 5,
    "max_total_bytes": 4 * 10**12,
    "tags": {"pre-migration": {"keep_within": "90d", "keep_monthly": 12}, "safety": {"keep_within": "7d"}},
}


def main() -> None:
    from airflow_checkpoint_provider.core.retention import Candidate, Policy, plan

    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(1)
    now = datetime(2026, 11, 30, tzinfo=UTC)
    step = timedelta(days=730) / args.count
    cands = [
        Candidate(
            f"ckpt-{i:06d}",
            now - i * step,
            rng.choice([(), ("scheduled",), ("pre-migration",), ("safety",)]),
            rng.randint(10**8, 10**9),
            ("pinned",) if rng.random() < 0.01 else (),
        )
        for i in range(args.count)
    ]
    policy = Policy.parse(POLICY)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        result = plan(cands, policy, now=now)
        times.append(time.perf_counter() - t)
    kept = sum(1 for d in result.decisions if d.keep)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    median = statistics.median(times)
    print(f"{args.count} checkpoints: {kept} kept, {args.count - kept} to delete")
    print(f"plan(): median {median:.3f} s, worst {max(times):.3f} s of {args.repeat}  (target < 2 s)")
    print(f"peak RSS: {peak:.0f} MB")
    print(
        json.dumps(
            {
                "count": args.count,
                "median_s": round(median, 4),
                "worst_s": round(max(times), 4),
                "kept": kept,
                "peak_rss_mb": round(peak, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
