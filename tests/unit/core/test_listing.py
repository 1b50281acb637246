"""core/listing.py: the listing cache is fast, follows every change of the files, and is never trusted.

Real stores on disk; the cache file is damaged or forged by hand where a test says so."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from airflow_checkpoint_provider.core.listing import CACHE_FILE, FORMAT, VERSION
from tests.unit.core.helpers import make_checkpoint


def _age(store, seconds: float = 60) -> None:
    """Move every file's mtime into the past, beyond the racy window."""
    past = time.time() - seconds
    for top, dirs, files in os.walk(store.root):
        for name in dirs + files:
            os.utime(os.path.join(top, name), (past, past))


def _listing(store, cached=True):
    infos, damaged = store.scan(cached=cached)
    return [(i.to_dict(), i.manifest.manifest_sha256, store.state_of(i).to_dict()) for i in infos], damaged


def _cache(store):
    return os.path.join(store.root, CACHE_FILE)


def _forge(store, edit) -> None:
    """Rewrite the cache's entries with ``edit`` and a matching checksum (what an attacker could do)."""
    with open(_cache(store), "rb") as f:
        header, _, body = f.read().partition(b"\n")
    entries = json.loads(body)
    edit(entries)
    body = json.dumps(entries).encode()
    doc = {"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(body).hexdigest()}
    with open(_cache(store), "wb") as f:
        f.write(json.dumps(doc).encode() + b"\n" + body)


@pytest.fixture
def listed(store):
    a = make_checkpoint(store, run="a")
    b = make_checkpoint(store, run="b", tags=("pre-migration",))
    store.record_verify(store.get(a.checkpoint_id), store.verify(a.checkpoint_id), 3, by={"test": "x"})
    _age(store)
    first = _listing(store)
    assert os.path.exists(_cache(store))
    return a, b, first


def test_a_cached_listing_equals_a_fresh_one(store, listed):
    _, _, first = listed
    with open(_cache(store), "rb") as f:
        assert b"pre-migration" in f.read()  # the second listing really reads the cache
    assert _listing(store) == first == _listing(store, cached=False)


def test_the_cache_file_is_owner_only(store, listed):
    assert os.stat(_cache(store)).st_mode & 0o777 == 0o600


def test_a_checkpoint_deleted_behind_the_cache_is_not_listed(store, listed):
    a, b, _ = listed
    os.remove(os.path.join(store.root, "checkpoints", f"{a.checkpoint_id}.tar"))
    assert [i.checkpoint_id for i in store.scan()[0]] == [b.checkpoint_id]


def test_a_new_verification_record_changes_the_cached_state(store, listed):
    _, b, first = listed
    assert {d["checkpoint_id"]: s["label"] for d, _, s in first[0]}[b.checkpoint_id] == "sealed"
    store.record_verify(store.get(b.checkpoint_id), store.verify(b.checkpoint_id), 3, by={"test": "x"})
    labels = {d["checkpoint_id"]: s["label"] for d, _, s in _listing(store)[0]}
    assert labels[b.checkpoint_id] == "verified:standard"


def test_a_damaged_cache_is_ignored_and_rebuilt(store, listed):
    _, _, first = listed
    with open(_cache(store), "r+b") as f:
        f.seek(40)
        f.write(b"garbage")
    assert _listing(store) == first
    assert _listing(store) == first  # and from the rebuilt cache


def test_a_forged_entry_for_other_files_is_ignored(store, listed):
    a, _, first = listed

    def retag(entries):
        entries[a.checkpoint_id]["manifest"]["tags"] = ["forged"]
        entries[a.checkpoint_id]["stat"][0][2] += 1  # not the stat of the real file

    _forge(store, retag)
    assert _listing(store) == first


def test_a_world_writable_or_linked_cache_is_not_read(store, listed, caplog):
    a, _, first = listed
    _forge(store, lambda e: e[a.checkpoint_id]["manifest"].update(tags=["forged"]))
    os.chmod(_cache(store), 0o666)
    assert _listing(store) == first and "not a private regular file" in caplog.text
    os.replace(_cache(store), _cache(store) + ".elsewhere")
    os.symlink(_cache(store) + ".elsewhere", _cache(store))
    assert _listing(store) == first


def test_verification_and_decisions_never_use_the_cache(store, listed):
    a, _, _ = listed

    def lie(entries):  # forged with the real stat: only listings can be fooled this way
        entries[a.checkpoint_id]["manifest"]["pinned"] = True
        entries[a.checkpoint_id]["manifest"]["artifacts"][0]["sha256"] = "0" * 64

    _forge(store, lie)
    assert next(i for i in store.scan()[0] if i.checkpoint_id == a.checkpoint_id).pinned  # the listing shows it
    assert not next(i for i in store.scan(cached=False)[0] if i.checkpoint_id == a.checkpoint_id).pinned
    assert not store.get(a.checkpoint_id).pinned
    assert store.verify(a.checkpoint_id).ok  # verify read the real manifest and archive


def test_a_long_lived_process_reads_an_unchanged_cache_file_once_and_a_changed_one_again(store, listed, monkeypatch):
    """The Checkpoints page lists in the api-server: parsing the cache file every request would cost
    more than the listing it saves. The file is parsed again only when its stat changed, and a
    forged rewrite (another stat) is still checked as any read is."""
    from airflow_checkpoint_provider.core import listing

    _, _, first = listed
    _listing(store)  # the cache as this process last wrote it, read once
    reads = []
    real = listing.hashlib.sha256
    monkeypatch.setattr(listing.hashlib, "sha256", lambda data=b"": reads.append(len(data)) or real(data))
    assert _listing(store) == first and _listing(store) == first
    assert reads == []  # not read, not even checksummed, again
    _forge(store, lambda entries: entries.clear())
    assert _listing(store) == first and reads  # a changed file: read and checked again


def test_a_cached_manifest_keeps_every_field_of_the_fresh_one_config_keys_included(store):
    make_checkpoint(store, run="c", config_hash="f" * 64, config_keys={"redis:maxmemory-policy": "a" * 64})
    _age(store)
    store.scan()  # writes the cache
    (cached,), _ = store.scan()
    (fresh,), _ = store.scan(cached=False)
    assert cached.manifest.config_keys == {"redis:maxmemory-policy": "a" * 64}
    assert cached.manifest.canonical() == fresh.manifest.canonical()
