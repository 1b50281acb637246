"""Redis restore against real, private Redis servers (no fakes).

Every test starts its own server(s) with ``scripts/services.py`` (they are destroyed, flushed,
restarted and given ACL users), seeds them with ``scripts/sample_data.py`` (every type, TTLs,
streams with consumer groups and pending entries, two dbs, a Lua function), takes a real
checkpoint with ``capture`` (rdb and logical) + ``Store.seal``, damages the data, restores
through ``core.recovery.restore`` and compares ``state_redis`` (every key of every db: type,
exact value, TTL) before and after.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines.redis import _load as L
from airflow_checkpoint_provider.core.engines.redis import _plan as P
from airflow_checkpoint_provider.core.engines.redis import health, list_rollbacks
from airflow_checkpoint_provider.core.engines.redis import restore as R
from airflow_checkpoint_provider.core.engines.redis.copies import drop_rollback
from airflow_checkpoint_provider.core.engines.redis.encoding import crc64
from airflow_checkpoint_provider.core.engines.redis.health import max_rdb_version
from airflow_checkpoint_provider.core.engines.redis.logical import FORMAT_VERSION, MAGIC
from airflow_checkpoint_provider.core.errors import EngineError, NotFoundError, VerificationFailedError
from airflow_checkpoint_provider.core.manifest import Manifest
from airflow_checkpoint_provider.core.recovery import RestoreFailedError, RestoreRefusedError
from tests.integration.redis_support import (  # noqa: F401 - server and store are fixtures
    ALL,
    SEEDED,
    S,
    checkpoint,
    client,
    damage,
    full_state,
    functions,
    restart_script,
    run_restore,
    server,
    store,
    target,
    unchanged,
    without_marker,
)
from tests.unit.core.helpers import archive_path, flip_byte, member_data_offsets

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- round trips


def test_walk_matches_the_rdb_parser(server, store) -> None:
    """The restore's specialised walk yields exactly what RdbParser.records() does (every type)."""
    from airflow_checkpoint_provider.core.engines.redis import Entry, Function, RdbParser

    info = server()
    S.seed_redis(info)
    client(info, 2).set(b"k" * 100, b"v" * 70_000)  # a long key, a value bigger than a read chunk
    manifest = checkpoint(store, info)
    with store.open_artifact(manifest.checkpoint_id, "redis/dump.rdb") as f:
        data = f.read()
    import io

    expected = [
        (e.db, e.key, e.type, e.value, e.expire_ms, e.idle, e.freq) if isinstance(e, Entry) else e
        for e in RdbParser(io.BytesIO(data)).records()
        if isinstance(e, (Entry, Function))
    ]
    walk = L._Walk(io.BytesIO(data), chunk_size=4096)
    walk.begin()
    got = [x for x in walk.entries() if isinstance(x, (tuple, Function))]
    assert got == expected and len(got) == sum(manifest.artifacts[0].fingerprints["keys"].values()) + 1


@pytest.mark.parametrize("mode", ["rdb", "logical"])
def test_round_trip_side_by_side(server, store, mode, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="airflow_checkpoint_provider")
    info = server()
    S.seed_redis(info)
    original = S.state_redis(info, SEEDED)
    manifest = checkpoint(store, info, mode)
    damage(info)
    damaged = S.state_redis(info, ALL)
    made: list[R.RedisRestore] = []
    report = run_restore(store, manifest.checkpoint_id, info, made=made)

    assert S.same_redis_state(original, S.state_redis(info, SEEDED)) == []
    assert client(info).fcall("hello", 0) == b"hi"
    assert report.healthy, [str(h) for h in report.health]
    assert report.safety_checkpoint_id and store.exists(report.safety_checkpoint_id)
    # db1 was flushed by the damage: an empty db keeps no rollback copy, db14 is free again
    assert report.outcomes[0].rollback == ["db0 -> db15"]
    # the rollback db holds the damaged state, and is listed (from the store's index, and by a scan)
    for rollbacks in (
        {r["db"]: r for r in list_rollbacks(target(info))},
        {r["db"]: r for r in list_rollbacks(target(info), store=store)},
    ):
        assert sorted(rollbacks) == [15]
        assert rollbacks[15]["state"] == "rollback" and rollbacks[15]["of_db"] == 0
        assert rollbacks[15]["checkpoint_id"] == manifest.checkpoint_id
        assert rollbacks[15]["keys"] == len(damaged[0]) and rollbacks[15]["memory_bytes"] > 0
    after_all = without_marker(S.state_redis(info, ALL))
    assert S.same_redis_state({0: damaged[0]}, {0: after_all[15]}) == []
    assert 14 not in S.state_redis(info, ALL)
    # health reports expected/actual
    checks = health(target(info), {"keys": {"0": len(original[0]), "1": len(original[1])}})
    assert all(c.ok for c in checks), [str(c) for c in checks]
    wrong = health(target(info), {"keys": {"0": len(original[0]) + 5}}, tolerance=0.0)
    assert not wrong[-1].ok and wrong[-1].expected == len(original[0]) + 5 and wrong[-1].actual == len(original[0])
    assert health(target(info), {"keys": {"0": len(original[0]) + 5}}, tolerance=0.1)[-1].ok

    # rollback: the damaged state serves again, the markers and the restored copies are gone
    made[0].rollback()
    assert S.same_redis_state(damaged, S.state_redis(info, ALL)) == []
    assert list_rollbacks(target(info)) == []
    assert functions(info) == []
    assert info["password"] not in caplog.text


