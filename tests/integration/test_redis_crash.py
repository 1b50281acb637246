"""A Redis restore killed at every journaled step, then replayed: real servers, real journal, SIGKILL.

For every crash point the engine declares (``crashpoints.REGISTERED``, ``redis.*``), a child
process (``redis_crash_child``) runs a journaled restore into a private real Redis and
SIGKILLs itself at that point (``CHECKPOINT_CRASH_AT``). Then:

* the serving dbs hold exactly the data from before the restore, or exactly the
  checkpoint's (every key: type, value, TTL; and the functions), and accept writes;
* ``recover(target, entry)`` with the entry read back from the journal file finishes or
  undoes the restore as the policy says, and leaves nothing claimed: no ``loading`` marker,
  no leftover, no temporary file; a second ``recover`` changes nothing.

:data:`EXPECT` names, per point, the state right after the kill and after the replay; a step
added to the engine without a line here fails :func:`test_every_crash_point_has_an_expectation`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_checkpoint_provider.core import crashpoints
from airflow_checkpoint_provider.core.engines.redis import RedisRestore, find_leftovers, recover
from airflow_checkpoint_provider.core.engines.redis.copies import PREFIX, parse_marker
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.journal import Journal
from tests.integration.redis_support import (  # noqa: F401 - server and store are fixtures
    SEEDED,
    S,
    checkpoint,
    client,
    damage,
    functions,
    markers,
    restart_script,
    server,
    store,
    target,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POINTS = sorted(p for p in crashpoints.REGISTERED if p.startswith("redis."))

#: point -> (serving right after the kill, serving after recover); "raises": recover says what to do
EXPECT = {
    "redis.reclaim.intent": ("original", "original"),
    "redis.reclaim.applied": ("original", "original"),
    "redis.swapdb.intent": ("original", "restored"),
    "redis.swapdb.applied": ("restored", "restored"),
    "redis.swap_back.intent": ("restored", "original"),
    "redis.swap_back.applied": ("original", "original"),
    "redis.load_in_place.intent": ("original", "raises"),
    "redis.load_in_place.applied": ("restored", "raises"),
    "redis.place_file.intent": ("original", "original"),
    "redis.place_file.applied": ("original", "original"),
    "redis.restart.intent": ("original", "original"),
    "redis.restart.applied": ("restored", "restored"),
    "redis.unplace_file.intent": ("restored", "raises"),
    "redis.unplace_file.applied": ("original", "original"),
    # phases, side by side: before the copies verified the replay goes back, after it goes forward
    "redis.phase.loading": ("original", "original"),
    "redis.phase.verified": ("original", "restored"),
    "redis.phase.cutting_over": ("original", "restored"),
    "redis.phase.cut_over": ("restored", "restored"),
    "redis.phase.rolling_back": ("restored", "original"),
}


def test_every_crash_point_has_an_expectation() -> None:
    assert set(POINTS) == set(EXPECT)


def test_every_journaled_step_is_declared() -> None:
    """Each ``journal.step("<name>"`` in the engine's source names a declared step."""
    import re

    folder = REPO / "airflow_checkpoint_provider" / "core" / "engines" / "redis"
    used = {m for f in folder.glob("*.py") for m in re.findall(r'journal\.step\(\s*"([a-z_]+)"', f.read_text())}
    assert used and used <= {p.split(".")[1] for p in POINTS}


def run_child(
    store_root: Path,
    info: dict[str, Any],
    cid: str,
    point: str,
    *,
    restore_id: str,
    options: dict[str, Any],
    rollback: bool = False,
) -> subprocess.CompletedProcess:
    job = {
        "store": str(store_root),
        "cid": cid,
        "restore_id": restore_id,
        "options": options,
        "rollback": rollback,
        "target": {"host": info["host"], "port": int(info["port"]), "password": info["password"], "socket_timeout": 30},
    }
    env = {**os.environ, crashpoints.ENV: point, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "tests.integration.redis_crash_child"],
        input=json.dumps(job),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def serving(info: dict[str, Any]) -> tuple[dict, list[str]]:
    return S.state_redis(info, SEEDED), functions(info)


def assert_state(info: dict[str, Any], want: tuple[dict, list[str]], what: str) -> None:
    state, libs = serving(info)
    assert (S.same_redis_state(want[0], state, ttl_tolerance_ms=60_000), libs) == ([], want[1]), what


def assert_writable(info: dict[str, Any]) -> None:
    r = client(info, socket_timeout=5)
    assert r.set("probe:writable", "yes") and r.delete("probe:writable") == 1


def loading_markers(info: dict[str, Any]) -> list[tuple[int, bytes]]:
    out = []
    for db, names in markers(info).items():
        for name in names:
            copy = parse_marker(name, client(info, db).get(name), db)
            if copy is None or copy.state != "rollback":
                out.append((db, name))
    return out


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_point_then_recover(server, store, tmp_path, point) -> None:
    info = server()
    S.seed_redis(info)
    restored = serving(info)
    manifest = checkpoint(store, info)
    step = point.split(".")[1]
    options: dict[str, Any] = {}
    if step == "reclaim":  # an older rollback copy is all that is left besides one empty db
        first = RedisRestore(target(info), store, manifest.checkpoint_id, manifest.artifacts)
        damage(info)
        first.plan()
        first.prepare()
        first.cutover()
        for db in range(2, 14):
            client(info, db).set("taken", db)
        options["rollback_keep"] = 0
    elif step == "load_in_place":
        options["mode"] = "in_place"
    elif step in ("place_file", "restart", "unplace_file"):
        options.update(placement_dir=info["dir"], restart_command=f"sh {restart_script(info, tmp_path)}")
    damage(info)
    client(info, 0).set("written:before-restore", "kept only by the original", ex=3600)
    original = serving(info)
    others = S.state_redis(info, range(2, 14))
    rid = f"crash-{point.replace('.', '-')}"

    proc = run_child(
        store.fs.root,
        info,
        manifest.checkpoint_id,
        point,
        restore_id=rid,
        options=options,
        rollback=step in ("swap_back", "unplace_file") or point == "redis.phase.rolling_back",
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    at_kill, after = EXPECT[point]
    states = {"original": original, "restored": restored}
    assert_state(info, states[at_kill], f"right after the kill at {point}")
    assert_writable(info)

    entry = Journal.load(store.fs, rid).components["redis"]
    if after == "raises":
        with pytest.raises(CheckpointError) as err:
            recover(target(info), entry, store=store)
        assert err.value.hint
        assert_state(info, states[at_kill], f"after the refused replay at {point}")
        if step == "load_in_place":
            assert manifest.checkpoint_id in str(err.value) and "again" in err.value.hint
            return
        assert "restart it" in err.value.hint  # the rollback needs the restart only the operator may run
        subprocess.run(
            ["sh", str(restart_script(info, tmp_path))],
            check=True,
            timeout=60,  # as the restore runs it
            env={**os.environ, "REDISCLI_AUTH": info["password"]},
        )
        _wait_ping(info)
        after = "original"
    lines = recover(target(info), entry, store=store)
    assert lines, point
    assert_state(info, states[after], f"after recover at {point}")
    assert_writable(info)
    assert loading_markers(info) == [], point
    assert [r for r in find_leftovers(target(info), [], store=store) if r["restore_id"] == rid] == []
    assert not list(Path(info["dir"]).glob("dump.rdb.tmp-*"))
    assert S.same_redis_state(others, S.state_redis(info, range(2, 14))) == []
    # a second replay finds nothing to do and changes nothing
    recover(target(info), entry, store=store)
    assert_state(info, states[after], f"after a second recover at {point}")
    if after == "original":
        assert all(not n.startswith(PREFIX + rid.encode()) for names in markers(info).values() for n in names)


def _wait_ping(info: dict[str, Any]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if client(info, socket_timeout=1).ping():
                return
        except Exception:
            time.sleep(0.1)
    raise AssertionError("the server did not come back")


FENCE_CHILD = """
import json, sys
from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines.redis import capture
from airflow_checkpoint_provider.core.engines.targets import RedisTarget
job = json.loads(sys.stdin.read())
store = Store.open(job["store"])
capture(RedisTarget(**job["target"]), store.staging(staging_key("fence", "kill")), mode=job["mode"],
        pause_writes=True, pause_timeout=job["timeout"])
print("DONE")
"""


@pytest.mark.parametrize("mode", ["rdb", "logical"])
def test_kill_mid_fence_blocks_writers_only_until_the_pause_times_out(server, store, mode) -> None:
    info = server()
    S.seed_redis(info)
    job = {
        "store": str(store.fs.root),
        "mode": mode,
        "timeout": 2.0,
        "target": {"host": info["host"], "port": int(info["port"]), "password": info["password"]},
    }
    env = {**os.environ, crashpoints.ENV: "redis.fence.paused", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", FENCE_CHILD],
        input=json.dumps(job),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    t0 = time.monotonic()
    assert client(info, socket_timeout=10).set("written:after-the-kill", "1")  # held by the pause, then served
    held = time.monotonic() - t0
    assert 0.5 < held < 4.0, held
    assert client(info).get("written:after-the-kill") == b"1"


def test_abort_killed_after_the_copies_verified_is_finished_not_cut_over(server, store) -> None:
    """Another component failed, so the restore aborts; it dies right after journaling that
    decision (the first thing ``abort`` does). The copies had verified, but the replay must not
    cut over: it drops them and the data from before the restore keeps serving."""
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    damage(info)
    original = serving(info)
    journal = Journal.begin(store.fs, checkpoint_id=manifest.checkpoint_id, restore_id="aborted-midway")
    part = RedisRestore(target(info), store, manifest.checkpoint_id, manifest.artifacts)
    part.journal = journal.component(part.component, target(info).public())
    part.plan()
    part.prepare()
    part.journal.note(aborting=True)  # abort() starts so, then is killed before it drops anything
    entry = Journal.load(store.fs, "aborted-midway").components["redis"]
    assert entry.roll_forward and len(loading_markers(info)) == 2
    lines = recover(target(info), entry, store=store)
    assert sum("dropped the side-by-side copy" in line for line in lines) == 2
    assert_state(info, original, "after recover")
    assert loading_markers(info) == [] and markers(info) == {}
    assert find_leftovers(target(info), [], store=store) == []
