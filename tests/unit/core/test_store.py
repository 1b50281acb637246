from __future__ import annotations

import json
import os
import stat
import subprocess
import tarfile
import time

import pytest
import zstandard

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    StoreError,
    StoreFullError,
    StoreNotFoundError,
    StorePermissionError,
    VerificationFailedError,
)
from tests.unit.core.helpers import ARTIFACTS, archive_path, flip_byte, make_checkpoint, member_data_offsets


def corrupt(store, manifest) -> None:
    """Flip one byte in the middle of the first artifact's data."""
    path = archive_path(store, manifest.checkpoint_id)
    offset, size = member_data_offsets(path)[manifest.artifacts[0].member]
    flip_byte(path, offset + size // 2)


def test_seal_round_trip_restores_every_byte(store, tmp_path):
    m = make_checkpoint(store)
    info = store.get(m.checkpoint_id)
    assert info.manifest == m
    with tarfile.open(archive_path(store, m.checkpoint_id)) as tf:
        for name, (_component, _kind, content) in ARTIFACTS.items():
            data = tf.extractfile(m.artifact(name).member).read()
            assert zstandard.ZstdDecompressor().decompressobj().decompress(data) == content()
            assert m.artifact(name).raw_size == len(content())


def test_archive_decompresses_with_the_zstd_cli(store, tmp_path):
    m = make_checkpoint(store)
    subprocess.run(["tar", "-xf", archive_path(store, m.checkpoint_id), "-C", str(tmp_path)], check=True)
    member = tmp_path / m.artifact("postgres/app.dump").member
    out = subprocess.run(["zstd", "-dc", str(member)], check=True, capture_output=True).stdout
    assert out == ARTIFACTS["postgres/app.dump"][2]()


def test_files_and_directories_are_owner_only(store):
    old = os.umask(0o022)
    try:
        m = make_checkpoint(store)
        store.mark_lkg(m.checkpoint_id)
    finally:
        os.umask(old)
    for dirpath, _dirnames, filenames in os.walk(store.root):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700, dirpath
        for f in filenames:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, f)).st_mode) == 0o600, f


def test_list_is_newest_first_and_filters_by_tag(store):
    a = make_checkpoint(store, run="a", tags=("scheduled",))
    time.sleep(0.01)
    b = make_checkpoint(store, run="b", tags=("pre-migration",))
    time.sleep(0.01)
    c = make_checkpoint(store, run="c", tags=("scheduled", "nightly"))
    assert [i.checkpoint_id for i in store.list()] == [c.checkpoint_id, b.checkpoint_id, a.checkpoint_id]
    assert [i.checkpoint_id for i in store.list(tag="scheduled")] == [c.checkpoint_id, a.checkpoint_id]
    assert [i.checkpoint_id for i in store.list(tag="pre-migration")] == [b.checkpoint_id]
    assert store.list(tag="nope") == []


def test_seal_discards_staging_and_refuses_empty_staging(store):
    make_checkpoint(store, run="x")
    assert os.listdir(os.path.join(store.root, "staging")) == []
    with pytest.raises(CheckpointError, match="holds no captured artifact"):
        store.seal(store.staging(staging_key("d", "empty")))


def test_failed_capture_leaves_no_staged_artifact(store):
    staging = store.staging(staging_key("d", "r"))
    with pytest.raises(RuntimeError):
        with staging.artifact("postgres/a.dump", store="postgres", kind="k") as sink:
            sink.write(b"partial")
            raise RuntimeError("pg_dump died")
    assert staging.artifacts() == []
    assert os.listdir(os.path.join(store.root, staging.rel, "data", "postgres")) == []


def test_unknown_checkpoint_id_names_it_and_lists_recent(store):
    m = make_checkpoint(store)
    with pytest.raises(CheckpointNotFoundError) as info:
        store.get("ckpt-20200101T000000Z-000000")
    msg = str(info.value)
    assert "no checkpoint 'ckpt-20200101T000000Z-000000'" in msg and m.checkpoint_id in msg and "HINT" in msg
    with pytest.raises(CheckpointNotFoundError, match="not a valid checkpoint id"):
        store.get("../../etc/passwd")
    with pytest.raises(CheckpointNotFoundError, match="no last-known-good"):
        store.get("last-known-good")


