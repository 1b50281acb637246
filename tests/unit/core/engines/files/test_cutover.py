"""The files cut-over's replay in the states a kill cannot reach by itself (someone else touched
the directories meanwhile), on real directories; the kills themselves are in
tests/integration/test_files_crash.py."""

from __future__ import annotations

import os

import pytest

from airflow_checkpoint_provider.core.engines.files import CutoverError, recover, restoring_path
from airflow_checkpoint_provider.core.engines.files._cutover import Switch, remove_copy, rename
from airflow_checkpoint_provider.core.journal import ComponentEntry, Step


def _entry(phase: str, sw: Switch | None, steps: tuple[str, ...] = ()) -> ComponentEntry:
    data = {"dir": sw.target if sw else "", "checkpoint_id": "ckpt-20261201T000000Z-abc123"}
    if sw:
        data["switch"] = {"target": sw.target, "staging": sw.staging, "rollback": sw.rollback}
    return ComponentEntry(
        "files", {}, phase=phase, data=data, steps=[Step(i, name, {}, {}) for i, name in enumerate(steps, 1)]
    )


@pytest.fixture
def sw(tmp_path) -> Switch:
    target = str(tmp_path / "uploads")
    return Switch(target, restoring_path(target), f"{target}.__rollback_abc123_20261201000000")


def test_forward_with_the_copy_gone_puts_the_original_back(sw):
    os.makedirs(sw.rollback)
    lines = recover(_entry("cutting_over", sw, ("set_aside",)), sw.target)
    assert os.path.isdir(sw.target) and not os.path.exists(sw.rollback)
    assert "cannot be finished" in lines[0]


def test_forward_refuses_a_directory_that_appeared_during_a_create(sw):
    os.makedirs(sw.staging)
    os.makedirs(sw.target)
    with pytest.raises(CutoverError, match="appeared while it was being restored"):
        recover(_entry("verified", Switch(sw.target, sw.staging, None)), sw.target)
    assert os.path.isdir(sw.staging) and os.path.isdir(sw.target)  # nothing was replaced


def test_back_removes_a_directory_the_restore_created(sw):
    os.makedirs(sw.target)
    lines = recover(_entry("rolling_back", Switch(sw.target, sw.staging, None), ("move_in",)), sw.target)
    assert not os.path.exists(sw.target) and not os.path.exists(sw.staging)
    assert lines[0].startswith("removed ") and "had created" in lines[0]


def test_back_leaves_an_existing_directory_the_restore_never_moved_in(sw):
    os.makedirs(sw.target)
    os.makedirs(sw.staging)
    assert recover(_entry("loading", Switch(sw.target, sw.staging, None)), sw.target) == [
        f"removed the side-by-side copy {sw.staging}"
    ]
    assert os.path.isdir(sw.target)


def test_killed_before_the_cut_over_was_planned_rolls_forward_by_planning_it_now(sw):
    os.makedirs(sw.target)
    os.makedirs(sw.staging)
    (open(os.path.join(sw.staging, "restored"), "w")).close()
    entry = _entry("verified", None)
    entry.data["dir"] = sw.target
    lines = recover(entry, sw.target)
    assert os.path.exists(os.path.join(sw.target, "restored")) and "finished the cut-over" in lines[0]
    assert [n for n in os.listdir(os.path.dirname(sw.target)) if ".__rollback_" in n]


def test_renames_never_replace_an_existing_name_and_only_own_copies_are_removed(sw, tmp_path):
    os.makedirs(sw.target)
    os.makedirs(sw.staging)
    with pytest.raises(CutoverError, match="exists"):
        rename(sw.staging, sw.target)
    with pytest.raises(AssertionError, match="not a copy the files engine made"):
        remove_copy(sw.target)
    os.makedirs(os.path.join(sw.staging, "ro", "inner"))
    os.chmod(os.path.join(sw.staging, "ro"), 0o500)
    assert remove_copy(sw.staging) and not os.path.exists(sw.staging)