def test_restore_into_another_server(server, store) -> None:
    a, b = server("a"), server("b")
    S.seed_redis(a)
    original = S.state_redis(a, SEEDED)
    manifest = checkpoint(store, a)
    client(b, 0).set("other", "app")
    client(b, 3).set("unrelated", "stays")
    report = run_restore(store, manifest.checkpoint_id, b, tgt=target(b))
    assert report.healthy
    after = S.state_redis(b, ALL)
    assert S.same_redis_state(original, {d: after[d] for d in SEEDED}) == []
    assert after[3] == {b"unrelated": ("string", b"stays", -1)}
    assert client(b).fcall("hello", 0) == b"hi"
    assert S.state_redis(a, SEEDED).keys() == original.keys()  # the source was only read
    # into an empty server: nothing is replaced, so no safety checkpoint is taken
    c = server("c")
    report = run_restore(store, manifest.checkpoint_id, c, tgt=target(c))
    assert report.healthy and report.safety_checkpoint_id is None
    assert S.same_redis_state(original, without_marker(S.state_redis(c, ALL))) == []


def test_in_place(server, store) -> None:
    info = server()
    S.seed_redis(info)
    original = S.state_redis(info, SEEDED)
    manifest = checkpoint(store, info, "logical")
    damage(info)
    made: list[R.RedisRestore] = []
    report = run_restore(store, manifest.checkpoint_id, info, made=made, mode="in_place")
    assert S.same_redis_state(original, S.state_redis(info, ALL)) == []
    assert report.outcomes[0].rollback == [] and report.outcomes[0].details["removed"] == {"db0": 2, "db1": 0}
    assert report.healthy and list_rollbacks(target(info)) == []
    with pytest.raises(EngineError, match="keeps no rollback copy"):
        made[0].rollback()


def test_subset_of_dbs_into_a_chosen_spare(server, store) -> None:
    info = server()
    S.seed_redis(info)
    original = S.state_redis(info, SEEDED)
    manifest = checkpoint(store, info)
    damage(info)
    client(info, 1).set("after", "damage")
    damaged1 = S.state_redis(info, [1])
    report = run_restore(store, manifest.checkpoint_id, info, dbs=[0], spare_db=5)
    assert report.outcomes[0].rollback == ["db0 -> db5"]
    after = S.state_redis(info, ALL)
    assert S.same_redis_state(damaged1, {1: after[1]}) == []  # db1 was not selected
    assert S.same_redis_state({0: original[0]}, {0: after[0]}) == []
    assert [r["db"] for r in list_rollbacks(target(info))] == [5]
    # dropping: only marked dbs, and then the db is free again
    with pytest.raises(NotFoundError, match="db0 is not a copy made by a restore"):
        drop_rollback(target(info), 0)
    drop_rollback(target(info), 5)
    assert list_rollbacks(target(info)) == [] and client(info, 5).dbsize() == 0


def test_file_placement_round_trip(server, store, tmp_path) -> None:
    info = server()
    S.seed_redis(info)
    original = S.state_redis(info, SEEDED)
    manifest = checkpoint(store, info)
    damage(info)
    damaged = S.state_redis(info, ALL)
    script = restart_script(info, tmp_path)
    made: list[R.RedisRestore] = []
    report = run_restore(
        store, manifest.checkpoint_id, info, made=made, placement_dir=info["dir"], restart_command=f"sh {script}"
    )
    assert report.healthy, [str(h) for h in report.health]
    assert S.same_redis_state(original, S.state_redis(info, ALL)) == []
    assert client(info).fcall("hello", 0) == b"hi"
    outcome = report.outcomes[0]
    assert outcome.details["live_state_saved"] is True
    assert len(outcome.rollback) == 1 and Path(outcome.rollback[0]).name.startswith("dump.rdb.rollback-")
    assert not list(Path(info["dir"]).glob("dump.rdb.tmp-*"))
    assert info["password"] not in Path(script).read_text()
    # rollback puts the live state from before the restore back
    made[0].rollback()
    assert S.same_redis_state(damaged, S.state_redis(info, ALL)) == []


