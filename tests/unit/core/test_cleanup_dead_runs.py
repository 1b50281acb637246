"""``Store.cleanup`` removes the staging areas of runs that died, and only those."""

from __future__ import annotations

import os
import subprocess
import sys

from airflow_checkpoint_provider.core.lease import this_process
from airflow_checkpoint_provider.core.store import Store


def _age(store, rel, seconds):
    path = store.fs.local_path(rel)
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


def _dead_pid() -> int:
    return int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )


def test_staging_of_a_killed_writer_outside_airflow_is_removed_at_once(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    dead = store.staging("killed")
    dead.claim({"host": os.uname().nodename, "pid": _dead_pid(), "pid_start": "1"})
    alive = store.staging("running")
    alive.claim(this_process())
    assert store.cleanup(dry_run=True) == ["staging/killed"]
    assert store.fs.exists("staging/killed")  # a dry run removes nothing
    assert store.cleanup() == ["staging/killed"]
    assert not store.fs.exists("staging/killed") and store.fs.exists("staging/running")


def test_staging_of_an_airflow_run_goes_only_when_airflow_says_the_run_ended(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    area = store.staging("run-a")
    area.claim({"dag_id": "d", "run_id": "r1", "task_id": "t", "host": "elsewhere", "pid": 1})
    assert store.cleanup() == []  # no Airflow view: only age
    assert store.cleanup(is_dead=lambda o: None) == []
    assert store.cleanup(is_dead=lambda o: o["run_id"] != "r1") == []
    assert store.cleanup(is_dead=lambda o: o["run_id"] == "r1") == ["staging/run-a"]


def test_unclaimed_staging_waits_for_stale_after(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    store.staging("old")
    assert store.cleanup(stale_after=3600) == []
    _age(store, "staging/old", 7200)
    assert store.cleanup(stale_after=3600) == ["staging/old"]
