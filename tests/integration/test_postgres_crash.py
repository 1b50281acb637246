"""A PostgreSQL restore killed at every crash point loses nothing, and its replay heals it.

Each case runs a real journaled restore in a child process (``pg_crash_child.py``) that SIGKILLs
itself at one named crash point (``CHECKPOINT_CRASH_AT``), against the real server. Then:

* right after the kill, each target database holds either its original data or the
  checkpoint's, and accepts connections (the connection guard lifts a block at once);
* :func:`recover` replays the journal: roll forward if the copies had verified, else back;
* afterwards the data is exactly the checkpoint's (forward) or the original (back), there is no
  ``__restoring`` copy, every database accepts connections, and a second replay changes nothing.

The cases are read from ``crashpoints.REGISTERED``: a new step without a case fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from airflow_checkpoint_provider.core import Store, crashpoints
from airflow_checkpoint_provider.core.engines import postgres as P
from airflow_checkpoint_provider.core.journal import Journal, open_journals
from tests.integration.test_postgres_restore import admin, checkpoint, damage, databases, make_target

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data as S

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POINTS = sorted(p for p in crashpoints.REGISTERED if p.startswith("postgres."))
#: how each point is reached: a plain restore, a restore undone after its cut-over, or a cut-over
#: whose session termination fails after connections were blocked
THEN = {
    "postgres.rename_back.intent": "rollback",
    "postgres.rename_back.applied": "rollback",
    "postgres.phase.rolling_back": "rollback",
    "postgres.unblock.intent": "fail",
    "postgres.unblock.applied": "fail",
}
#: points after which the side-by-side copies had verified and no rollback had begun: the replay
#: finishes the cut-over (a failed step whose block was lifted included: the policy looks only at
#: whether the replacement verified)
FORWARD = {
    "postgres.phase.verified",
    "postgres.phase.cutting_over",
    "postgres.phase.cut_over",
    "postgres.block_connections.intent",
    "postgres.block_connections.applied",
    "postgres.rename.intent",
    "postgres.rename.applied",
    "postgres.unblock.intent",
    "postgres.unblock.applied",
}


def test_every_postgres_crash_point_has_a_case():
    assert POINTS, "the PostgreSQL engine declares its crash points"
    expected = {f"postgres.{s}.{w}" for s in P.STEPS for w in ("intent", "applied")} | {
        f"postgres.phase.{p}" for p in crashpoints.PHASE_POINTS
    }
    assert set(POINTS) == expected
    source = (REPO / "airflow_checkpoint_provider/core/engines/postgres/_cutover.py").read_text()
    for step in P.STEPS:
        assert f'"{step}"' in source


def allows(pg: dict[str, Any], name: str) -> bool | None:
    with admin(pg) as conn:
        row = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return None if row is None else bool(row[0])


@pytest.fixture(scope="module")
def setup(pg, tmp_path_factory):
    """Two databases: ``old`` exists on the target (replaced), ``new`` is restored under a name that
    does not exist yet (created). One checkpoint of both, reused by every case."""
    tag = uuid.uuid4().hex[:8]
    old, src = f"ckc_{tag}_old", f"ckc_{tag}_src"
    S.seed_postgres(pg, old, customers=60, orders=300)
    S.seed_postgres(pg, src, customers=40, orders=200)
    target = make_target(pg)
    store = Store.open(tmp_path_factory.mktemp("crash") / "store", create=True)
    manifest = checkpoint(store, target, [src, old])
    states = {"old": S.state_postgres(pg, old), "src": S.state_postgres(pg, src)}
    yield {
        "old": old,
        "src": src,
        "new": f"ckc_{tag}_new",
        "target": target,
        "store": store,
        "manifest": manifest,
        "states": states,
    }
    with admin(pg) as conn:
        for db in databases(pg):
            if db.startswith(f"ckc_{tag}"):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def run_child(setup: dict[str, Any], point: str, restore_id: str) -> subprocess.CompletedProcess[str]:
    t = setup["target"]
    spec = {
        "root": setup["store"].root,
        "checkpoint_id": setup["manifest"].checkpoint_id,
        "restore_id": restore_id,
        "target": {"host": t.host, "port": t.port, "user": t.user, "password": t.password, "dbname": t.dbname},
        "rename": {setup["src"]: setup["new"]},
        "then": THEN.get(point),
    }
    env = {**os.environ, crashpoints.ENV: point, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "tests/integration/pg_crash_child.py")],
        input=json.dumps(spec) + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_point_then_recover(pg, setup, point):
    old, new = setup["old"], setup["new"]
    # the damaged current state: old is damaged, new does not exist
    S.seed_postgres(pg, old, customers=60, orders=300)
    damage(pg, old)
    with admin(pg) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(new)))
        for db in databases(pg):
            if db.startswith((old, new)) and db != old:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
    damaged = S.state_postgres(pg, old)
    restore_id = f"crash-{uuid.uuid4().hex[:8]}"

    child = run_child(setup, point, restore_id)
    assert child.returncode == -9, f"{point} was not reached:\n{child.stdout}\n{child.stderr[-3000:]}"

    # right after the kill: every existing target accepts connections and holds one of the two states
    deadline = time.monotonic() + 10
    while allows(pg, old) is False and time.monotonic() < deadline:
        time.sleep(0.1)  # the guard process lifts a block within moments
    assert allows(pg, old) is True, f"{old} refuses connections after a kill at {point}"
    assert S.state_postgres(pg, old) in (damaged, setup["states"]["old"])
    if allows(pg, new) is not None:
        assert allows(pg, new) and S.state_postgres(pg, new) == setup["states"]["src"]

    store = setup["store"]
    assert restore_id in open_journals(store.fs)
    entry = Journal.load(store.fs, restore_id).components["postgres"]
    assert entry.roll_forward == (point in FORWARD), (point, entry.phase)
    done = P.recover(setup["target"], entry)
    assert isinstance(done, list)

    if point in FORWARD:
        assert S.state_postgres(pg, old) == setup["states"]["old"], point
        assert S.state_postgres(pg, new) == setup["states"]["src"], point
    else:
        assert S.state_postgres(pg, old) == damaged, point
        assert allows(pg, new) is None, f"{new} should not exist after rolling back at {point}"
    names = databases(pg)
    assert not [d for d in names if d.startswith((old, new)) and d.endswith("__restoring")], point
    assert allows(pg, old) is True
    assert P.recover(setup["target"], entry) == [] or all(
        "accepts" not in line for line in P.recover(setup["target"], entry)
    ), "a second replay changes nothing"
    with psycopg.connect(
        host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname=old, autocommit=True
    ) as conn:
        conn.execute("CREATE TABLE written_after_recovery (x int)")  # serving and writable
    Journal.load(store.fs, restore_id).close()


def test_recover_interrupted_cli_finishes_a_killed_restore(pg, setup, airflow_conn_env, capsys):
    from airflow_checkpoint_provider import cli

    old = setup["old"]
    S.seed_postgres(pg, old, customers=60, orders=300)
    damage(pg, old)
    restore_id = f"cli-{uuid.uuid4().hex[:8]}"
    child = run_child(setup, "postgres.rename.intent", restore_id)
    assert child.returncode == -9
    root = setup["store"].root
    assert cli.main(["--root", root, "recover-interrupted", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{restore_id} of {setup['manifest'].checkpoint_id}" in out and "would finish" in out
    assert restore_id in open_journals(setup["store"].fs)  # a dry run changes nothing
    assert cli.main(["--root", root, "recover-interrupted", "--postgres-conn-id", "postgres_default"]) == 0
    out = capsys.readouterr().out
    assert f"{restore_id} of {setup['manifest'].checkpoint_id}: recovered" in out
    assert "finished the cut-over of " + old in out
    assert open_journals(setup["store"].fs) == []
    assert S.state_postgres(pg, old) == setup["states"]["old"]
    audit = [r for r in setup["store"].audit_log() if r.get("restore_id") == restore_id]
    assert audit and audit[0]["action"] == "recover-interrupted" and audit[0]["status"] == "recovered"
