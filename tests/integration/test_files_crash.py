"""A files restore killed at every crash point loses nothing, and its replay heals it.

Each case runs a real journaled restore in a child process (``files_crash_child.py``) that
SIGKILLs itself at one named crash point (``CHECKPOINT_CRASH_AT``), on a real directory. Then:

* right after the kill, the directory holds either its damaged state or the checkpoint's, or,
  only between the two renames of a cut-over (or of its undo), is absent for that instant;
* :func:`recover` replays the journal: roll forward if the copy had verified, else back;
* afterwards the tree is exactly the checkpoint's (forward, with the damaged tree kept as the
  rollback copy) or the damaged one (back), no ``.__restoring`` copy is left, the directory is
  writable, and a second replay changes nothing.

The cases are read from ``crashpoints.REGISTERED``: a new step without a case fails here. The
services are not needed: the files engine works on the local disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_checkpoint_provider.core import Store, crashpoints
from airflow_checkpoint_provider.core.engines import files as F
from airflow_checkpoint_provider.core.engines.files._extract import EXTRACTED_FILE
from airflow_checkpoint_provider.core.journal import Journal, open_journals
from tests.unit.core.engines.files.helpers import checkpoint, damage, make_tree, siblings, state

REPO = Path(__file__).resolve().parents[2]
POINTS = sorted(p for p in crashpoints.REGISTERED if p.startswith("files."))
#: points reached by undoing a completed cut-over (as when a later component failed)
THEN = {
    "files.move_out.intent": "rollback",
    "files.move_out.applied": "rollback",
    "files.put_back.intent": "rollback",
    "files.put_back.applied": "rollback",
    "files.phase.rolling_back": "rollback",
}
#: points after which the copy had verified and no rollback had begun: the replay finishes the cut-over
FORWARD = {
    "files.phase.verified",
    "files.phase.cutting_over",
    "files.phase.cut_over",
    "files.set_aside.intent",
    "files.set_aside.applied",
    "files.move_in.intent",
    "files.move_in.applied",
}
#: points between the two renames of a cut-over or of its undo: the directory is absent for that instant
ABSENT = {"files.set_aside.applied", "files.move_in.intent", "files.move_out.applied", "files.put_back.intent"}


def test_every_files_crash_point_has_a_case():
    expected = {f"files.{s}.{w}" for s in F.STEPS for w in ("intent", "applied")} | {
        f"files.phase.{p}" for p in crashpoints.PHASE_POINTS
    }
    assert set(POINTS) == expected
    source = (REPO / "airflow_checkpoint_provider/core/engines/files/_cutover.py").read_text()
    for step in F.STEPS:
        assert f'"{step}"' in source


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tree, its checkpoint (reused by every case) and its damaged state."""
    base = tmp_path_factory.mktemp("files-crash")
    original = base / "original"
    make_tree(original)
    store = Store.open(base / "store", create=True)
    manifest = checkpoint(store, F.FilesTarget(str(original)))
    damage(original)
    return {
        "base": base,
        "store": store,
        "manifest": manifest,
        "pristine": original,
        "checkpointed": state_of_checkpoint(store, manifest, base),
        "damaged": state(original),
    }


def state_of_checkpoint(store: Store, manifest: Any, base: Path) -> dict[str, Any]:
    """The checkpoint's tree, restored once into a fresh directory (the expected forward state)."""
    from tests.unit.core.engines.files.helpers import run_restore

    fresh = base / "fresh" / "tree"
    fresh.parent.mkdir()
    run_restore(store, manifest.checkpoint_id, F.FilesTarget(str(fresh)), safety=False)
    return state(fresh)


def _live(setup: dict[str, Any]) -> Path:
    """A damaged directory to restore into, alone in its own parent."""
    live = setup["base"] / f"case-{uuid.uuid4().hex[:8]}" / "uploads"
    live.parent.mkdir()
    shutil.copytree(setup["pristine"], live, symlinks=True)
    for path in sorted(setup["pristine"].rglob("*"), key=lambda p: -len(p.parts)) + [setup["pristine"]]:
        st = os.lstat(path)
        os.utime(live / path.relative_to(setup["pristine"]), ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    assert state(live) == setup["damaged"]
    return live


def run_child(setup: dict[str, Any], live: Path, point: str, restore_id: str) -> subprocess.CompletedProcess[str]:
    spec = {
        "root": setup["store"].root,
        "checkpoint_id": setup["manifest"].checkpoint_id,
        "restore_id": restore_id,
        "path": str(live),
        "then": THEN.get(point),
    }
    env = {**os.environ, crashpoints.ENV: point, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "tests/integration/files_crash_child.py")],
        input=json.dumps(spec) + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.mark.parametrize("point", [*POINTS, EXTRACTED_FILE])
def test_kill_at_point_then_recover(setup, point):
    live = _live(setup)
    restore_id = f"crash-{uuid.uuid4().hex[:8]}"
    child = run_child(setup, live, point, restore_id)
    assert child.returncode == -9, f"{point} was not reached:\n{child.stdout}\n{child.stderr[-3000:]}"

    # right after the kill: the directory holds one of the two states, or is absent between two renames
    if point in ABSENT:
        assert not live.exists(), point
    else:
        assert state(live) in (setup["damaged"], setup["checkpointed"]), point
    if point == EXTRACTED_FILE:
        assert F.restoring_path(str(live)).rsplit("/", 1)[-1] in siblings(live)  # a partial copy

    store = setup["store"]
    assert restore_id in open_journals(store.fs)
    entry = Journal.load(store.fs, restore_id).components["files"]
    assert entry.roll_forward == (point in FORWARD), (point, entry.phase)
    done = F.recover(entry, str(live))
    assert isinstance(done, list)

    left = siblings(live)
    if point in FORWARD:
        assert state(live) == setup["checkpointed"], point
        [rollback] = left
        assert rollback.startswith("uploads.__rollback_") and state(live.parent / rollback) == setup["damaged"]
    else:
        assert state(live) == setup["damaged"], point
        assert left == [], point
    assert F.recover(entry, str(live)) == [], "a second replay changes nothing"
    (live / "written-after-recovery").write_bytes(b"serving and writable")
    Journal.load(store.fs, restore_id).close()


def test_recover_interrupted_cli_finishes_a_killed_files_restore(setup, monkeypatch, capsys):
    from airflow_checkpoint_provider import cli

    live = _live(setup)
    monkeypatch.setenv("AIRFLOW_CONN_FILES_DEFAULT", json.dumps({"conn_type": "fs", "extra": {"path": str(live)}}))
    restore_id = f"cli-{uuid.uuid4().hex[:8]}"
    assert run_child(setup, live, "files.move_in.intent", restore_id).returncode == -9
    assert not live.exists()
    root = setup["store"].root
    assert cli.main(["--root", root, "recover-interrupted", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{restore_id} of {setup['manifest'].checkpoint_id}" in out and "would finish" in out
    assert cli.main(["--root", root, "recover-interrupted"]) == 0
    out = capsys.readouterr().out
    assert f"{restore_id} of {setup['manifest'].checkpoint_id}: recovered" in out
    assert f"finished the cut-over of {live}" in out
    assert restore_id not in open_journals(setup["store"].fs)
    assert state(live) == setup["checkpointed"]
