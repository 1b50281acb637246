#!/usr/bin/env python3
"""PostgreSQL capture against plain pg_dump, on the same pgbench databases, in one run.

    .venv/bin/python bench/pg_capture.py [--scales 10,70] [--repeat 2] [--workdir DIR] [--no-exact-counts]

It starts a private PostgreSQL 15 with ``scripts/services.py`` (state in a temporary
directory, stopped at the end), creates one pgbench database per scale
(``pgbench -i -I dtGvp -s N``; scale 70 is about 1 GB) plus a database with one table of
realistic rows (``--realistic-rows``), and for each times, best of ``--repeat``:

* ``pg_dump -Fc -f FILE db``                  the baseline: custom format, default gzip
* ours, custom:    ``capture(..., dump_format="custom")``: ``pg_dump -Fc -Z0`` streamed
  through zstd (multithreaded) + sha256 into a store's staging area, plus exact row counts
  and the schema hash in the same snapshot;
* ``pg_dump -Fd -j 2 -f DIR db``              the parallel baseline (gzip per file)
* ours, directory: ``capture(..., dump_format="directory", jobs=2)``.

Ours runs in a child process whose peak RSS comes from ``os.wait4``. Both sides connect over
TCP with a password, as a worker would. The page cache is warmed before timing. It also
prints the floor: ``pg_dump -Fc -Z0 > /dev/null``, the server's COPY plus pg_dump with no
compression at all; no pg_dump-based capture can be faster than that.
Targets: custom time <= 0.6x ``pg_dump -Fc``, size <= 1.0x, peak RSS <= 150 MB at every scale.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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
    store = Store.open(spec["root"], create=True)
    staging = store.staging("bench")
    t0 = time.perf_counter()
    (art,) = postgres.capture(
        target,
        staging,
        databases=spec["db"],
        dump_format=spec["format"],
        jobs=spec["jobs"],
        pg_dump=spec["pg_dump"],
        exact_counts=spec["exact_counts"],
    )
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "size": art.size, "raw": art.raw_size, "rows": art.fingerprints["rows"]}))


def run_ours(spec: dict) -> tuple[dict, float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read()
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {out}")
    return json.loads(out), wall, rusage.ru_maxrss / 1024  # KiB -> MiB


# --------------------------------------------------------------------------- helpers


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def du(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


#: A table of realistic, moderately compressible rows (pgbench's accounts are mostly blank padding,
#: which makes gzip unusually cheap): ids, timestamps, hashes, small JSON documents, e-mail addresses.
REALISTIC = """
CREATE TABLE events AS
SELECT g AS id, timestamptz '2026-01-01' + g * interval '1 second' AS ts, md5(g::text) AS h,
       jsonb_build_object('user', g % 10000, 'kind', (ARRAY['click', 'view', 'buy'])[1 + g % 3],
                          'v', round((random() * 1000)::numeric, 2)) AS payload,
       'user' || (g % 50000) || '@example.com' AS email
