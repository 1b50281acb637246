"""LocalFS.rename and LocalFS.walk on a real directory (the fsync spy only records which
directories our own code asks to sync)."""

from __future__ import annotations

import os
import stat

import pytest

from airflow_checkpoint_provider.core.errors import StoreNotFoundError
from airflow_checkpoint_provider.core.fs import LocalFS


@pytest.fixture
def fs(tmp_path) -> LocalFS:
    fs = LocalFS(tmp_path / "root")
    fs.makedirs("a/states")
    fs.makedirs("a/damaged")
    return fs


def test_rename_moves_the_file_keeps_it_private_and_syncs_both_directories(fs, monkeypatch):
    fs.write_bytes("a/states/1.state", b"payload")
    synced = []
    monkeypatch.setattr(fs, "fsync_dir", lambda path: synced.append(path))
    fs.rename("a/states/1.state", "a/damaged/1.state")
    assert not fs.exists("a/states/1.state")
    assert fs.read_bytes("a/damaged/1.state") == b"payload"
    assert stat.S_IMODE(os.stat(fs.path("a/damaged/1.state")).st_mode) == 0o600
    assert sorted(synced) == sorted([fs.path("a/damaged"), fs.path("a/states")])


def test_rename_replaces_an_existing_destination(fs):
    fs.write_bytes("a/states/1.state", b"new")
    fs.write_bytes("a/damaged/1.state", b"old")
    fs.rename("a/states/1.state", "a/damaged/1.state")
    assert fs.read_bytes("a/damaged/1.state") == b"new" and fs.listdir("a/states") == []


def test_rename_of_a_missing_file_is_refused_naming_it(fs):
    with pytest.raises(StoreNotFoundError, match=r"a/states/9\.state does not exist"):
        fs.rename("a/states/9.state", "a/damaged/9.state")
    assert fs.listdir("a/damaged") == []


def test_rename_refuses_a_path_with_dotdot(fs):
    fs.write_bytes("a/states/1.state", b"x")
    with pytest.raises(Exception, match=r"refusing path .*'\.\.'"):
        fs.rename("a/states/1.state", "../outside.state")
    assert fs.exists("a/states/1.state")


def test_walk_lists_every_file_below_at_any_depth_with_its_mtime(fs):
    fs.write_bytes("a/states/1.state", b"x")
    fs.makedirs("a/states/deep/er")
    fs.write_bytes("a/states/deep/er/2.state", b"y")
    os.utime(fs.path("a/states/1.state"), (1000, 1000))
    got = dict(fs.walk("a"))
    assert set(got) == {"a/states/1.state", "a/states/deep/er/2.state"} and got["a/states/1.state"] == 1000
    assert list(fs.walk("missing")) == []
