"""The provider's own Redis copies against real servers: markers, retention, leftovers, captures.

Every test uses private real ``redis-server`` processes (``redis_support.server``), real
checkpoints (``capture`` + ``Store.seal``) and compares every key (type, value, TTL).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_checkpoint_provider.core import staging_key
from airflow_checkpoint_provider.core.engines.redis import (
    RedisRestore,
    capture,
    drop_leftovers,
    find_leftovers,
    list_rollbacks,
    prune_rollbacks,
)
from airflow_checkpoint_provider.core.engines.redis.copies import PREFIX, index_add
from airflow_checkpoint_provider.core.journal import Journal
from airflow_checkpoint_provider.core.recovery import RestoreRefusedError
from tests.integration.redis_support import (  # noqa: F401 - server and store are fixtures
    ALL,
    SEEDED,
    S,
    checkpoint,
    client,
    damage,
    functions,
    markers,
    run_restore,
    server,
    store,
    target,
    without_marker,
)

pytestmark = pytest.mark.integration

OLD_MARKER = "__airflow_checkpoint_rollback__"


def keys_of(manifest: Any) -> dict[str, int]:
    return manifest.artifacts[0].fingerprints["keys"]


# --------------------------------------------------------------------------- fidelity


@pytest.mark.parametrize("mode", ["rdb", "logical"])
def test_user_key_named_like_the_marker_is_restored(server, store, mode) -> None:
    info = server()
    S.seed_redis(info)
    r0, r1 = client(info, 0), client(info, 1)
    r0.set(OLD_MARKER, "application data that happens to carry this name", ex=7200)
    r1.hset(OLD_MARKER, mapping={"a": "b"})
    r0.set(PREFIX + b"user:key", '{"format": "not ours"}')
    original = S.state_redis(info, SEEDED)
    manifest = checkpoint(store, info, mode)
    damage(info)
    r0.delete(OLD_MARKER, PREFIX + b"user:key")
    made: list[RedisRestore] = []
    report = run_restore(store, manifest.checkpoint_id, info, made=made)
    assert report.healthy, [str(h) for h in report.health]
    assert S.same_redis_state(original, S.state_redis(info, SEEDED)) == []
    assert client(info, 0).get(OLD_MARKER) == b"application data that happens to carry this name"
    # none of the application's dbs is taken for a copy, with or without the store's index
    assert [r["db"] for r in list_rollbacks(target(info))] == [15]
    assert [r["db"] for r in list_rollbacks(target(info), store=store)] == [15]
    # health compares with the manifest's counts, not with what was loaded: a lost key shows
    client(info, 1).delete(OLD_MARKER)
    bad = [c for c in made[0].health(0.0) if not c.ok]
    assert [(c.check, c.expected, c.actual) for c in bad] == [
        ("db1 keys", keys_of(manifest)["1"], keys_of(manifest)["1"] - 1)
    ]


def test_health_counts_keys_whose_ttl_expired_in_between(server, store) -> None:
    info = server()
    S.seed_redis(info)
    r0 = client(info)
    r0.set("short:1", "x", px=2000)
    r0.set("short:2", "y", px=2000)
    r0.set("soon:1", "z", px=7000)
    t0 = time.monotonic()
    manifest = checkpoint(store, info)
    n = keys_of(manifest)["0"]
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))  # short:* run out before the restore
    damage(info)
    made: list[RedisRestore] = []
    report = run_restore(store, manifest.checkpoint_id, info, made=made, safety=False)
    db0 = next(c for c in report.health if c.check == "db0 keys")
    assert report.healthy and db0.expected == n - 2, str(db0)
    assert f"the checkpoint holds {n}" in db0.detail and "2 had expired before the restore" in db0.detail
    time.sleep(max(0.0, 7.5 - (time.monotonic() - t0)))  # soon:1 runs out after the restore
    db0 = next(c for c in made[0].health(0.0) if c.check == "db0 keys")
    assert db0.ok and db0.expected == n - 2 and db0.actual in (n - 2, n - 3), str(db0)
    assert "expired since" in db0.detail
    # more keys gone than could have expired is a failure (one fewer is within the allowance for soon:1)
    assert client(info).delete("counter", "binary") == 2
    db0 = next(c for c in made[0].health(0.0) if c.check == "db0 keys")
    assert not db0.ok


def test_restore_into_empty_server_leaves_no_marker_keys(server, store) -> None:
    a, c = server("a"), server("c")
    S.seed_redis(a)
    original = S.state_redis(a, SEEDED)
    manifest = checkpoint(store, a)
    made: list[RedisRestore] = []
    report = run_restore(store, manifest.checkpoint_id, c, tgt=target(c), made=made)
    assert report.healthy and report.outcomes[0].rollback == [] and report.safety_checkpoint_id is None
    assert markers(c) == {}
    assert S.same_redis_state(original, S.state_redis(c, ALL)) == []  # dbs 0 and 1 only
    assert list_rollbacks(target(c)) == [] and list_rollbacks(target(c), store=store) == []
    assert find_leftovers(target(c), [], store=store) == []
    made[0].rollback()  # back to what was there: nothing
    assert S.state_redis(c, ALL) == {} and functions(c) == []


# --------------------------------------------------------------------------- spare dbs and retention


def test_ten_restores_in_a_row_never_run_out_of_spares(server, store) -> None:
    info = server()
    S.seed_redis(info)
    original = S.state_redis(info, SEEDED)
    manifest = checkpoint(store, info)
    for i in range(10):  # both dbs hold data, so every restore keeps two rollback copies
        client(info, 0).set(f"written:{i}", i)
        client(info, 1).set(f"written:{i}", i)
        report = run_restore(store, manifest.checkpoint_id, info, safety=False)
        assert report.healthy, (i, [str(h) for h in report.health])
        assert S.same_redis_state(original, S.state_redis(info, SEEDED)) == [], i
        if i >= 7:  # 14 spare dbs: from the 8th restore on, the oldest copies beyond the policy make room
            notes = [n for item in report.plan.items for n in item.notes]
            assert sum("beyond the retention policy" in n for n in notes) == 2, notes
    copies = list_rollbacks(target(info), store=store)
    assert len(copies) == 14 and {r["state"] for r in copies} == {"rollback"}
    newest = {r["of_db"]: r for r in sorted(copies, key=lambda r: r["created_at"])}
    for db in SEEDED:
        assert client(info, newest[db]["db"]).get("written:9") == b"9"
    # without a retention policy the same restore is refused: every spare holds a rollback copy
    with pytest.raises(RestoreRefusedError, match=r"needs 2 empty logical db\(s\).*has only 0"):
        run_restore(store, manifest.checkpoint_id, info, safety=False, rollback_keep=None, rollback_max_age=None)


def test_rollback_copy_of_a_running_restore_is_never_reclaimed(server, store) -> None:
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    made: list[RedisRestore] = []
    run_restore(store, manifest.checkpoint_id, info, made=made, safety=False)
    running = made[0].restore_id
    for db in range(2, 14):
        client(info, db).set("taken", db)
    journal = Journal.begin(store.fs, checkpoint_id=manifest.checkpoint_id, restore_id=running)  # still running
    before = S.state_redis(info, ALL)
    with pytest.raises(
        RestoreRefusedError,
        match=r"has only 0 .*db14, db15 hold rollback copies .* of restores still "
        r"running",
    ):
        run_restore(store, manifest.checkpoint_id, info, safety=False, rollback_keep=0)
    assert prune_rollbacks(target(info), keep=0, store=store, live_restore_ids=[running]) == []
    assert S.same_redis_state(before, S.state_redis(info, ALL)) == []
    journal.close()  # that restore ended: its copies may go
    report = run_restore(store, manifest.checkpoint_id, info, safety=False, rollback_keep=0)
    assert report.healthy and sorted(int(i.staging_name[2:]) for i in report.plan.items) == [14, 15]


def test_prune_rollbacks_applies_the_retention_policy(server, store) -> None:
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    for i in range(3):
        client(info, 0).set("round", i)
        client(info, 1).set("round", i)
        run_restore(store, manifest.checkpoint_id, info, safety=False)
    listed = list_rollbacks(target(info), store=store)
    assert len(listed) == 6 and all(r["age_seconds"] >= 0 and r["keys"] > 0 for r in listed)
    planned = prune_rollbacks(target(info), keep=1, store=store, dry_run=True)
    assert len(planned) == 4 and not any(r["dropped"] for r in planned)
    assert len(list_rollbacks(target(info), store=store)) == 6
    dropped = prune_rollbacks(target(info), keep=1, store=store)
    assert sorted(r["db"] for r in dropped) == sorted(r["db"] for r in planned) and all(r["dropped"] for r in dropped)
    kept = list_rollbacks(target(info), store=store)
    assert sorted(r["of_db"] for r in kept) == [0, 1]
    assert all(client(info, r["db"]).get("round") == b"2" for r in kept)  # the newest copies stay
    assert all(client(info, r["db"]).dbsize() == 0 for r in dropped)
    prune_rollbacks(target(info), keep=5, max_age=0, store=store)  # none older than 0 s
    assert list_rollbacks(target(info), store=store) == [] and list_rollbacks(target(info)) == []


# --------------------------------------------------------------------------- leftovers


def test_loading_copies_of_dead_restores_are_found_and_dropped(server, store) -> None:
    info = server()
    S.seed_redis(info)
    original = S.state_redis(info, SEEDED)
    manifest = checkpoint(store, info)
    parts = []
    for _ in range(3):  # three restores that die after loading, without cleaning up
        part = RedisRestore(target(info), store, manifest.checkpoint_id, manifest.artifacts)
        assert part.plan()[1] == []
        part.prepare()
        parts.append(part)
    live = parts[-1]
    dead = {s for p in parts[:2] for _, s in p.pairs}
    index_add(
        store.fs,
        target(info),
        db=3,
        marker=PREFIX + b"gone:0123456789abcdef",
        restore_id="gone",
        checkpoint_id=manifest.checkpoint_id,
        of_db=0,
    )  # a record whose marker never got set
    found = find_leftovers(target(info), [live.restore_id], store=store)
    assert {r["db"] for r in found if not r["stale"]} == dead and all(
        r["state"] == "loading" for r in found if not r["stale"]
    )
    assert [r["restore_id"] for r in found if r["stale"]] == ["gone"]
    assert {r["db"] for r in find_leftovers(target(info), [live.restore_id])} == dead  # by a scan, no store
    before = S.state_redis(info, ALL)
    assert len(drop_leftovers(target(info), [live.restore_id], store=store, dry_run=True)) == 5
    assert S.same_redis_state(before, S.state_redis(info, ALL)) == []
    lines = drop_leftovers(target(info), [live.restore_id], store=store)
    assert len(lines) == 5 and all(line.startswith(("dropped", "removed")) for line in lines)
    assert all(client(info, s).dbsize() == 0 for s in dead)
    assert find_leftovers(target(info), [live.restore_id], store=store) == []
    # the live restore is untouched and finishes
    live.cutover()
    assert S.same_redis_state(original, S.state_redis(info, SEEDED)) == []
    assert find_leftovers(target(info), [], store=store) == []


# --------------------------------------------------------------------------- captures


@pytest.mark.parametrize("mode", ["rdb", "logical"])
def test_capture_leaves_out_own_copies_by_default(server, store, mode) -> None:
    info, other = server("a"), server("b")
    S.seed_redis(info)
    original = S.state_redis(info, SEEDED)
    first = checkpoint(store, info, mode)
    damage(info)
    client(info, 1).set("kept", "in a rollback copy")
    run_restore(store, first.checkpoint_id, info, safety=False)
    assert sorted(r["db"] for r in list_rollbacks(target(info), store=store)) == [14, 15]
    after = checkpoint(store, info, mode)
    art = after.artifacts[0]
    assert set(art.meta["left_out"]) == {"14", "15"} and "rollback copy of db0" in art.meta["left_out"]["15"]
    for name in ("keys", "expires", "types"):
        assert art.fingerprints[name] == first.artifacts[0].fingerprints[name], name
    # the artifact holds exactly the application's dbs: restored elsewhere, nothing else comes back
    run_restore(store, after.checkpoint_id, other, tgt=target(other), safety=False)
    assert S.same_redis_state(original, S.state_redis(other, ALL)) == [] and functions(other) == ["checkpointlib"]
    # on request the copies are captured too
    staging = store.staging(staging_key("test", "include", mode))
    art = capture(target(info), staging, mode=mode, include_own_copies=True)[0]
    assert set(art.fingerprints["keys"]) == {"0", "1", "14", "15"} and "left_out" not in art.meta


def test_checkpoint_restore_three_cycles_are_exact(server, store) -> None:
    info = server()
    S.seed_redis(info)
    for cycle, mode in enumerate(("rdb", "logical", "rdb")):
        expected = S.state_redis(info, SEEDED), functions(info)
        manifest = checkpoint(store, info, mode)
        assert set(keys_of(manifest)) == {"0", "1"}, (cycle, keys_of(manifest))
        damage(info)
        client(info, 0).set(f"damage:{cycle}", "x")
        report = run_restore(store, manifest.checkpoint_id, info)
        assert report.healthy, (cycle, [str(h) for h in report.health])
        assert (
            S.same_redis_state(expected[0], S.state_redis(info, SEEDED), ttl_tolerance_ms=30_000),
            functions(info),
        ) == ([], expected[1]), cycle
        assert without_marker(S.state_redis(info, ALL)).keys() - set(SEEDED) == {
            r["db"] for r in list_rollbacks(target(info), store=store)
        }
        client(info, 0).set(f"written:between:{cycle}", cycle)  # the application goes on writing