FROM generate_series(1, {rows}) g;
ALTER TABLE events ADD PRIMARY KEY (id);
VACUUM ANALYZE events;
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="10,70", help="pgbench scale factors (70 is about 1 GB)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument(
        "--realistic-rows",
        type=int,
        default=4_000_000,
        help="also bench a table of realistic rows (4M is about 730 MB); 0 to skip",
    )
    ap.add_argument("--no-exact-counts", action="store_true", help="reltuples estimates instead of count(*)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return

    services = load_services()
    work = tempfile.mkdtemp(prefix="bench-pg-", dir=args.workdir)
    state = os.path.join(work, "services")
    try:
        info = services.start(Path(state), only=["postgres"])["postgres"]
        bin_dir = info["bin_dir"]
        pg_dump, pgbench = f"{bin_dir}/pg_dump", f"{bin_dir}/pgbench"
        if not os.path.exists(pgbench):
            pgbench = shutil.which("pgbench") or pgbench
        if not os.path.exists(pgbench):
            raise SystemExit("pgbench not found: install postgresql-contrib (Debian ships it with postgresql-15)")
        env = dict(os.environ, PGPASSWORD=info["password"], LC_ALL="C")  # the baselines' password: env only
        conn = ["-h", info["host"], "-p", str(info["port"]), "-U", info["user"]]
        target = {
            "host": info["host"],
            "port": info["port"],
            "user": info["user"],
            "password": info["password"],
            "dbname": "postgres",
        }
        print(
            f"PostgreSQL {info['version']} on {info['host']}:{info['port']}; {os.cpu_count()} CPUs; "
            f"best of {args.repeat}; exact counts: {not args.no_exact_counts}\n",
            flush=True,
        )

        def psql(db: str, query: str) -> str:
            return subprocess.run(
                [f"{bin_dir}/psql", *conn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-Atc", query],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            ).stdout.strip()

        datasets: list[tuple[str, str, list[str] | str]] = [
            (f"pgbench -s {scale}", f"pgbench_s{scale}", [pgbench, *conn, "-i", "-I", "dtGvp", "-q", "-s", str(scale)])
            for scale in (int(s) for s in args.scales.split(",") if s)
        ]
        if args.realistic_rows:
            datasets.append((f"events x {args.realistic_rows}", "events", REALISTIC.format(rows=args.realistic_rows)))

        results = []
        for label, db, setup in datasets:
            subprocess.run([f"{bin_dir}/createdb", *conn, db], check=True, env=env)
            t0 = time.perf_counter()
            if isinstance(setup, list):
                subprocess.run([*setup, db], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                subprocess.run(
                    [f"{bin_dir}/psql", *conn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", "-"],
                    input=setup,
                    text=True,
                    check=True,
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
            size = int(psql(db, "SELECT pg_database_size(current_database())"))
            print(f"{label}: database {mib(size)} MiB (setup took {time.perf_counter() - t0:.0f}s)", flush=True)
            subprocess.run([pg_dump, *conn, "-Fc", "-Z0", db], check=True, env=env, stdout=subprocess.DEVNULL)  # warm
            t0 = time.perf_counter()
            subprocess.run([pg_dump, *conn, "-Fc", "-Z0", db], check=True, env=env, stdout=subprocess.DEVNULL)
            floor = time.perf_counter() - t0

            best: dict[str, float] = {}
            sizes: dict[str, int] = {}
            rss: dict[str, float] = {}
            walls: dict[str, float] = {}
            for i in range(args.repeat):
                t0 = time.perf_counter()
                subprocess.run([pg_dump, *conn, "-Fc", "-Z0", db], check=True, env=env, stdout=subprocess.DEVNULL)
                floor = min(floor, time.perf_counter() - t0)

                out = os.path.join(work, f"{db}.dump")
                t = timed([pg_dump, *conn, "-Fc", "-f", out, db], env)
                best["pg_dump -Fc"] = min(best.get("pg_dump -Fc", t), t)
                sizes["pg_dump -Fc"] = du(out)
                os.unlink(out)

                outdir = os.path.join(work, f"{db}.dir")
                t = timed([pg_dump, *conn, "-Fd", "-j", "2", "-f", outdir, db], env)
                best["pg_dump -Fd -j2"] = min(best.get("pg_dump -Fd -j2", t), t)
                sizes["pg_dump -Fd -j2"] = du(outdir)
                shutil.rmtree(outdir)

                for key, fmt, jobs in (("ours custom", "custom", 1), ("ours dir -j2", "directory", 2)):
                    root = os.path.join(work, f"store-{i}-{fmt}")
                    spec = {
                        "target": target,
                        "root": root,
                        "db": db,
                        "format": fmt,
                        "jobs": jobs,
                        "pg_dump": pg_dump,
                        "exact_counts": not args.no_exact_counts,
                    }
                    res, wall, peak = run_ours(spec)
                    shutil.rmtree(root)
                    best[key] = min(best.get(key, res["seconds"]), res["seconds"])
                    walls[key] = min(walls.get(key, wall), wall)
                    sizes[key] = res["size"]
                    rss[key] = max(rss.get(key, 0.0), peak)
                    rows = res["rows"]

            print(f"  rows: {rows}")
            print(
                f"  floor: pg_dump -Fc -Z0 > /dev/null (no compression, no hashing, no counts): {floor:.2f}s "
                f"= {floor / best['pg_dump -Fc']:.2f}x pg_dump -Fc"
            )
            print(f"  {'path':<20}{'seconds':>9}{'size MiB':>10}{'peak RSS MB':>13}  (child wall s)")
            for key in ("pg_dump -Fc", "ours custom", "pg_dump -Fd -j2", "ours dir -j2"):
                extra = f"{rss[key]:>13.0f}  ({walls[key]:.2f})" if key in rss else ""
                print(f"  {key:<20}{best[key]:>9.2f}{mib(sizes[key]):>10}{extra}")
            r_time = best["ours custom"] / best["pg_dump -Fc"]
            r_size = sizes["ours custom"] / sizes["pg_dump -Fc"]
            r_dtime = best["ours dir -j2"] / best["pg_dump -Fd -j2"]
            r_dsize = sizes["ours dir -j2"] / sizes["pg_dump -Fd -j2"]
            print(f"  custom:    time {r_time:.2f}x pg_dump -Fc (target <= 0.60), size {r_size:.2f}x (target <= 1.00)")
            print(f"  directory: time {r_dtime:.2f}x pg_dump -Fd -j2, size {r_dsize:.2f}x")
            print(f"  peak RSS: {max(rss.values()):.0f} MB (target <= 150)\n", flush=True)
            results.append(
                {
                    "dataset": label,
                    "db_bytes": size,
                    "floor_seconds": round(floor, 3),
                    "best_seconds": {k: round(v, 3) for k, v in best.items()},
                    "sizes": sizes,
                    "peak_rss_mb": {k: round(v, 1) for k, v in rss.items()},
                    "time_ratio_custom": round(r_time, 3),
                    "size_ratio_custom": round(r_size, 3),
                }
            )
            subprocess.run([f"{bin_dir}/dropdb", *conn, db], check=True, env=env)
        print(json.dumps(results))
    finally:
        services.stop(Path(state))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
