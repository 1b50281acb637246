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


# ---- forging: rewrite a checkpoint as somebody with write access to the store could -------------


def archive_members(path: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of every member of an archive, in order (read with the stdlib tarfile module)."""
    import tarfile

    with tarfile.open(path) as tf:
        return [(n, tf.extractfile(n).read()) for n in tf.getnames()]


def resealed(body: dict) -> dict:
    """``body`` with a freshly computed ``manifest_sha256``: a forgery that passes the self-checksum."""
    from airflow_checkpoint_provider.core.manifest import canonical_json, sha256_hex

    body = {k: v for k, v in body.items() if k != "manifest_sha256"}
    return {**body, "manifest_sha256": sha256_hex(canonical_json(body))}


def manifest_bytes(obj: dict) -> bytes:
    """Manifest JSON laid out as the writer lays it out."""
    import json

    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def write_forged(
    store: Store, checkpoint_id: str, embedded: bytes, members: list[tuple[str, bytes]], sidecar: bytes | None = None
) -> None:
    """Replace a checkpoint's archive (``embedded`` manifest + ``members``) and its store copy of the manifest."""
    import io
    import tarfile

    with tarfile.open(archive_path(store, checkpoint_id), "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in [("manifest.json", embedded), *members]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    with open(os.path.join(store.root, "checkpoints", f"{checkpoint_id}.manifest.json"), "wb") as f:
        f.write(embedded if sidecar is None else sidecar)


def forge_fields(store: Store, manifest: Manifest, edit) -> dict:
    """Edit the manifest body with ``edit(body)``, reseal it and write it as both copies; returns the body."""
    body = manifest.to_dict()
    edit(body)
    body = resealed(body)
    path = archive_path(store, manifest.checkpoint_id)
    write_forged(store, manifest.checkpoint_id, manifest_bytes(body), archive_members(path)[1:])
    return body


def zstd_bomb(inflated_mib: int = 1100) -> tuple[bytes, int]:
    """Valid JSON padded with ``inflated_mib`` MiB of spaces, zstd-compressed as a stream (about 35 KB).

    Returns the compressed bytes and their decompressed size.
    """
    import io

    import zstandard

    head, pad, tail = b'{"format": "airflow-checkpoint-search-snapshot",', b" " * (1 << 20), b"}"
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=3, write_checksum=True).stream_writer(out, closefd=False) as w:
        w.write(head)
        for _ in range(inflated_mib):
            w.write(pad)
        w.write(tail)
    return out.getvalue(), len(head) + inflated_mib * len(pad) + len(tail)


def plant_member(store: Store, checkpoint_id: str, name: str, data: bytes, raw_size: int | None = None) -> None:
    """Replace artifact ``name``'s stored bytes, with size and sha256 (and ``raw_size`` if given) to match."""
    body = store.get(checkpoint_id).manifest.to_dict()
    art = next(a for a in body["artifacts"] if a["name"] == name)
    member = "artifacts/" + name + (".zst" if art["compression"] == "zstd" else "")
    art.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    if raw_size is not None:
        art["raw_size"] = raw_size
    members = [(n, data if n == member else d) for n, d in archive_members(archive_path(store, checkpoint_id))[1:]]
    write_forged(store, checkpoint_id, manifest_bytes(resealed(body)), members)


def run_bomb_child(store: Store, checkpoint_id: str, mode: str, url: str = "http://127.0.0.1:9") -> dict:
    """Run ``tests.unit.core.bomb_child`` (``plan`` or ``verify-deep``) and return its report."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "tests.unit.core.bomb_child", store.root, checkpoint_id, mode, url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
