"""``airflow-checkpoint rekey`` over a real store on disk: key files in, key records re-wrapped, archives untouched."""

from __future__ import annotations

import json
import os

import pytest

from airflow_checkpoint_provider.cli import EXIT_OK, EXIT_USAGE
from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.crypt import Cipher
from tests.unit.test_cli import run


def _key_file(tmp_path, name):
    key = os.urandom(32)
    path = tmp_path / name
    path.write_text(key.hex())
    path.chmod(0o600)
    return str(path), Cipher(key)


@pytest.fixture
def keys(tmp_path):
    return _key_file(tmp_path, "old.key"), _key_file(tmp_path, "new.key")


def _encrypted_checkpoint(root, cipher) -> str:
    store = Store.open(root, create=True, cipher=cipher)
    staging = store.staging(staging_key("cli", "rekey"))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(b"payload")
    return store.seal(staging).checkpoint_id


def test_rekey_from_key_files_then_only_the_new_key_reads(tmp_path, keys, capsys, monkeypatch):
    (old_file, old), (new_file, new) = keys
    root = str(tmp_path / "store")
    cid = _encrypted_checkpoint(root, old)
    archive = (tmp_path / "store" / "checkpoints" / f"{cid}.tar").read_bytes()
    monkeypatch.setenv("AIRFLOW__CHECKPOINT__ENCRYPTION_KEY_FILE", old_file)  # the old key is the configured one
    code, out, _ = run(capsys, "--root", root, "rekey", "--new-key-file", new_file, "--dry-run", "--json")
    assert code == EXIT_OK and json.loads(out)["rewrapped"] == [f"checkpoints/{cid}.keys.json"]
    assert json.loads(out)["dry_run"] is True
    code, out, _ = run(capsys, "--root", root, "rekey", "--new-key-file", new_file)
    assert code == EXIT_OK and f"1 key record(s) re-wrapped from master key {old.key_id} to {new.key_id}" in out
    assert (tmp_path / "store" / "checkpoints" / f"{cid}.tar").read_bytes() == archive
    assert Store.open(root, cipher=new).read_artifact(cid, "redis/dump.rdb") == b"payload"
    code, out, _ = run(
        capsys, "--root", root, "rekey", "--old-key-file", old_file, "--new-key-file", new_file, "--json"
    )
    assert code == EXIT_OK and json.loads(out)["skipped"] == [f"checkpoints/{cid}.keys.json"]


def test_rekey_with_a_wrong_old_key_fails_naming_the_key_id_wanted(tmp_path, keys, capsys):
    (old_file, old), (new_file, _) = keys
    wrong_file, wrong = _key_file(tmp_path, "wrong.key")
    root = str(tmp_path / "store")
    _encrypted_checkpoint(root, old)
    code, out, _ = run(
        capsys, "--root", root, "rekey", "--old-key-file", wrong_file, "--new-key-file", new_file, "--json"
    )
    error = json.loads(out)["error"]
    assert code == EXIT_USAGE and f"wrapped by master key {old.key_id}" in error["message"]
    assert wrong.key_id in error["message"] and old.key_id in error["hint"]
    assert old.key_id not in open(old_file).read()  # (the id is no secret: it is not the key)


def test_rekey_needs_a_new_key_that_differs_from_the_old_one(tmp_path, keys, capsys):
    (old_file, old), _ = keys
    root = str(tmp_path / "store")
    _encrypted_checkpoint(root, old)
    code, _, err = run(capsys, "--root", root, "rekey", "--old-key-file", old_file)
    assert code == EXIT_USAGE and "needs the new master key" in err
    code, _, err = run(capsys, "--root", root, "rekey", "--old-key-file", old_file, "--new-key-file", old_file)
    assert code == EXIT_USAGE and f"the same key ({old.key_id})" in err


def test_rekey_names_a_checkpoint_of_the_direct_key_scheme_that_it_cannot_rewrap(tmp_path, keys, capsys):
    from airflow_checkpoint_provider.core.crypt import EncryptingWriter

    (old_file, old), (new_file, _) = keys
    root = str(tmp_path / "store")
    store = Store.open(root, create=True)
    staging = store.staging(staging_key("cli", "direct"))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        writer = EncryptingWriter(sink, old.key, "redis/dump.rdb")  # an earlier version: the master key itself
        writer.write(b"payload")
        writer.close()
        sink.meta = {"encryption": old.meta()}
    direct = store.seal(staging).checkpoint_id
    code, out, _ = run(capsys, "--root", root, "rekey", "--old-key-file", old_file, "--new-key-file", new_file)
    assert code == EXIT_OK and f"NOT re-wrapped: {direct} is encrypted with a master key itself" in out
    code, out, _ = run(
        capsys, "--root", root, "rekey", "--old-key-file", old_file, "--new-key-file", new_file, "--json"
    )
    assert json.loads(out)["not_rewrapped_direct_key"] == [direct]
