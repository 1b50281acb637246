"""Envelope keys (core/envelope.py): a data key per checkpoint wrapped by the master key, sealed
fingerprints, and rekey, over a real local store on disk."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import threading

import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.crypt import Cipher, EncryptingWriter
from airflow_checkpoint_provider.core.envelope import (
    UNAVAILABLE,
    checkpoint_keys_rel,
    rekey,
    shown_fingerprints,
    staging_data_key,
)
from airflow_checkpoint_provider.core.errors import CheckpointError, IntegrityError

TABLE = "public.payroll_secret_table"
ROW = b"row-canary-7f3e2d1c"


def _capture(store: Store, run: str, *, rows: int = 42) -> str:
    staging = store.staging(staging_key("envelope", run))
    with staging.artifact("postgres/app.dump", store="postgres", kind="pg_dump/custom") as sink:
        sink.write(ROW * 500)
        sink.fingerprints = {"rows": {TABLE: rows}, "schema_sha256": "ab" * 32}
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(b"REDIS" + ROW * 10)
        sink.fingerprints = {"keys": {"0": 7}}
    return store.seal(staging).checkpoint_id


def _grep(root: str, needle: str) -> str:
    return subprocess.run(["grep", "-rl", "--", needle, root], capture_output=True, text=True).stdout


@pytest.fixture
def master() -> Cipher:
    return Cipher(os.urandom(32))


@pytest.fixture
def enc_store(tmp_path, master) -> Store:
    return Store.open(tmp_path / "store", create=True, cipher=master)


def test_no_row_value_nor_table_name_is_in_plaintext_on_disk_while_staged_or_sealed(enc_store, tmp_path):
    plain = Store.open(tmp_path / "plain", create=True)
    _capture(plain, "control")
    assert _grep(plain.root, ROW.decode()) and _grep(plain.root, TABLE)  # the control: without a key, both show
    staging = enc_store.staging(staging_key("envelope", "staged"))
    with staging.artifact("postgres/app.dump", store="postgres", kind="pg_dump/custom") as sink:
        sink.write(ROW * 500)
        sink.fingerprints = {"rows": {TABLE: 3}}
    assert _grep(enc_store.root, ROW.decode()) == "" and _grep(enc_store.root, TABLE) == ""  # staged
    [staged] = staging.artifacts()
    assert staged.fingerprints == {} and "fingerprints" in staged.meta["encryption"]
    cid = enc_store.seal(staging).checkpoint_id
    assert _grep(enc_store.root, ROW.decode()) == "" and _grep(enc_store.root, TABLE) == ""  # sealed
    assert enc_store.get(cid).manifest.artifact("postgres/app.dump").fingerprints == {"rows": {TABLE: 3}}


def test_manifest_records_algorithm_and_both_key_ids_and_the_key_record_sits_beside_the_archive(enc_store, master):
    cid = _capture(enc_store, "ids")
    record = json.loads(enc_store.fs.read_bytes(checkpoint_keys_rel(cid)))
    assert record["scope"] == f"checkpoint:{cid}" and record["master_key_id"] == master.key_id
    for art in enc_store.get(cid).manifest.artifacts:
        enc = art.meta["encryption"]
        assert enc["algorithm"] == "AES-256-GCM-chunked-v1" and enc["master_key_id"] == master.key_id
        assert enc["data_key_id"] == record["data_key_id"] and "key_id" not in enc
    assert os.stat(enc_store.fs.local_path(checkpoint_keys_rel(cid))).st_mode & 0o777 == 0o600


def test_decrypted_fingerprints_keep_the_manifest_checksum_so_lkg_and_basic_verify_hold(enc_store):
    cid = _capture(enc_store, "lkg")
    stored = enc_store._read_manifest(cid)
    opened = enc_store.get(cid).manifest
    assert opened.artifact("redis/dump.rdb").fingerprints == {"keys": {"0": 7}}
    assert opened.manifest_sha256 == stored.manifest_sha256 and opened.canonical() == stored.canonical()
    enc_store.mark_lkg(cid, result=enc_store.verify(cid))
    assert enc_store.resolve("last-known-good") == cid


def test_without_the_key_listing_and_verify_work_and_fingerprints_show_as_unavailable(enc_store, tmp_path):
    cid = _capture(enc_store, "nokey")
    keyless = Store.open(tmp_path / "store")
    assert [i.checkpoint_id for i in keyless.list()] == [cid]
    assert keyless.verify(cid).ok
    manifest = keyless.get(cid).manifest
    assert shown_fingerprints(manifest, manifest.artifact("postgres/app.dump")) == UNAVAILABLE
    with pytest.raises(IntegrityError, match=f"checkpoint {cid} is encrypted and no master key is configured"):
        keyless.opened(manifest, required=True)


def test_wrong_master_key_is_one_error_naming_the_key_id_wanted(enc_store, master, tmp_path):
    cid = _capture(enc_store, "wrong")
    other = Cipher(os.urandom(32))
    wrong = Store.open(tmp_path / "store", cipher=other)
    with pytest.raises(IntegrityError) as err:
        wrong.read_artifact(cid, "redis/dump.rdb")
    assert f"wrapped by master key {master.key_id}, not by the configured key {other.key_id}" in err.value.message
    assert master.key_id in (err.value.hint or "")


def test_writers_on_two_machines_share_the_first_writers_data_key(tmp_path, master):
    # two Store objects over one root stand for two workers; the race is run by threads
    root = tmp_path / "store"
    Store.open(root, create=True)
    stores = [Store.open(root, cipher=master) for _ in range(6)]
    key = staging_key("envelope", "race")
    ids, barrier = [], threading.Barrier(len(stores))

    def first_write(s: Store) -> None:
        staging = s.staging(key)
        barrier.wait()
        ids.append(staging_data_key(s.fs, staging.rel, key, master).key_id)

    threads = [threading.Thread(target=first_write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == len(stores) and len(set(ids)) == 1
    a, b = stores[0].staging(key), stores[1].staging(key)
    with a.artifact("postgres/app.dump", store="postgres", kind="pg_dump/custom") as sink:
        sink.write(b"from worker a")
    with b.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(b"from worker b")
    cid = stores[2].seal(stores[2].staging(key)).checkpoint_id
    reader = Store.open(root, cipher=master)
    assert reader.read_artifact(cid, "postgres/app.dump") == b"from worker a"
    assert reader.read_artifact(cid, "redis/dump.rdb") == b"from worker b"


def test_key_record_copied_to_another_checkpoint_does_not_unwrap(enc_store, tmp_path, master):
    a, b = _capture(enc_store, "a"), _capture(enc_store, "b")
    record = json.loads(enc_store.fs.read_bytes(checkpoint_keys_rel(a)))
    enc_store.fs.write_bytes(checkpoint_keys_rel(b), json.dumps(record).encode())
    with pytest.raises(IntegrityError, match=f"is the key record of 'checkpoint:{a}'"):
        Store.open(tmp_path / "store", cipher=master).read_artifact(b, "redis/dump.rdb")
    record["scope"] = f"checkpoint:{b}"  # the scope is authenticated too
    enc_store.fs.write_bytes(checkpoint_keys_rel(b), json.dumps(record).encode())
    with pytest.raises(IntegrityError, match="does not unwrap with master key"):
        Store.open(tmp_path / "store", cipher=master).read_artifact(b, "redis/dump.rdb")


def test_seal_of_encrypted_artifacts_without_the_master_key_is_refused(enc_store, tmp_path):
    staging = enc_store.staging(staging_key("envelope", "bundle"))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(b"x")
    keyless = Store.open(tmp_path / "store")
    with pytest.raises(CheckpointError, match="no master key is configured"):
        keyless.seal(keyless.staging(staging.key))
    assert keyless.list() == []


def test_deleting_a_checkpoint_removes_its_key_record_and_cleanup_an_orphan_one(enc_store):
    cid = _capture(enc_store, "delete")
    orphan = checkpoint_keys_rel("ckpt-orphan")
    enc_store.fs.write_bytes(orphan, b"{}")
    assert orphan in enc_store.cleanup() and not enc_store.fs.exists(orphan)
    assert enc_store.fs.exists(checkpoint_keys_rel(cid))  # a sealed checkpoint's record stays
    enc_store.delete(cid)
    assert not enc_store.fs.exists(checkpoint_keys_rel(cid))


def test_artifact_of_the_direct_key_scheme_still_decrypts_with_that_key(tmp_path, master):
    store = Store.open(tmp_path / "store", create=True)
    staging = store.staging(staging_key("envelope", "direct"))
    blob = io.BytesIO()
    writer = EncryptingWriter(blob, master.key, "redis/dump.rdb")
    writer.write(b"written by the direct scheme")
    writer.close()
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(blob.getvalue())
        sink.meta = {"encryption": master.meta()}
        sink.fingerprints = {"keys": {"0": 1}}
    cid = store.seal(staging).checkpoint_id
    keyed = Store.open(tmp_path / "store", cipher=master)
    assert keyed.read_artifact(cid, "redis/dump.rdb") == b"written by the direct scheme"
    assert keyed.get(cid).manifest.artifact("redis/dump.rdb").fingerprints == {"keys": {"0": 1}}
    with pytest.raises(IntegrityError, match=f"encrypted with key id {master.key_id}"):
        Store.open(tmp_path / "store", cipher=Cipher(os.urandom(32))).read_artifact(cid, "redis/dump.rdb")


# ---- rekey ---------------------------------------------------------------------------------------------


def _archives(store: Store) -> dict[str, str]:
    folder = store.fs.local_path("checkpoints")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.suffix == ".tar"}


def test_rekey_rewraps_every_data_key_and_never_touches_an_archive(enc_store, master, tmp_path):
    cids = [_capture(enc_store, f"r{i}") for i in range(3)]
    staging = enc_store.staging(staging_key("envelope", "in-flight"))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(b"staged")
    before, new = _archives(enc_store), Cipher(os.urandom(32))
    report = rekey(enc_store.fs, master, new)
    assert len(report.rewrapped) == 4 and report.skipped == []  # three checkpoints and the staging area
    assert _archives(enc_store) == before
    rekeyed = Store.open(tmp_path / "store", cipher=new)
    for cid in cids:
        assert rekeyed.read_artifact(cid, "postgres/app.dump") == ROW * 500
        with pytest.raises(IntegrityError, match=f"wrapped by master key {new.key_id}"):
            Store.open(tmp_path / "store", cipher=master).read_artifact(cid, "redis/dump.rdb")
    assert (
        rekeyed.read_artifact(rekeyed.seal(rekeyed.staging(staging.key)).checkpoint_id, "redis/dump.rdb") == b"staged"
    )


def test_rekey_killed_between_two_checkpoints_is_finished_by_a_rerun(enc_store, master, tmp_path):
    cids = [_capture(enc_store, f"k{i}") for i in range(3)]
    new = Cipher(os.urandom(32))

    def killed(rel: str) -> None:
        raise KeyboardInterrupt(f"killed after {rel}")  # stands for the process dying here

    with pytest.raises(KeyboardInterrupt):
        rekey(enc_store.fs, master, new, after_each=killed)
    wrapped = [json.loads(enc_store.fs.read_bytes(checkpoint_keys_rel(c)))["master_key_id"] for c in cids]
    assert sorted(wrapped) == sorted([new.key_id, master.key_id, master.key_id])
    rerun = rekey(enc_store.fs, master, new)
    assert len(rerun.skipped) == 1 and len(rerun.rewrapped) == 2
    assert rekey(enc_store.fs, master, new).rewrapped == []  # a third run has nothing left to do
    rekeyed = Store.open(tmp_path / "store", cipher=new)
    assert all(rekeyed.read_artifact(c, "redis/dump.rdb") == b"REDIS" + ROW * 10 for c in cids)


def test_rekey_with_a_wrong_old_key_names_the_key_id_expected_and_changes_nothing(enc_store, master):
    cid = _capture(enc_store, "w")
    before = enc_store.fs.read_bytes(checkpoint_keys_rel(cid))
    wrong = Cipher(os.urandom(32))
    with pytest.raises(CheckpointError) as err:
        rekey(enc_store.fs, wrong, Cipher(os.urandom(32)))
    assert f"wrapped by master key {master.key_id}, but the old key given has id {wrong.key_id}" in err.value.message
    assert master.key_id in (err.value.hint or "")
    assert enc_store.fs.read_bytes(checkpoint_keys_rel(cid)) == before


def test_rekey_dry_run_lists_the_records_and_changes_nothing(enc_store, master):
    cid = _capture(enc_store, "dry")
    before = enc_store.fs.read_bytes(checkpoint_keys_rel(cid))
    report = rekey(enc_store.fs, master, Cipher(os.urandom(32)), dry_run=True)
    assert report.rewrapped == [checkpoint_keys_rel(cid)]
    assert enc_store.fs.read_bytes(checkpoint_keys_rel(cid)) == before


def test_checkpoint_page_detail_shows_fingerprints_with_the_key_and_unavailable_without(enc_store, tmp_path):
    from airflow_checkpoint_provider.ui.model import detail

    cid = _capture(enc_store, "page")
    assert detail(enc_store, cid)["fingerprints"]["postgres"]["postgres/app.dump"]["rows"] == {TABLE: 42}
    keyless = detail(Store.open(tmp_path / "store"), cid)["fingerprints"]
    assert keyless["postgres"]["postgres/app.dump"] == UNAVAILABLE
