"""A writer killed with SIGKILL at any point leaves nothing listed as complete and the LKG unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from airflow_checkpoint_provider.core import Store
from tests.unit.core.helpers import make_checkpoint

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _child(root, point, payload_mb=8) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.unit.core.crash_child", str(root), point, str(payload_mb)],
        cwd=ROOT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def store_with_lkg(store):
    good = make_checkpoint(store, run="good")
    store.mark_lkg(good.checkpoint_id)
    return store, good


def _assert_untouched(store: Store, good) -> None:
    assert [i.checkpoint_id for i in store.list()] == [good.checkpoint_id]
    assert store.lkg().checkpoint_id == good.checkpoint_id
    assert [p.checkpoint_id for p in store.lkg_history()] == [good.checkpoint_id]
    assert store.verify(good.checkpoint_id).ok


@pytest.mark.parametrize("point", ["mid_archive", "before_manifest"])
def test_sigkill_while_sealing_publishes_nothing(store_with_lkg, point):
    store, good = store_with_lkg
    proc = _child(store.root, point)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert "sealed" not in out
    _assert_untouched(store, good)
    # leftovers are garbage, never checkpoints, and cleanup removes them
    removed = store.cleanup(stale_after=0)
    assert removed, "the killed writer should have left a temporary or orphan file"
    assert all(good.checkpoint_id not in r for r in removed)
    ckdir = os.listdir(os.path.join(store.root, "checkpoints"))
    assert sorted(ckdir) == sorted([f"{good.checkpoint_id}.tar", f"{good.checkpoint_id}.manifest.json"])
    # and the store still works
    again = make_checkpoint(store, run="after")
    assert store.verify(again.checkpoint_id).ok


def test_sigkill_before_lkg_pointer_keeps_the_old_lkg(store_with_lkg):
    store, good = store_with_lkg
    proc = _child(store.root, "before_lkg_pointer")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert "sealed" in out and "marked" not in out
    new_id = out.split()[1]
    assert [i.checkpoint_id for i in store.list()] == [new_id, good.checkpoint_id]  # sealed, complete
    assert store.lkg().checkpoint_id == good.checkpoint_id
    assert [p.checkpoint_id for p in store.lkg_history()] == [good.checkpoint_id]


def test_sigkill_after_lkg_pointer_before_history(store_with_lkg):
    store, good = store_with_lkg
    proc = _child(store.root, "before_lkg_history")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    new_id = out.split()[1]
    # the move itself is atomic: the pointer names the new, verified checkpoint
    assert store.lkg().checkpoint_id == new_id
    assert store.lkg().previous == good.checkpoint_id
    assert store.verify(new_id).ok


def test_external_sigkill_at_random_moments_while_sealing(store_with_lkg):
    store, good = store_with_lkg
    ckdir = os.path.join(store.root, "checkpoints")
    for delay in (0.0, 0.05, 0.15):
        proc = _child(store.root, "external", payload_mb=64)
        assert proc.stdout.readline().strip() == "sealing"
        # wait until the temporary archive exists (or the writer already finished), then kill from outside
        deadline = time.monotonic() + 60
        while not any(f.startswith(".tmp-") for f in os.listdir(ckdir)) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), err
        new_id = out.split()[1] if "sealed" in out else None
        if new_id:  # the kill came after publication: then it must be complete and valid
            assert store.verify(new_id).ok
        listed = {i.checkpoint_id for i in store.list()}
        for cid in listed:
            assert store.verify(cid).ok
        # the LKG is the old one, or the new one if the kill came after the pointer moved; always verified
        lkg = store.lkg().checkpoint_id
        assert lkg == good.checkpoint_id or lkg == new_id
        assert store.verify(lkg).ok
        store.cleanup(stale_after=0)