# --------------------------------------------------------------------------- nothing changes


def test_dry_run_changes_nothing_and_counts_conflicts(server, store) -> None:
    info = server()
    S.seed_redis(info)
    n0 = client(info).dbsize()
    manifest = checkpoint(store, info)
    damage(info)
    before = full_state(info)
    report = run_restore(store, manifest.checkpoint_id, info, dry_run=True)
    assert unchanged(before, info)
    assert (
        report.dry_run
        and report.plan.ok
        and not report.outcomes
        and store.list()[-1].checkpoint_id == manifest.checkpoint_id
    )
    db0, db1 = report.plan.items
    assert (db0.target, db0.staging_name, db1.staging_name) == ("db0", "db15", "db14")
    replaced = n0 - 12  # 10 sessions, list:small and stream:events were deleted
    assert f"{replaced} keys of db0 will be replaced by the checkpoint's values" in db0.conflicts
    assert (
        "2 keys of db0 are not in the checkpoint and will disappear (kept in the rollback copy db15)" in db0.conflicts
    )
    assert db1.action == "create" and db1.conflicts == []
    assert any("function libraries will be loaded" in n for n in db0.notes)


def _planned(store: Store, info: dict[str, Any], cid: str, **kw: Any) -> list[str]:
    part = R.RedisRestore(target(info), store, cid, store.get(cid).manifest.artifacts, **kw)
    items, problems = part.plan()
    assert not problems, problems
    return [c for i in items if i.target == "db0" for c in i.conflicts]


def test_plan_of_a_big_checkpoint_estimates_the_replaced_keys_and_says_so(server, store, monkeypatch) -> None:
    """Above the exact limit the plan samples the artifact's first keys: close, and labelled an estimate."""
    monkeypatch.setattr(P, "EXACT_PLAN_KEYS", 1000)
    monkeypatch.setattr(P, "PLAN_SAMPLE", 800)
    info = server()
    c = client(info)
    c.mset({f"key:{i}": i for i in range(4000)})
    manifest = checkpoint(store, info)
    c.delete(*[f"key:{i}" for i in range(0, 4000, 4)])  # 1000 of the checkpoint's keys gone
    c.mset({f"new:{i}": i for i in range(300)})  # 300 keys the checkpoint does not hold
    estimated = _planned(store, info, manifest.checkpoint_id)
    assert len(estimated) == 2 and "estimated from 800 of the checkpoint's 4000 keys of db0" in estimated[0]
    about = int(estimated[0].split()[1])
    assert abs(about - 3000) <= 300, estimated  # 800 of 4000 sampled: a few percent off at most
    assert estimated[1].startswith(f"about {3300 - about} keys of db0 are not in the checkpoint and will disappear")
    exact = _planned(store, info, manifest.checkpoint_id, plan_counts="exact")
    assert exact == [
        "3000 keys of db0 will be replaced by the checkpoint's values",
        "300 keys of db0 are not in the checkpoint and will disappear (kept in the rollback copy db15)",
    ]


def test_plan_gives_bounds_for_a_db_too_far_into_the_artifact(server, store, monkeypatch) -> None:
    """A db behind many keys of others is not sampled: the plan says 'up to' / 'at least', not a count."""
    monkeypatch.setattr(P, "EXACT_PLAN_KEYS", 1000)
    monkeypatch.setattr(P, "PLAN_SAMPLE", 100)
    monkeypatch.setattr(P, "PLAN_SAMPLE_REACH", 500)
    info = server()
    client(info, 1).mset({f"one:{i}": i for i in range(2000)})  # db1 only: db0 comes first in the RDB
    client(info, 2).mset({f"two:{i}": i for i in range(10)})
    manifest = checkpoint(store, info)
    client(info, 2).delete("two:0")
    part = R.RedisRestore(target(info), store, manifest.checkpoint_id, manifest.artifacts, plan_counts="estimate")
    client(info, 1).flushdb()  # db1 is empty now: only db2 holds keys, behind db1's 2000 in the artifact
    items, problems = part.plan()
    assert not problems
    (db2,) = [i for i in items if i.target == "db2"]
    assert len(db2.conflicts) == 1 and db2.conflicts[0].startswith(
        "up to 9 keys of db2 will be replaced by the checkpoint's values (not counted"
    )


