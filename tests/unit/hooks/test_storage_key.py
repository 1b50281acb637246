"""Where the master key comes from (hooks/storage.py): a key file, an Airflow Variable or a connection.

The Variable and connection lookups are replaced by plain functions here (a fake of Airflow's
lookup, not of our logic): what is tested is our choice of source and our errors."""

from __future__ import annotations

import os
import types

import pytest

from airflow_checkpoint_provider.core.crypt import Cipher, key_id
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.hooks import storage
from airflow_checkpoint_provider.hooks.storage import resolve_cipher

KEY = bytes(range(32))


def _key_file(tmp_path, mode=0o600):
    path = tmp_path / "master.key"
    path.write_text(KEY.hex() + "\n")
    path.chmod(mode)
    return str(path)


def test_no_source_means_no_encryption():
    assert resolve_cipher({}) is None


def test_key_file_variable_and_connection_give_the_same_key(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "_variable", {"ckpt_key": KEY.hex()}.__getitem__)
    conns = {"by_password": types.SimpleNamespace(password=KEY.hex(), extra_dejson={})}
    conns["by_extra"] = types.SimpleNamespace(password=None, extra_dejson={"key": KEY.hex()})
    monkeypatch.setattr("airflow.sdk.BaseHook.get_connection", staticmethod(conns.__getitem__))
    sources = [
        {"encryption_key_file": _key_file(tmp_path)},
        {"encryption_key_variable": "ckpt_key"},
        {"encryption_key_conn_id": "by_password"},
        {"encryption_key_conn_id": "by_extra"},
    ]
    assert {resolve_cipher(s).key_id for s in sources} == {key_id(KEY)}


def test_two_sources_set_at_once_are_refused_by_name(tmp_path):
    with pytest.raises(CheckpointError, match="encryption_key_file, encryption_key_variable") as err:
        resolve_cipher({"encryption_key_file": _key_file(tmp_path), "encryption_key_variable": "k"})
    assert "exactly one" in err.value.hint


def test_missing_variable_names_it_and_a_short_value_is_not_echoed(monkeypatch):
    def missing(key):
        raise KeyError(key)

    monkeypatch.setattr(storage, "_variable", missing)
    with pytest.raises(CheckpointError, match="Airflow Variable 'ckpt_key' \\(encryption_key_variable\\)"):
        resolve_cipher({"encryption_key_variable": "ckpt_key"})
    monkeypatch.setattr(storage, "_variable", lambda key: "deadbeef" * 4)
    with pytest.raises(CheckpointError, match="not a 256-bit key") as err:
        resolve_cipher({"encryption_key_variable": "ckpt_key"})
    assert "deadbeef" not in str(err.value)


def test_configured_sources_reach_the_store_kwargs(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CHECKPOINT__ENCRYPTION_KEY_FILE", _key_file(tmp_path))
    cipher = storage.store_kwargs(str(tmp_path / "store"))["cipher"]
    assert isinstance(cipher, Cipher) and cipher.key_id == key_id(KEY)
    assert KEY.hex() not in repr(cipher)
    monkeypatch.setenv("AIRFLOW__CHECKPOINT__ENCRYPTION_KEY_CONN_ID", "also_set")
    with pytest.raises(CheckpointError, match="more than one master key source"):
        storage.store_kwargs(str(tmp_path / "store"))
    assert os.environ.get("AIRFLOW__CHECKPOINT__ENCRYPTION_KEY_VARIABLE") is None
