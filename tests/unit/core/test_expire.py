"""Deleting checkpoints as units, and expire, over a real store on disk (sample artifacts, no servers).

The kill tests run ``expire --execute`` in a forked child and SIGKILL it at random crash points
and at random instants; after every kill no listed checkpoint is half deleted, the LKG is never
deleted, and the next run finishes what the killed one began.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time

import pytest

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.errors import StoreError
from airflow_checkpoint_provider.core.expire import delete, expire, plan_store, tombstones, use_key
from airflow_checkpoint_provider.core.lease import Lease
from airflow_checkpoint_provider.core.levels import verify_at
from airflow_checkpoint_provider.core.retention import Policy
from tests.unit.core.helpers import make_checkpoint

POLICY = '{"keep_last": 2}'


@pytest.fixture
def store(tmp_path):
    return Store.open(tmp_path / "store", create=True)


def test_delete_removes_the_manifest_copy_first_then_everything_else(store, monkeypatch):
    m = make_checkpoint(store)
    verify_at(store, m.checkpoint_id, "standard")
    seen = []
    original = store.fs.remove

    def remove(rel):
        seen.append(
            (
                rel,
                store.fs.exists(f"tombstones/{m.checkpoint_id}.json"),
                m.checkpoint_id in [i.checkpoint_id for i in store.list()],
            )
        )
        return original(rel)

    monkeypatch.setattr(store.fs, "remove", remove)
    outcome = delete(store, m.checkpoint_id)
    first, second = seen[0], seen[1]
    assert first == (f"checkpoints/{m.checkpoint_id}.manifest.json", True, True)
    assert second == (f"checkpoints/{m.checkpoint_id}.tar", True, False)  # no longer listed from here on
    assert [p.split(":")[0] for p in outcome.pending] == ["search"]  # no connection: only that part waits
    assert not os.path.exists(os.path.join(store.root, "states", m.checkpoint_id))


def test_a_search_snapshot_without_a_connection_stays_in_the_tombstone_for_a_later_run(store):
    m = make_checkpoint(store)  # its search artifact names a snapshot in no repository
    pending = store.delete(m.checkpoint_id)
    assert pending and pending[0].startswith("search: no connection given")
    assert tombstones(store) == [m.checkpoint_id] and not store.exists(m.checkpoint_id)
    body = json.loads(open(os.path.join(store.root, "tombstones", f"{m.checkpoint_id}.json")).read())
    assert [a["name"] for a in body["external"]["search"]] == ["search/snapshot.json"]


def test_delete_refuses_the_lkg_a_pinned_and_a_checkpoint_in_use(store):
    lkg = make_checkpoint(store, run="lkg")
    pinned = make_checkpoint(store, run="pinned", pinned=True)
    used = make_checkpoint(store, run="used")
    store.mark_lkg(lkg.checkpoint_id)
    with pytest.raises(StoreError, match="is the last-known-good"):
        delete(store, lkg.checkpoint_id)
    with pytest.raises(StoreError, match="is pinned"):
        delete(store, pinned.checkpoint_id)
    with Lease(store.fs, store.lock, "r-1", [use_key(used.checkpoint_id, "r-1")]).acquire():
        with pytest.raises(StoreError, match="in use by restore r-1"):
            delete(store, used.checkpoint_id)
        decision = {d.checkpoint_id: d for d in plan_store(store, Policy.parse("{}"), requires="verified").decisions}
        assert decision[used.checkpoint_id].reasons == ["protected: in use by restore r-1"]
    assert {i.checkpoint_id for i in store.list()} == {lkg.checkpoint_id, pinned.checkpoint_id, used.checkpoint_id}


def test_expire_is_a_dry_run_unless_executed_and_keeps_the_protected_ones(store):
    ms = [make_checkpoint(store, run=f"r{i}") for i in range(6)]
    store.mark_lkg(ms[1].checkpoint_id)
    dry = expire(store, Policy.parse(POLICY), requires="verified")
    doomed = {d.checkpoint_id for d in dry.plan.doomed}
    assert doomed == {ms[0].checkpoint_id, ms[2].checkpoint_id, ms[3].checkpoint_id}
    assert len(store.list()) == 6
    done = expire(store, Policy.parse(POLICY), requires="verified", execute=True)
    assert {o.checkpoint_id for o in done.deleted} == doomed
    assert {i.checkpoint_id for i in store.list()} == {m.checkpoint_id for m in ms} - doomed
    # the search parts wait in tombstones for a run with a connection
    assert set(tombstones(store)) == doomed and len(done.pending) == 3


def test_a_tombstoned_checkpoint_that_became_the_lkg_meanwhile_is_not_deleted(store):
    keep = make_checkpoint(store, run="keep")
    m = make_checkpoint(store, run="m")
    store.mark_lkg(keep.checkpoint_id)
    tomb = os.path.join(store.root, "tombstones")
    os.makedirs(tomb, exist_ok=True)  # as a run killed right after writing it (before the manifest copy went)
    with open(os.path.join(tomb, f"{m.checkpoint_id}.json"), "w") as f:
        json.dump(
            {
                "format": "airflow-checkpoint-tombstone",
                "format_version": 1,
                "checkpoint_id": m.checkpoint_id,
                "external": {},
            },
            f,
        )
    store.mark_lkg(m.checkpoint_id)
    [outcome] = expire(store, Policy.parse('{"keep_last": 5}'), requires="verified", execute=True).finished
    assert "called off" in outcome.refused and store.verify(m.checkpoint_id).ok and tombstones(store) == []


def test_sizes_in_the_plan_include_the_recorded_snapshot_size(store):
    m = make_checkpoint(store)
    info = store.get(m.checkpoint_id)
    store.record_state(info, kind="verify", outcome="ok", level="deep", evidence={"external_bytes": 123456})
    [d] = plan_store(store, Policy.parse("{}"), requires="verified").decisions
    assert d.size == info.size + 123456


def _template(tmp_path_factory):
    root = tmp_path_factory.mktemp("template") / "store"
    store = Store.open(root, create=True)
    ms = [make_checkpoint(store, run=f"k{i}") for i in range(8)]
    store.mark_lkg(ms[2].checkpoint_id)
    expected = {
        d.checkpoint_id for d in plan_store(store, Policy.parse(POLICY), requires="verified").decisions if d.keep
    }
    return root, ms[2].checkpoint_id, expected


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return _template(tmp_path_factory)


def _check_after_kill(store: Store, lkg_id: str) -> None:
    listed = store.list()
    assert lkg_id in [i.checkpoint_id for i in listed], "the LKG was deleted"
    for info in listed:
        assert store.verify(info.checkpoint_id).ok, f"{info.checkpoint_id} is listed but half deleted"


def _rerun_finishes(store: Store, expected: set[str]) -> None:
    expire(store, Policy.parse(POLICY), requires="verified", execute=True)
    assert {i.checkpoint_id for i in store.list()} == expected
    leftover = list(tombstones(store))
    # only the search part (no connection in these tests) may wait; the archive and records are gone
    for cid in leftover:
        assert not os.path.exists(os.path.join(store.root, "checkpoints", f"{cid}.tar"))
        assert not os.path.exists(os.path.join(store.root, "states", cid))


def _fork_expire(root, k: int | None = None) -> tuple[int, int]:
    """Fork a child that runs ``expire --execute`` on ``root`` and SIGKILLs itself at the ``k``-th crash point
    of the deletion (any of expire.tombstone/.sidecar/.archive/.states); returns (pid, read end of a pipe
    the child writes one byte to once it starts). Forked, so the child needs no fresh imports."""
    from airflow_checkpoint_provider.core import expire as expire_mod

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read)
            hits = {"n": 0}

            def crashpoint(name: str) -> None:
                hits["n"] += 1
                if k is not None and hits["n"] == k:
                    os.kill(os.getpid(), signal.SIGKILL)

            expire_mod.crashpoint = crashpoint
            os.write(write, b"s")
            expire_mod.expire(Store.open(root), Policy.parse(POLICY), requires="verified", execute=True)
        except BaseException as exc:  # a failure must show, not pass for a finished run
            os.write(2, f"expire failed in the child: {exc!r}\n".encode())
            os._exit(3)
        os._exit(0)
    os.close(write)
    return pid, read


def _killed(pid: int) -> bool:
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_sigkill_at_random_crash_points_of_the_deletion_never_leaves_a_half_deleted_listed_checkpoint(
    template, tmp_path
):
    root, lkg_id, expected = template
    for k in random.Random(3).sample(range(1, 4 * 5 + 1), 8):  # 5 doomed checkpoints, 4 crash points each
        work = tmp_path / f"k{k}"
        shutil.copytree(root, work)
        pid, ready = _fork_expire(work, k)
        assert os.read(ready, 1) == b"s"
        os.close(ready)
        assert _killed(pid), f"the child was not killed at crash point #{k}"
        store = Store.open(work)
        _check_after_kill(store, lkg_id)
        _rerun_finishes(store, expected)


def test_sigkill_at_random_instants_of_the_run_never_leaves_a_half_deleted_listed_checkpoint(template, tmp_path):
    root, lkg_id, expected = template
    shutil.copytree(root, tmp_path / "timed")
    started = time.monotonic()
    pid, ready = _fork_expire(tmp_path / "timed")
    os.read(ready, 1)
    os.close(ready)
    os.waitpid(pid, 0)
    whole = time.monotonic() - started  # the kills below fall inside a run of this length
    rng = random.Random(5)
    for n in range(6):
        work = tmp_path / f"t{n}"
        shutil.copytree(root, work)
        pid, ready = _fork_expire(work)
        assert os.read(ready, 1) == b"s"
        os.close(ready)
        time.sleep(rng.uniform(0, whole))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        store = Store.open(work)
        _check_after_kill(store, lkg_id)
        _rerun_finishes(store, expected)