def test_corrupt_archive_is_refused(server, store) -> None:
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    damage(info)
    path = archive_path(store, manifest.checkpoint_id)
    offset, size = member_data_offsets(path)["artifacts/redis/dump.rdb.zst"]
    flip_byte(path, offset + size // 2)
    before = full_state(info)
    with pytest.raises(VerificationFailedError, match="redis/dump.rdb"):
        run_restore(store, manifest.checkpoint_id, info)
    assert unchanged(before, info)


def test_newer_rdb_version_is_refused_by_the_plan(server, store) -> None:
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    before = full_state(info)

    def newer(arts):
        return [dataclasses.replace(a, fingerprints={**a.fingerprints, "rdb_version": 12}) for a in arts]

    with pytest.raises(
        RestoreRefusedError,
        match=r"RDB version 12 \(written by Redis 7.4 or newer\).*accepts RDB "
        r"versions up to 10",
    ):
        run_restore(store, manifest.checkpoint_id, info, artifacts=newer)
    assert unchanged(before, info)
    assert max_rdb_version("7.0.15") == 10 and max_rdb_version("7.2.4") == 11 and max_rdb_version("8.0.1") == 12


def test_newer_rdb_header_is_refused(server, store) -> None:
    """The fingerprints say nothing, but the RDB header says 12: the plan's pass over the artifact
    refuses it; into an empty server (no pass in the plan) loading refuses it before any RESTORE."""
    info, empty = server("a"), server("b")
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    with store.open_artifact(manifest.checkpoint_id, "redis/dump.rdb") as f:
        data = f.read()
    body = b"REDIS0012" + data[9:-8]
    staging = store.staging(staging_key("crafted", "header"))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", engine="redis") as sink:
        sink.write(body + crc64(body).to_bytes(8, "little"))
        sink.fingerprints = {k: v for k, v in manifest.artifacts[0].fingerprints.items() if k != "rdb_version"}
    crafted = store.seal(staging)
    damage(info)
    before = full_state(info)
    with pytest.raises(RestoreRefusedError, match="RDB version 12"):
        run_restore(store, crafted.checkpoint_id, info)
    assert unchanged(before, info)
    with pytest.raises(RestoreFailedError, match="RDB version 12"):
        run_restore(store, crafted.checkpoint_id, empty, tgt=target(empty), safety=False)
    assert full_state(empty) == ({}, [])


# --------------------------------------------------------------------------- failures midway


def crafted_logical(store: Store, info: dict[str, Any], bad_at: int = -1, n: int = 3000, dup_at: int = -1) -> Manifest:
    """A logical artifact of ``n`` string keys in db0 whose key number ``bad_at`` has RDB version 99
    (and whose key number ``dup_at`` repeats key 0, as SCAN may do)."""
    src = client(info, 9)
    src.set("tmp", "value")
    good = src.dump("tmp")
    src.delete("tmp")
    body = good[:-10] + (99).to_bytes(2, "little")
    bad = body + crc64(body).to_bytes(8, "little")
    meta = b'{"dbs": [0], "redis_version": "7.0.15"}'
    out = [MAGIC, FORMAT_VERSION.to_bytes(2, "big"), b"M", struct.pack(">I", len(meta)), meta]
    for i in range(n):
        key = b"crafted:%d" % (0 if i == dup_at else i)
        payload = bad if i == bad_at else good
        out += [struct.pack(">cHqI", b"K", 0, -1, len(key)), key, struct.pack(">Q", len(payload)), payload]
    out += [b"E", struct.pack(">Q", n)]
    staging = store.staging(staging_key("crafted", str(bad_at), str(dup_at)))
    with staging.artifact(
        "redis/logical.bin", store="redis", kind="redis/logical", engine="redis", engine_version="7.0.15"
    ) as sink:
        sink.write(b"".join(out))
        sink.fingerprints = {"keys": {"0": n}, "functions": 0}
    return store.seal(staging)


def test_failure_midway_leaves_the_original(server, store) -> None:
    info = server()
    S.seed_redis(info)
    manifest = crafted_logical(store, info, bad_at=2500)
    before = full_state(info)
    with pytest.raises(
        RestoreFailedError,
        match=r"refused RESTORE of key b'crafted:2500' into db15: ERR DUMP payload "
        r"version or checksum are wrong \(the checkpoint holds DUMP payloads",
    ):
        run_restore(store, manifest.checkpoint_id, info, safety=False)
    assert unchanged(before, info)  # the spare (db15) was flushed, db0 untouched


@pytest.mark.parametrize("mode", ["side_by_side", "in_place"])
def test_logical_capture_listing_a_key_twice(server, store, mode) -> None:
    info = server()
    manifest = crafted_logical(store, info, dup_at=1700)
    client(info).set("crafted:5", "old")
    report = run_restore(store, manifest.checkpoint_id, info, mode=mode, safety=False)
    assert report.healthy, [str(h) for h in report.health]
    assert client(info).dbsize() == 2999 and client(info).get("crafted:5") == b"value"
    assert report.outcomes[0].details["keys"] == {"db0": 2999}


def test_spare_written_concurrently_is_flushed(server, store, monkeypatch) -> None:
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    before = full_state(info)
    real_flush = L._Pipe.flush
    done = threading.Event()

    def flush(self: L._Pipe) -> None:
        if not done.is_set():
            client(info, 15).set("intruder", "x")  # another client writes into the spare while it loads
            done.set()
        real_flush(self)

    monkeypatch.setattr(L._Pipe, "flush", flush)
    with pytest.raises(RestoreFailedError, match="db15 holds .* keys, expected"):
        run_restore(store, manifest.checkpoint_id, info, safety=False)
    assert unchanged(before, info)


def test_spare_filled_before_loading_is_not_touched(server, store) -> None:
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)

    class Racy(R.RedisRestore):
        def safety_capture(self, staging):
            arts = super().safety_capture(staging)
            client(info, 15).set("arrived", "meanwhile")  # after the plan chose db15
            return arts

    before = full_state(info)
    with pytest.raises(RestoreFailedError, match="spare db15 .* is no longer empty"):
        run_restore(store, manifest.checkpoint_id, info, cls=Racy)
    after = S.state_redis(info, ALL)
    assert after.pop(15) == {b"arrived": ("string", b"meanwhile", -1)}
    assert S.same_redis_state(before[0], after, ttl_tolerance_ms=30_000) == [] and functions(info) == before[1]


