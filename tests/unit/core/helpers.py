"""Builders shared by the core unit tests (plain Python, no servers)."""

from __future__ import annotations

import hashlib
import os
import random

from airflow_checkpoint_provider.core import Manifest, Store, staging_key

ARTIFACTS = {
    # name: (store, kind, content maker)
    "postgres/app.dump": ("postgres", "pg_dump/custom", lambda: b"COPY public.t (id) FROM stdin;\n" * 20000),
    "redis/dump.rdb": ("redis", "redis/rdb", lambda: random.Random(7).randbytes(300_000)),
    "search/snapshot.json": ("search", "search/snapshot", lambda: b'{"snapshot":"s1","indices":["a","b"]}'),
}


def make_checkpoint(store: Store, run: str = "run", tags: tuple[str, ...] = ("scheduled",), **seal_kwargs) -> Manifest:
    """Stage the three sample artifacts and seal them."""
    staging = store.staging(staging_key("test_dag", run))
    for name, (component, kind, content) in ARTIFACTS.items():
        with staging.artifact(name, store=component, kind=kind, engine=component, engine_version="1.0") as sink:
            sink.write(content())
            sink.fingerprints = {"digest": hashlib.sha256(content()).hexdigest()}
    return store.seal(staging, tags=list(tags), provenance={"dag_id": "test_dag", "run_id": run}, **seal_kwargs)


def archive_path(store: Store, checkpoint_id: str) -> str:
    return os.path.join(store.root, "checkpoints", f"{checkpoint_id}.tar")


def member_data_offsets(path: str) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size), read with the stdlib tarfile module (independent reader)."""
    import tarfile

    with tarfile.open(path, "r:") as tf:
        return {m.name: (m.offset_data, m.size) for m in tf.getmembers()}


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))