def test_missing_store_root(tmp_path):
    with pytest.raises(StoreNotFoundError) as info:
        Store.open(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value) and "storage_root" in str(info.value)


def test_non_store_directory_is_not_adopted(tmp_path):
    (tmp_path / "precious.txt").write_text("mine")
    with pytest.raises(StoreNotFoundError, match="is not empty and is not a checkpoint store"):
        Store.open(tmp_path, create=True)
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_store_half_created_by_a_concurrent_open_is_opened_not_refused(tmp_path):
    # what a second task's Store.open(create=True) finds while the first one is creating the store
    for d in ("checkpoints", "locks", "refs/lkg-history"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / ".tmp-store.json-1a2b3c4d").write_bytes(b"{")
    store = Store.open(tmp_path, create=True)
    assert json.loads((tmp_path / "store.json").read_text())["format_version"] >= 1
    assert Store.open(tmp_path).root == store.root


@pytest.fixture
def small_fs(tmp_path):
    """A real tmpfs capped at 1 MiB: writing more raises ENOSPC."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_unwritable_store_root(small_fs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(StorePermissionError) as info:
        Store.open(small_fs / "store", create=True)
    assert str(small_fs / "store") in str(info.value) and "Read-only file system" in str(info.value)
    assert "HINT" in str(info.value)


def test_store_root_turned_read_only_later(small_fs):
    store = Store.open(small_fs / "store", create=True)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(StorePermissionError, match="Read-only file system"):
        make_checkpoint(store)
    assert store.list() == []


def test_full_disk_while_capturing(small_fs):
    store = Store.open(small_fs / "store", create=True)
    staging = store.staging(staging_key("d", "r"))
    with pytest.raises(StoreFullError) as info:
        with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
            for _ in range(4):
                sink.write(os.urandom(512 * 1024))
    assert "No space left" in str(info.value) and "HINT" in str(info.value)
    assert staging.artifacts() == []
    leftovers = [f for _, _, fs in os.walk(small_fs / "store" / "staging") for f in fs]
    assert leftovers == []


def test_full_disk_while_sealing_publishes_nothing_and_keeps_lkg(small_fs):
    store = Store.open(small_fs / "store", create=True)
    # a first small checkpoint becomes the LKG
    staging = store.staging(staging_key("d", "small"))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(b"x" * 1000)
    first = store.seal(staging)
    store.mark_lkg(first.checkpoint_id)
    # a second one fits in staging but not twice (staging + archive)
    staging = store.staging(staging_key("d", "big"))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(os.urandom(600 * 1024))
    with pytest.raises(StoreFullError, match="No space left"):
        store.seal(staging)
    assert [i.checkpoint_id for i in store.list()] == [first.checkpoint_id]
    assert store.lkg().checkpoint_id == first.checkpoint_id
    assert [f for f in os.listdir(small_fs / "store" / "checkpoints") if first.checkpoint_id not in f] == []
    # staging is kept so the run can be sealed once space is freed
    assert [a.name for a in staging.artifacts()] == ["redis/dump.rdb"]


def test_delete(store):
    a = make_checkpoint(store, run="a")
    b = make_checkpoint(store, run="b", pinned=True)
    store.mark_lkg(a.checkpoint_id)
    with pytest.raises(StoreError, match="is the last-known-good"):
        store.delete(a.checkpoint_id)
    with pytest.raises(StoreError, match="is pinned"):
        store.delete(b.checkpoint_id)
    store.delete(b.checkpoint_id, force=True)
    assert [i.checkpoint_id for i in store.list()] == [a.checkpoint_id]
    assert not os.path.exists(archive_path(store, b.checkpoint_id))
    with pytest.raises(CheckpointNotFoundError):
        store.delete(b.checkpoint_id)


def test_lkg_moves_only_to_verified_checkpoints_and_keeps_history(store):
    a = make_checkpoint(store, run="a")
    b = make_checkpoint(store, run="b")
    c = make_checkpoint(store, run="c")
    store.mark_lkg(a.checkpoint_id, reason="first")
    store.mark_lkg(b.checkpoint_id, reason="second")
    # corrupt c: it must not become the LKG
    corrupt(store, c)
    with pytest.raises(VerificationFailedError, match=c.checkpoint_id):
        store.mark_lkg(c.checkpoint_id)
    lkg = store.lkg()
    assert (lkg.checkpoint_id, lkg.previous, lkg.reason) == (b.checkpoint_id, a.checkpoint_id, "second")
    assert [p.checkpoint_id for p in store.lkg_history()] == [b.checkpoint_id, a.checkpoint_id]
    assert store.get("last-known-good").checkpoint_id == b.checkpoint_id


def test_a_forged_verify_result_is_not_trusted(store):
    a = make_checkpoint(store, run="a")
    good = store.verify(a.checkpoint_id)
    b = make_checkpoint(store, run="b")
    corrupt(store, b)
    good.checkpoint_id = b.checkpoint_id  # a clean result, but for another manifest
    with pytest.raises(VerificationFailedError):
        store.mark_lkg(b.checkpoint_id, result=good)
    assert store.lkg() is None


def test_damaged_lkg_pointer_falls_back_to_history(store):
    a = make_checkpoint(store)
    store.mark_lkg(a.checkpoint_id)
    with open(os.path.join(store.root, "refs", "lkg.json"), "w") as f:
        f.write("{garbage")
    assert store.lkg().checkpoint_id == a.checkpoint_id


def test_cleanup_removes_orphans_but_not_checkpoints(store):
    a = make_checkpoint(store)
    ckdir = os.path.join(store.root, "checkpoints")
    open(os.path.join(ckdir, "ckpt-orphan.tar"), "wb").close()
    tmp = os.path.join(ckdir, ".tmp-ckpt-x.tar-1234")
    open(tmp, "wb").close()
    os.utime(tmp, (time.time() - 3600, time.time() - 3600))
    removed = store.cleanup()
    assert sorted(removed) == ["checkpoints/.tmp-ckpt-x.tar-1234", "checkpoints/ckpt-orphan.tar"]
    assert [i.checkpoint_id for i in store.list()] == [a.checkpoint_id]
    assert store.verify(a.checkpoint_id).ok


def test_seal_with_expected_artifacts_refuses_missing_or_changed(store):
    from dataclasses import replace

    staging = store.staging(staging_key("d", "expected"))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb") as sink:
        sink.write(b"rdb bytes")
    reported = sink.artifact
    with pytest.raises(CheckpointError, match="not in staging"):
        store.seal(staging, expected=[reported, replace(reported, name="postgres/app.dump")])
    with pytest.raises(CheckpointError, match="differs from what its capture task reported"):
        store.seal(staging, expected=[replace(reported, sha256="0" * 64)])
    assert store.list() == []
    m = store.seal(staging, expected=[reported])
    assert [a.name for a in m.artifacts] == ["redis/dump.rdb"]


def test_open_artifact_streams_decompressed_bytes(store):
    m = make_checkpoint(store)
    for name, (_c, _k, content) in ARTIFACTS.items():
        with store.open_artifact(m.checkpoint_id, name) as f:
            assert f.read() == content()


def test_open_artifact_refuses_damaged_bytes(store):
    m = make_checkpoint(store)
    name = "redis/dump.rdb"  # incompressible: zstd still decodes, only the sha256 can tell
    path = archive_path(store, m.checkpoint_id)
    offset, size = member_data_offsets(path)[m.artifact(name).member]
    flip_byte(path, offset + size // 2)
    from airflow_checkpoint_provider.core.errors import IntegrityError

    with pytest.raises((IntegrityError, zstandard.ZstdError)):
        with store.open_artifact(m.checkpoint_id, name) as f:
            while f.read(65536):
                pass
    with pytest.raises(IntegrityError, match="manifest says"):
        with store.open_artifact(m.checkpoint_id, name, decompress=False) as f:
            while f.read(65536):
                pass


def test_audit_records_are_appended_and_listed_newest_first(store):
    first = store.write_audit({"action": "restore", "checkpoint_id": "a", "components": ["postgres"]})
    time.sleep(0.002)
    store.write_audit({"action": "restore", "checkpoint_id": "b", "health": {"ok": True}})
    records = store.audit_log()
    assert [r["checkpoint_id"] for r in records] == ["b", "a"]
    assert records[1]["components"] == ["postgres"] and records[0]["format"] == "airflow-checkpoint-audit"
    assert stat.S_IMODE(os.stat(os.path.join(store.root, first)).st_mode) == 0o600
