"""The restore journal and the target leases, on a real local store (no servers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from airflow_checkpoint_provider.core import crashpoints
from airflow_checkpoint_provider.core.journal import Journal, NullJournal, open_journals
from airflow_checkpoint_provider.core.lease import (
    Lease,
    LeaseHeldError,
    LeaseRecord,
    StaleLeaseError,
    break_lease,
    held_during,
    live_holders,
    read_leases,
    target_key,
)
from airflow_checkpoint_provider.core.manifest import format_ts, utcnow
from airflow_checkpoint_provider.core.store import Store


@pytest.fixture
def store(tmp_path):
    return Store.open(tmp_path / "store", create=True)


def test_journal_records_intent_before_the_step_and_done_after(store):
    j = Journal.begin(store.fs, checkpoint_id="ckpt-x", owner={"dag_id": "d"})
    cj = j.component("postgres", {"host": "h", "port": 1})
    cj.phase("verified", staging=["app__restoring"])
    with cj.step("rename", intent={"from": "a"}, undo={"to": "a"}):
        on_disk = Journal.load(store.fs, j.restore_id)
        assert [(s.name, s.state) for s in on_disk.components["postgres"].steps] == [("rename", "intent")]
    again = Journal.load(store.fs, j.restore_id)
    entry = again.components["postgres"]
    assert entry.phase == "verified" and entry.roll_forward
    assert entry.copies == {"staging": ["app__restoring"]}
    assert [(s.name, s.state) for s in entry.steps] == [("rename", "done")] and not entry.pending()
    assert open_journals(store.fs) == [j.restore_id]
    j.close()
    assert open_journals(store.fs) == []


def test_a_step_that_raises_stays_pending(store):
    j = Journal.begin(store.fs, checkpoint_id="ckpt-x")
    cj = j.component("redis", {})
    with pytest.raises(RuntimeError):
        with cj.step("swapdb", intent={}, undo={}):
            raise RuntimeError("boom")
    entry = Journal.load(store.fs, j.restore_id).components["redis"]
    assert [s.name for s in entry.pending()] == ["swapdb"] and not entry.roll_forward


def test_unknown_phase_is_refused(store):
    cj = Journal.begin(store.fs, checkpoint_id="c").component("search", {})
    with pytest.raises(ValueError, match="unknown journal phase"):
        cj.phase("halfway")


def test_damaged_journal_names_the_file(store):
    store.fs.makedirs("journal")
    store.fs.write_bytes("journal/r1.json", b"{not json")
    with pytest.raises(Exception, match="journal journal/r1.json is unreadable"):
        Journal.load(store.fs, "r1")


def test_crashpoint_kills_the_process_only_when_named(tmp_path):
    code = (
        "from airflow_checkpoint_provider.core.crashpoints import crashpoint\n"
        "crashpoint('a.b.intent'); print('survived', flush=True)"
    )
    env = {**os.environ, crashpoints.ENV: "x.y.applied,a.b.intent"}
    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert killed.returncode == -9 and "survived" not in killed.stdout
    env[crashpoints.ENV] = "a.b.applied"
    alive = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert alive.returncode == 0 and "survived" in alive.stdout


def test_null_journal_passes_through_crash_points(monkeypatch):
    hits = []
    monkeypatch.setattr("airflow_checkpoint_provider.core.journal.crashpoint", hits.append)
    nj = NullJournal("postgres")
    with nj.step("rename", intent={}, undo={}):
        pass
    assert hits == ["postgres.rename.intent", "postgres.rename.applied"]


def test_target_key_is_per_server():
    assert target_key("postgres", {"host": "DB", "port": 5432, "dbname": "x"}) == "postgres:db:5432"
    assert target_key("search", {"url": "http://H:9200/"}) == "search:http://h:9200"


def _lease(store, holder, keys, **kw):
    return Lease(store.fs, store.lock, holder, keys, **kw)


def test_a_live_lease_refuses_a_second_restore_of_the_same_server(store):
    with _lease(store, "r1", ["postgres:h:1"]).acquire():
        with pytest.raises(LeaseHeldError, match="postgres:h:1 is being restored by r1"):
            _lease(store, "r2", ["redis:h:2", "postgres:h:1"]).acquire()
        assert read_leases(store.fs)[0].holder == "r1"
        assert not any(r.key == "redis:h:2" for r in read_leases(store.fs)), "all keys or none"
    assert read_leases(store.fs) == []


def _plant(store, holder, key, *, pid, age=0.0, ttl=120.0):
    now = format_ts(utcnow())
    rec = LeaseRecord(
        key=key,
        holder=holder,
        owner={"host": os.uname().nodename, "pid": pid, "pid_start": "1"},
        acquired_at=now,
        heartbeat_at=format_ts(utcnow())
        if not age
        else format_ts(utcnow().fromtimestamp(time.time() - age, tz=utcnow().tzinfo)),
        ttl=ttl,
    )
    from airflow_checkpoint_provider.core.lease import _file

    store.fs.makedirs("leases")
    store.fs.write_bytes(f"leases/{_file(key)}", rec.to_bytes())
    return rec


def test_a_dead_lease_with_a_journal_must_be_replayed_first(store):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    j = Journal.begin(store.fs, checkpoint_id="c", restore_id="r-dead")
    _plant(store, "r-dead", "postgres:h:1", pid=int(dead.stdout))
    with pytest.raises(StaleLeaseError, match="recover-interrupted"):
        _lease(store, "r2", ["postgres:h:1"]).acquire()
    j.close()  # the replay removes the journal
    with _lease(store, "r2", ["postgres:h:1"]).acquire():
        assert [r.holder for r in read_leases(store.fs)] == ["r2"]


def test_an_expired_heartbeat_makes_a_lease_dead_and_breakable(store):
    _plant(store, "r-old", "redis:h:2", pid=1, age=500, ttl=60)
    assert live_holders(store.fs, ["redis:h:2"]) == []
    assert break_lease(store.fs, store.lock, "r-old") == 1
    assert read_leases(store.fs) == []


def test_held_during_sees_released_leases_that_overlap_a_capture_window(store):
    before = format_ts(utcnow())
    with _lease(store, "r1", ["postgres:h:1"]).acquire():
        time.sleep(0.01)
    after = format_ts(utcnow())
    assert [r.holder for r in held_during(store.fs, ["postgres:h:1"], before, after)] == ["r1"]
    assert held_during(store.fs, ["redis:h:2"], before, after) == []
    later = format_ts(utcnow())
    assert held_during(store.fs, ["postgres:h:1"], later, later) == []
    history = store.fs.listdir("leases/history")
    assert len(history) == 1 and json.loads(store.fs.read_bytes(f"leases/history/{history[0]}"))["released_at"]


def test_heartbeat_keeps_a_lease_fresh(store):
    lease = _lease(store, "r1", ["search:http://h:9200"], ttl=0.4).acquire()
    try:
        time.sleep(0.8)
        assert [r.holder for r in live_holders(store.fs, ["search:http://h:9200"])] == ["r1"]
    finally:
        lease.release()