def test_swapdb_refused_by_acl(server, store) -> None:
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    damage(info)
    admin = client(info)
    admin.acl_setuser("restorer", enabled=True, passwords=["+s3cret-pw"], keys=["*"], commands=["+@all", "-swapdb"])
    limited = target(info, username="restorer", password="s3cret-pw")
    before = full_state(info)
    # the plan sees it (ACL DRYRUN) and refuses
    with pytest.raises(RestoreRefusedError, match="may not run SWAPDB"):
        run_restore(store, manifest.checkpoint_id, info, tgt=limited)
    assert unchanged(before, info)

    # SWAPDB revoked after loading: the cut-over's MULTI is discarded, the spares are dropped
    admin.acl_setuser("restorer", enabled=True, commands=["+swapdb"])

    class Revoked(R.RedisRestore):
        def prepare(self):
            super().prepare()
            admin.acl_setuser("restorer", enabled=True, commands=["-swapdb"])

    with pytest.raises(RestoreFailedError, match=r"cut-over .* was refused: SWAPDB 0 15: NOPERM.*nothing was changed"):
        run_restore(store, manifest.checkpoint_id, info, tgt=limited, cls=Revoked, safety=False)
    assert unchanged(before, info)


def test_cutover_error_swaps_back(server, store) -> None:
    """A command failing inside EXEC (a library that does not compile) after the SWAPDBs ran:
    the swaps are undone, the spares dropped, and the damaged state keeps serving."""
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    damage(info)

    class BadFunction(R.RedisRestore):
        def prepare(self):
            super().prepare()
            self._codes = [b"#!lua name=broken\nreturn this is not lua"]

    before = full_state(info)
    with pytest.raises(
        RestoreFailedError,
        match=r"cut-over on .* failed: FUNCTION LOAD: ERR Error compiling .*; "
        r"the dbs already swapped were swapped back",
    ):
        run_restore(store, manifest.checkpoint_id, info, cls=BadFunction, safety=False)
    assert unchanged(before, info) and list_rollbacks(target(info)) == []


def test_not_enough_spare_dbs(server, store) -> None:
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    for db in range(2, 15):
        client(info, db).set("taken", db)
    with pytest.raises(
        RestoreRefusedError,
        match=r"needs 2 empty logical db\(s\) besides the targets, but .* has "
        r"only 1",
    ):
        run_restore(store, manifest.checkpoint_id, info)
