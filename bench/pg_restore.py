#!/usr/bin/env python3
"""PostgreSQL restore against plain pg_restore, on the same pgbench database, in one run.

    .venv/bin/python bench/pg_restore.py [--scale 70] [--repeat 5] [--jobs 1,2] [--workdir DIR] [--s3]

It starts a private PostgreSQL with ``scripts/services.py`` (state in a temporary directory,
stopped at the end), creates a pgbench database (``pgbench -i -I dtGvp -s 70``: about 1 GB),
writes ``pg_dump -Fc -f FILE`` once and takes our checkpoint of the same database once
(``capture`` + ``Store.seal``). Then ``--repeat`` (5) rounds in alternating order, each
timed run starting after a ``CHECKPOINT`` and ``sync`` (not timed), so that no run pays for
the previous one's writes:

* raw:  ``createdb fresh`` (not timed), then ``pg_restore -d fresh FILE`` timed: pg_restore's
  defaults, one job, reading the gzip-compressed custom dump;
* ours: the checkpoint restored onto the live database, i.e. the steps ``core.recovery.restore``
  runs before its health step (safety checkpoint off: that is a capture, not part of
  restoring): the archive verification (sha256 of every member), then :class:`PostgresRestore`
  side by side: ``plan()`` (server checks, TOC read with ``pg_restore -C -l``), ``prepare()``
  (``pg_restore`` into ``<db>__restoring``, zstd-decompressed out of the archive, then the
  verification: exact ``count(*)`` of every table + the schema hash) and ``cutover()`` (block
  connections, terminate sessions, two renames in one transaction). The health checks that
  follow (another ``count(*)`` per table) are timed and printed separately. It runs in a child
  process that reports its own peak RSS (``VmHWM``); that of the pg_restore it runs, and of the
  raw one, is sampled from ``/proc`` (``bench/_peak.py``: ``wait4()`` would report the parent's
  size). The rollback copy is dropped between rounds (not timed).

``--jobs`` lists the pg_restore job counts of ours to try: 1 streams the dump into pg_restore's
stdin (no temporary file); 2 writes it to a private temporary file first (pg_restore -j needs
to seek). Every round's time is printed (on a shared machine single runs vary a lot), then per path
the median, its ratio to the raw median, and the peak RSS (ours, and the pg_restores).
Targets: the median of ours <= 1.0x the median of raw pg_restore, peak RSS <= 150 MB.

``--s3`` also starts the S3 server (SeaweedFS) and copies the local store, byte for byte, into
``s3://<bucket>/bench-pgr``; each round then also restores the same checkpoint out of the S3
store (``ours jobs=N s3``: the archive verified and the dump streamed from S3 into pg_restore,
never downloaded first). It prints the S3 restore's time against the local store's (target:
local time / S3 time >= 0.80).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _peak import PeakRss  # noqa: E402


def load_services():
    spec = importlib.util.spec_from_file_location("checkpoint_bench_services", ROOT / "scripts" / "services.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- child: ours


def child(spec_json: str) -> None:
    from airflow_checkpoint_provider.core import Store
    from airflow_checkpoint_provider.core.engines import postgres
    from airflow_checkpoint_provider.core.engines.targets import PostgresTarget

    spec = json.loads(spec_json)
    target = PostgresTarget(**spec["target"])
    s3 = None
    if spec.get("s3_creds"):
        from airflow_checkpoint_provider.core.fs_s3 import S3Options

        s3 = S3Options.from_file(spec["s3_creds"])
    store = Store.open(spec["root"], s3=s3)
    steps: dict[str, float] = {}

    def step(name, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        steps[name] = time.perf_counter() - t
        return out

    t0 = time.perf_counter()
    result = step("archive", store.verify, spec["checkpoint_id"])
    assert result.ok, result.problems
    part = postgres.PostgresRestore(
        target,
        store,
        spec["checkpoint_id"],
        result.manifest.artifacts,
        pg_restore=spec["pg_restore"],
        jobs=spec["jobs"],
        workdir=spec["workdir"],
    )
    _, problems = step("plan", part.plan)
    assert not problems, problems
    step("prepare", part.prepare)
    outcome = step("cutover", part.cutover)
    seconds = time.perf_counter() - t0
    checks = step("health", part.health, 0.0)
    assert all(c.ok for c in checks), [str(c) for c in checks if not c.ok]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "steps": steps,
                "rollback": outcome.rollback,
                "peak_rss_mb": self_hwm(),
                "details": outcome.details[spec["db"]],
                "session_options": part.session_options,
            }
        )
    )


def self_hwm() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def run_ours(spec: dict) -> tuple[dict, float, dict[str, float]]:
    """One restore in a child process; its report, wall time and peak RSS (ours: the Python
    process, as it reports itself; pg_restore: sampled)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    with PeakRss(proc.pid) as peak:
        out = proc.stdout.read()
        status = proc.wait()
    wall = time.perf_counter() - t0
    proc.stdout.close()
    if status != 0:
        raise SystemExit(f"benchmark child failed: {out}")
    res = json.loads(out.strip().splitlines()[-1])
    return res, wall, {"ours": res["peak_rss_mb"], "pg_restore": peak.of("pg_restore")}


