"""Files engine round trips on the real local filesystem: capture, seal, damage, restore, health.

No fakes: real directories under the test's tmp_path, real checkpoints in a real store, restores
through ``core.recovery.restore``; the trees are read back with plain ``os`` calls (helpers.state).
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from airflow_checkpoint_provider.core.engines.files import FilesTarget, restoring_path
from airflow_checkpoint_provider.core.errors import CheckpointError, NotFoundError
from airflow_checkpoint_provider.core.recovery import RestoreRefusedError
from tests.unit.core.engines.files.helpers import (
    ENGINE,
    checkpoint,
    damage,
    make_tree,
    merkle_root,
    run_restore,
    siblings,
    state,
)


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "srv" / "uploads"
    make_tree(root)
    return root


def test_round_trip_restores_contents_modes_mtimes_empty_dirs_links_and_unicode_names(store, tree):
    target = FilesTarget(str(tree))
    original = state(tree)
    manifest = checkpoint(store, target)
    damage(tree)
    damaged = state(tree)
    assert damaged != original
    made: list = []
    report = run_restore(store, manifest.checkpoint_id, target, made=made)

    assert state(tree) == original  # every entry: type, mode, mtime to the nanosecond, bytes, link target
    assert report.healthy, [str(h) for h in report.health]
    [outcome] = report.outcomes
    [rollback] = outcome.rollback
    assert Path(rollback).name.startswith("uploads.__rollback_") and state(rollback) == damaged
    assert siblings(tree) == [Path(rollback).name]  # no side-by-side copy left
    assert report.safety_checkpoint_id and store.exists(report.safety_checkpoint_id)
    # the safety checkpoint holds the damaged tree: restoring it brings the damage back
    run_restore(store, report.safety_checkpoint_id, target, safety=False)
    assert state(tree) == damaged


def test_rollback_after_the_cutover_puts_the_replaced_tree_back(store, tree):
    target = FilesTarget(str(tree))
    manifest = checkpoint(store, target)
    damage(tree)
    damaged = state(tree)
    made: list = []
    run_restore(store, manifest.checkpoint_id, target, made=made, safety=False)
    made[0].rollback()
    assert state(tree) == damaged and siblings(tree) == []


def test_restore_into_a_directory_that_does_not_exist_creates_it_and_keeps_no_rollback(store, tree, tmp_path):
    manifest = checkpoint(store, FilesTarget(str(tree)))
    elsewhere = tmp_path / "other" / "copy"
    elsewhere.parent.mkdir()
    report = run_restore(store, manifest.checkpoint_id, FilesTarget(str(elsewhere)))
    assert report.plan.items[0].action == "create" and report.outcomes[0].rollback == []
    assert report.safety_checkpoint_id is None  # nothing existed to be replaced
    assert state(elsewhere) == state(tree) and siblings(elsewhere) == []


def test_an_empty_tree_round_trips(store, tmp_path):
    root = tmp_path / "empty-dir"
    root.mkdir()
    manifest = checkpoint(store, FilesTarget(str(root)))
    (root / "junk").write_bytes(b"x")
    report = run_restore(store, manifest.checkpoint_id, FilesTarget(str(root)), safety=False)
    assert report.healthy and os.listdir(root) == []
    assert next(a for a in manifest.artifacts if a.kind == "files/tar").fingerprints["files"] == 0


def test_fingerprints_are_the_documented_counts_and_merkle_root(store, tree):
    manifest = checkpoint(store, FilesTarget(str(tree)))
    tar = next(a for a in manifest.artifacts if a.kind == "files/tar")
    files = [p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()]
    assert tar.fingerprints["files"] == len(files)
    assert tar.fingerprints["bytes"] == sum(p.stat().st_size for p in files)
    assert tar.fingerprints["symlinks"] == sum(1 for p in tree.rglob("*") if p.is_symlink())
    assert tar.fingerprints["merkle_root"] == merkle_root(tree)
    assert ENGINE.fingerprint(FilesTarget(str(tree))) == tar.fingerprints
    assert {a.kind for a in manifest.artifacts} == set(ENGINE.kinds)


def test_the_tar_extracts_with_the_tar_command(store, tree, tmp_path):
    manifest = checkpoint(store, FilesTarget(str(tree)))
    tar = next(a for a in manifest.artifacts if a.kind == "files/tar")
    out = tmp_path / "by-tar"
    out.mkdir()
    with store.open_artifact(manifest.checkpoint_id, tar.name) as f:
        subprocess.run(["tar", "-x", "-C", str(out)], check=True, input=f.read())
    ours, theirs = state(tree), state(out)
    del ours["."], theirs["."]  # tar leaves the directory it extracts into alone
    assert theirs == ours  # GNU tar reads the pax mtimes to the nanosecond, the modes and the links


def test_health_reports_expected_and_actual(store, tree):
    target = FilesTarget(str(tree))
    manifest = checkpoint(store, target)
    expected = ENGINE.expectations(ENGINE.artifacts_of(manifest.artifacts), {})
    assert all(c.ok for c in ENGINE.health(target, expected, 0.0))
    (tree / "a.txt").write_bytes(b"changed, same length? no")
    checks = {c.check: c for c in ENGINE.health(target, expected, 0.0)}
    assert not checks["merkle root"].ok and checks["merkle root"].expected == expected["merkle_root"]
    assert not checks["bytes"].ok and checks["bytes"].actual != checks["bytes"].expected
    assert checks["files"].ok
    # with a tolerance, counts may drift and the root is not compared
    tolerant = {c.check: c for c in ENGINE.health(target, expected, 0.5)}
    assert tolerant["bytes"].ok and "merkle root" not in tolerant
    missing = ENGINE.health(FilesTarget(str(tree) + "-gone"), expected, 0.0)
    assert [c.ok for c in missing] == [False] and "does not exist" in missing[0].detail


def test_rollback_copies_are_listed_and_dropped_and_leftovers_removed(store, tree):
    target = FilesTarget(str(tree))
    manifest = checkpoint(store, target)
    damage(tree)
    run_restore(store, manifest.checkpoint_id, target, safety=False)
    [copy] = ENGINE.rollbacks(target, store)
    assert copy.component == "files" and copy.of == str(tree) and copy.checkpoint in manifest.checkpoint_id
    assert copy.created_at.endswith("Z") and copy.age < 600
    with pytest.raises(CheckpointError, match="is not a rollback copy"):
        ENGINE.drop_rollback(target, "uploads", store)
    ENGINE.drop_rollback(target, copy.name, store)
    assert ENGINE.rollbacks(target, store) == [] and siblings(tree) == []
    with pytest.raises(NotFoundError):
        ENGINE.drop_rollback(target, copy.name, store)
    # a side-by-side copy that no restore owns is a leftover
    os.makedirs(os.path.join(restoring_path(str(tree)), "x"))
    assert ENGINE.leftovers(target, store, set(), set(), True) == [f"files directory {tree}.__restoring"]
    assert os.path.isdir(restoring_path(str(tree)))  # a dry run removes nothing
    assert ENGINE.leftovers(target, store, set(), {restoring_path(str(tree))}, False) == []  # a live restore's
    assert ENGINE.leftovers(target, store, set(), set(), False) and siblings(tree) == []


def test_capture_leaves_out_the_engines_own_copies_inside_the_tree(store, tree):
    (tree / "inner.__restoring").mkdir()
    (tree / "a" / "inner.__rollback_abc123_20260101000000").mkdir()
    (tree / "a" / "inner.__rollback_abc123_20260101000000" / "f").write_bytes(b"old")
    manifest = checkpoint(store, FilesTarget(str(tree)))
    tar = next(a for a in manifest.artifacts if a.kind == "files/tar")
    with store.open_artifact(manifest.checkpoint_id, tar.name) as f, tarfile.open(fileobj=f, mode="r|") as tf:
        names = [m.name for m in tf]
    assert names and not [n for n in names if ".__restoring" in n or ".__rollback_" in n]


def test_plan_refuses_a_symlinked_target_and_a_missing_parent(store, tree, tmp_path):
    manifest = checkpoint(store, FilesTarget(str(tree)))
    link = tmp_path / "link"
    os.symlink(tree, link)
    with pytest.raises(RestoreRefusedError, match=r"is a symbolic link .*name the real directory"):
        run_restore(store, manifest.checkpoint_id, FilesTarget(str(link)))
    with pytest.raises(RestoreRefusedError, match="parent directory .* does not exist"):
        run_restore(store, manifest.checkpoint_id, FilesTarget(str(tmp_path / "no" / "such")))
    assert not os.path.lexists(restoring_path(str(link)))


def test_a_checkpoint_of_several_trees_needs_the_source(store, tree, tmp_path):
    from airflow_checkpoint_provider.core import staging_key

    other = tmp_path / "etc" / "app"
    other.mkdir(parents=True)
    (other / "app.conf").write_text("x=1\n")
    staging = store.staging(staging_key("two"))
    ENGINE.capture(FilesTarget(str(tree)), staging)
    ENGINE.capture(FilesTarget(str(other)), staging)
    cid = store.seal(staging).checkpoint_id
    into = tmp_path / "restored"
    with pytest.raises(RestoreRefusedError, match=r"several trees .* name the one to restore as source"):
        run_restore(store, cid, FilesTarget(str(into)))
    run_restore(store, cid, FilesTarget(str(into)), source=str(other))
    assert state(into) == state(other)
    run_restore(store, cid, FilesTarget(str(tree)))  # the tree captured from the target itself
    with pytest.raises(RestoreRefusedError, match="no tree captured from '/nope'"):
        run_restore(store, cid, FilesTarget(str(into)), source="/nope")


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("relative/dir", "not an absolute path"),
        ("/", "root directory"),
        ("/srv/app/", "normal form"),
        ("/srv/../etc", "normal form"),
    ],
)
def test_a_directory_that_is_not_a_clean_absolute_path_is_refused(path, why):
    with pytest.raises(CheckpointError, match=why):
        FilesTarget(path)


def test_a_connection_without_a_path_says_how_to_name_the_directory():
    from airflow_checkpoint_provider.core.engines.contract import ConnectionInfo

    with pytest.raises(CheckpointError, match="names no directory") as err:
        ENGINE.target_from_connection(ConnectionInfo(conn_id="files_default", conn_type="fs"))
    assert '"path"' in err.value.hint
    target = ENGINE.target_from_connection(ConnectionInfo(conn_id="c", conn_type="fs", extra={"path": "/srv/x"}))
    assert target.public() == {"url": "file:///srv/x", "path": "/srv/x"}