# --------------------------------------------------------------------------- parent


def copy_to_s3(root: str, s3: dict, work: str) -> tuple[str, str]:
    """Copy the local store at ``root`` byte for byte into ``s3://<bucket>/bench-pgr``; returns that
    root and the 0600 file with the credentials (for the children: never argv or the environment)."""
    from airflow_checkpoint_provider.core.fs_s3 import S3FS, S3Options

    creds = os.path.join(work, "s3.json")
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {
                "endpoint_url": s3["url"],
                "access_key_id": s3["access_key_id"],
                "secret_access_key": s3["secret_access_key"],
            },
            fh,
        )
    url = f"s3://{s3['bucket']}/bench-pgr"
    fs = S3FS(url, S3Options.from_file(creds))
    t0 = time.perf_counter()
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            with fs.atomic_writer(os.path.relpath(path, root)) as out, open(path, "rb") as src:
                while piece := src.read(1 << 20):
                    out.write(piece)
                out.commit()
    print(f"store copied to {url} in {time.perf_counter() - t0:.1f}s", flush=True)
    return url, creds


def steps_text(res: dict) -> str:
    """One round's steps: archive check, plan, prepare (pg_restore, verification), cut-over."""
    d, st = res["details"], res["steps"]
    extra = f", extract {d['extract_seconds']:.2f}s" if "extract_seconds" in d else ""
    return (
        f"archive {st['archive']:.2f}s, plan {st['plan']:.2f}s, prepare {st['prepare']:.2f}s [pg_restore "
        f"{d['pg_restore_seconds']:.2f}s ({d['pg_restore']['input']}{extra}), verify {d['verify_seconds']:.2f}s], "
        f"cut-over {st['cutover']:.2f}s"
    )


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=70, help="pgbench scale factor (70 is about 1 GB)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--jobs", default="1,2", help="pg_restore job counts of ours to try")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--s3", action="store_true", help="also restore out of an S3 store (SeaweedFS)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return

    from airflow_checkpoint_provider.core import Store
    from airflow_checkpoint_provider.core.engines import postgres
    from airflow_checkpoint_provider.core.engines.targets import PostgresTarget

    services = load_services()
    work = tempfile.mkdtemp(prefix="bench-pgr-", dir=args.workdir)
    state = os.path.join(work, "services")
    try:
        started = services.start(Path(state), only=["postgres", "s3"] if args.s3 else ["postgres"])
        info = started["postgres"]
        bin_dir = info["bin_dir"]
        pg_dump, pg_restore, pgbench = (f"{bin_dir}/{n}" for n in ("pg_dump", "pg_restore", "pgbench"))
        if not os.path.exists(pgbench):
            pgbench = shutil.which("pgbench") or pgbench
        env = dict(os.environ, PGPASSWORD=info["password"], LC_ALL="C")  # the baseline's password: env only
        conn = ["-h", info["host"], "-p", str(info["port"]), "-U", info["user"]]
        tdict = {
            "host": info["host"],
            "port": info["port"],
            "user": info["user"],
            "password": info["password"],
            "dbname": "postgres",
        }
        target = PostgresTarget(**tdict)

        def psql(db: str, query: str) -> str:
            return subprocess.run(
                [f"{bin_dir}/psql", *conn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-Atc", query],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            ).stdout.strip()

        def settle() -> None:
            """The same start for every timed run: flush earlier runs' dirty buffers and pages (not timed)."""
            psql("postgres", "CHECKPOINT")
            os.sync()

        db = f"pgbench_s{args.scale}"
        load = os.getloadavg()[0]
        print(
            f"PostgreSQL {info['version']} on {info['host']}:{info['port']}; {os.cpu_count()} CPUs (load average "
            f"{load:.1f} at start); {args.repeat} rounds",
            flush=True,
        )
        subprocess.run([f"{bin_dir}/createdb", *conn, db], check=True, env=env)
        t0 = time.perf_counter()
        subprocess.run(
            [pgbench, *conn, "-i", "-I", "dtGvp", "-q", "-s", str(args.scale), db],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        size = int(psql(db, "SELECT pg_database_size(current_database())"))
        print(f"pgbench -i -I dtGvp -s {args.scale}: database {mib(size)} MiB (setup {time.perf_counter() - t0:.0f}s)")

        dump = os.path.join(work, f"{db}.dump")
        t0 = time.perf_counter()
        subprocess.run([pg_dump, *conn, "-Fc", "-f", dump, db], check=True, env=env)
        print(f"pg_dump -Fc -f FILE: {mib(os.path.getsize(dump))} MiB in {time.perf_counter() - t0:.1f}s")
        root = os.path.join(work, "store")
        store = Store.open(root, create=True)
        staging = store.staging("bench")
        t0 = time.perf_counter()
        postgres.capture(target, staging, databases=[db], pg_dump=pg_dump)
        manifest = store.seal(staging)
        (art,) = manifest.artifacts
        print(
            f"our checkpoint: {mib(art.size)} MiB zstd ({mib(art.raw_size)} MiB raw, pg_dump -Fc -Z0) in "
            f"{time.perf_counter() - t0:.1f}s; {manifest.checkpoint_id}",
            flush=True,
        )
        with open(dump, "rb") as fh:  # warm the page cache for both inputs
            while fh.read(1 << 22):
                pass
        store.verify(manifest.checkpoint_id)

        s3_root, s3_creds = copy_to_s3(root, started["s3"], work) if args.s3 else (None, None)
        jobs_list: list = [int(j) for j in args.jobs.split(",") if j]
        if args.s3:
            jobs_list += [f"{j} s3" for j in jobs_list]
        raw_key = "raw pg_restore -d fresh FILE"
        rss: dict[str, float] = {}
        tool_rss = 0.0  # the pg_restore that ours runs
        results: dict[str, list[dict]] = {}  # per path: every round's report (raw: seconds and peak RSS only)
        for i in range(args.repeat):
            order = ["raw", *jobs_list] if i % 2 == 0 else [*jobs_list, "raw"]
            for what in order:
                if what == "raw":
                    fresh = f"fresh_{i}"
                    subprocess.run([f"{bin_dir}/createdb", *conn, fresh], check=True, env=env)
                    settle()
                    t0 = time.perf_counter()
                    proc = subprocess.Popen([pg_restore, *conn, "-d", fresh, dump], env=env)
                    with PeakRss(proc.pid) as peak:
                        status = proc.wait()
                    t = time.perf_counter() - t0
                    if status != 0:
                        raise SystemExit(f"raw pg_restore failed with status {status}")
                    results.setdefault(raw_key, []).append({"seconds": t})
                    rss[raw_key] = max(rss.get(raw_key, 0.0), peak.of("pg_restore"))
                    subprocess.run([f"{bin_dir}/dropdb", *conn, fresh], check=True, env=env)
                    print(f"  round {i + 1}: {raw_key} {t:.2f}s", flush=True)
                    continue
                key = f"ours jobs={what}"
                on_s3 = str(what).endswith(" s3")
                spec = {
                    "target": tdict,
                    "root": s3_root if on_s3 else root,
                    "s3_creds": s3_creds if on_s3 else None,
                    "checkpoint_id": manifest.checkpoint_id,
                    "db": db,
                    "pg_restore": pg_restore,
                    "jobs": int(str(what).split()[0]),
                    "workdir": work,
                }
                settle()
                res, _wall, peaks = run_ours(spec)
                results.setdefault(key, []).append(res)
                rss[key] = max(rss.get(key, 0.0), peaks["ours"])
                tool_rss = max(tool_rss, peaks["pg_restore"])
                for copy in res["rollback"]:
                    postgres.drop_rollback(target, copy)
                print(f"  round {i + 1}: {key} {res['seconds']:.2f}s ({steps_text(res)})", flush=True)

        def median(values: list[float]) -> float:
            return statistics.median(values)

        rounds = {k: [r["seconds"] for r in v] for k, v in results.items()}
        medians = {k: median(v) for k, v in rounds.items()}
        raw = medians[raw_key]
        print(
            f"\n  raw side: pg_restore -h HOST -p PORT -U USER -d fresh FILE  (pg_restore defaults: 1 job; the "
            f"gzip -Fc dump; createdb not timed). Median of {args.repeat} rounds, each path in the same run."
        )
        print(
            f"  {'path':<30}{'median s':>9}{'x raw':>8}{'best s':>8}{'peak RSS MB':>13}   every round (s)"
            "   [peak RSS: raw = pg_restore; ours = our Python process]"
        )
        for key in [raw_key, *[k for k in results if k != raw_key]]:
            print(
                f"  {key:<30}{medians[key]:>9.2f}{medians[key] / raw:>8.2f}{min(rounds[key]):>8.2f}"
                f"{rss[key]:>13.0f}   {', '.join(f'{t:.2f}' for t in rounds[key])}"
            )
            if key == raw_key:
                continue
            mid = sorted(results[key], key=lambda r: r["seconds"])[len(results[key]) // 2]
            print(
                f"  {'':<30}median round: {steps_text(mid)}; then health checks {mid['steps']['health']:.2f}s "
                "(not in the time)"
            )
            print(
                f"  {'':<30}pg_restore {' '.join(mid['details']['pg_restore']['options'])} (PGOPTIONS "
                f"{mid['session_options']})"
            )
        fastest = min((k for k in results if k != raw_key), key=medians.__getitem__)
        print(
            f"\n  ours ({fastest}): median {medians[fastest] / raw:.2f}x raw pg_restore (target <= 1.00), best "
            f"{min(rounds[fastest]) / min(rounds[raw_key]):.2f}x; peak RSS {max(rss[k] for k in results if k != raw_key):.0f}"
            f" MB (target <= 150; the pg_restore it runs {tool_rss:.0f} MB, raw pg_restore {rss[raw_key]:.0f} MB)"
        )
        for j in (k for k in jobs_list if not str(k).endswith(" s3")) if args.s3 else ():
            local, remote = medians[f"ours jobs={j}"], medians[f"ours jobs={j} s3"]
            print(
                f"  restore out of S3, jobs={j}: median {remote:.2f}s against {local:.2f}s out of the local store: "
                f"{local / remote:.2f}x the local speed (target >= 0.80)"
            )
        print(
            json.dumps(
                {
                    "db_bytes": size,
                    "median_seconds": {k: round(v, 3) for k, v in medians.items()},
                    "rounds": {k: [round(t, 3) for t in v] for k, v in rounds.items()},
                    "peak_rss_mb": {k: round(v, 1) for k, v in rss.items()},
                    "ratio_median": round(medians[fastest] / raw, 3),
                }
            )
        )
    finally:
        services.stop(Path(state))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
