"""Staging: where capture tasks stream their artifacts before the checkpoint is sealed.

Each run gets ``staging/<key>/``. An artifact is two files:

* ``data/<name>``: the stored bytes (zstd unless the producer already compressed them),
  written atomically, so a half-written artifact never appears under its name;
* ``desc/<name>.json``: its descriptor (size, sha256, engine, capture interval,
  fingerprints), written after the data is complete. A descriptor is the
  artifact's commit marker: the bundle step only sees artifacts that have one.

With encryption at rest the data is encrypted with the run's data key (``keys.json``, see
core/envelope.py) and the descriptor carries the fingerprints sealed with it.

Capture tasks may run on different workers; they only need to reach the store.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

import zstandard

from airflow_checkpoint_provider.core import progress
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    FormatError,
    StoreError,
)
from airflow_checkpoint_provider.core.fs import StoreFS
from airflow_checkpoint_provider.core.manifest import (
    Artifact,
    format_ts,
    utcnow,
    validate_artifact_name,
)
from airflow_checkpoint_provider.core.safejson import load_json
from airflow_checkpoint_provider.core.streams import (
    CHUNK_SIZE,
    DEFAULT_ZSTD_LEVEL,
    CountingWriter,
    HashingWriter,
    Writable,
    zstd_compressor,
)

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.crypt import Cipher, DataKey

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def staging_key(*parts: str) -> str:
    """A directory-safe, collision-resistant key for a run, e.g. from (dag_id, run_id)."""
    readable = _KEY_UNSAFE.sub("_", "__".join(parts)).strip("._-")[:80] or "run"
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]
    return f"{readable}-{digest}"


class ArtifactSink:
    """Write one artifact into staging: compress, hash and count in the same pass.

    Use it as a context manager; leaving the block with an exception discards everything
    written so far. Set :attr:`fingerprints` and :attr:`meta` before the block ends.
    """

    def __init__(
        self,
        staging: Staging,
        name: str,
        *,
        store: str,
        kind: str,
        engine: str = "",
        engine_version: str = "",
        compression: str = "zstd",
        level: int = DEFAULT_ZSTD_LEVEL,
    ) -> None:
        if compression not in ("zstd", "none"):
            raise CheckpointError(f"unknown compression {compression!r} for artifact {name!r}")
        self.staging = staging
        self.name = validate_artifact_name(name)
        self.store, self.kind, self.compression = store, kind, compression
        self.engine, self.engine_version = engine, engine_version
        self.fingerprints: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.capture_start = format_ts(utcnow())
        self.capture_end = ""
        self._level = level
        self.artifact: Artifact | None = None

    def __enter__(self) -> ArtifactSink:
        self._writer_cm = self.staging.fs.atomic_writer(self.staging.data_rel(self.name))
        self._file = self._writer_cm.__enter__()
        self._hashing = HashingWriter(self._file)
        # raw -> (zstd) -> (AES-256-GCM chunks) -> hash and size of the stored bytes -> the store
        self._enc = None
        if self.staging.cipher is not None:
            self._enc = self.staging.data_key().writer(cast(BinaryIO, self._hashing), self.name)
        stored = cast(Writable, self._enc or self._hashing)
        if self.compression == "zstd":
            self._zstd: zstandard.ZstdCompressionWriter | None = zstd_compressor(self._level).stream_writer(
                cast(IO[bytes], stored), closefd=False, write_return_read=True
            )
            self._raw = CountingWriter(cast(Writable, self._zstd))
        else:
            self._zstd = None
            self._raw = CountingWriter(stored)
        self._progress = progress.track("capture", self.name)
        if self._progress is not None:
            self._raw = CountingWriter(progress.Tracked(self._raw, self._progress))
        return self

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._raw.write(data)

    def write_from(self, src: BinaryIO, chunk: int = CHUNK_SIZE) -> int:
        """Copy a whole stream in (e.g. a subprocess's stdout). Returns raw bytes copied."""
        total = 0
        while piece := src.read(chunk):
            self._raw.write(piece)
            total += len(piece)
        return total

    def mark_captured(self) -> None:
        """Record the end of the capture now (default: when the sink closes)."""
        self.capture_end = format_ts(utcnow())

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._progress is not None:
            self._progress.close()
        try:
            if exc_type is None:
                if self._zstd is not None:
                    self._zstd.flush(zstandard.FLUSH_FRAME)
                    self._zstd.close()  # type: ignore[no-untyped-call]  # zstandard's stubs leave close() untyped
                if self._enc is not None:
                    self._enc.close()
                if not self.capture_end:
                    self.mark_captured()
                self._file.commit()
        finally:
            self._writer_cm.__exit__(exc_type, exc, tb)
        if exc_type is None:
            fingerprints, meta = self.fingerprints, dict(self.meta)
            if self.staging.cipher is not None:  # the fingerprints are sealed with the data key
                from airflow_checkpoint_provider.core.envelope import seal_fingerprints

                data_key = self.staging.data_key()
                meta["encryption"] = {
                    **data_key.meta(self.staging.cipher.key_id),
                    "fingerprints": seal_fingerprints(data_key, self.name, fingerprints),
                }
                fingerprints = {}
            self.artifact = Artifact(
                name=self.name,
                store=self.store,
                kind=self.kind,
                size=self._hashing.size,
                sha256=self._hashing.hexdigest(),
                compression=self.compression,
                # encrypted but not compressed: the stored size is not the raw size, and the final
                # chunk's flag already bounds what decrypts
                raw_size=None if self._enc is not None and self._zstd is None else self._raw.size,
                engine=self.engine,
                engine_version=self.engine_version,
                capture_start=self.capture_start,
                capture_end=self.capture_end,
                fingerprints=fingerprints,
                meta=meta,
            )
            self.artifact.validate()
            self.staging.fs.write_bytes(self.staging.desc_rel(self.name), _descriptor_bytes(self.artifact))


def _descriptor_bytes(art: Artifact) -> bytes:
    return json.dumps(art.to_dict(), sort_keys=True, indent=2).encode()


def staging_owners(fs: StoreFS, rel: str) -> list[dict[str, Any]]:
    """The writers that claimed the staging area at ``rel`` (``staging/<key>``)."""
    out = []
    for entry in fs.listdir(f"{rel}/owners"):
        if entry.endswith(".json") and not entry.startswith(".tmp-"):
            try:
                out.append(load_json(fs.read_bytes(f"{rel}/owners/{entry}"), source=f"{rel}/owners/{entry}"))
            except FormatError:
                continue
    return out


class Staging:
    """The staging area of one run, below ``staging/<key>/`` in the store."""

    def __init__(self, fs: StoreFS, key: str, *, cipher: Cipher | None = None) -> None:
        if not key or _KEY_UNSAFE.search(key) or key.startswith("."):
            raise StoreError(f"invalid staging key {key!r}", hint="build keys with staging_key(dag_id, run_id)")
        self.fs = fs
        self.key = key
        self.cipher = cipher
        self._data_key: DataKey | None = None
        self.rel = f"staging/{key}"
        fs.makedirs(f"{self.rel}/data")
        fs.makedirs(f"{self.rel}/desc")

    def data_key(self) -> DataKey:
        """The run's data key (core/envelope.py): made by the first writer, shared by every other one."""
        if self.cipher is None:
            raise CheckpointError(f"staging area {self.rel} has no master key to encrypt with")
        if self._data_key is None:
            from airflow_checkpoint_provider.core.envelope import staging_data_key

            self._data_key = staging_data_key(self.fs, self.rel, self.key, self.cipher)
        return self._data_key

    def data_rel(self, name: str) -> str:
        rel = f"{self.rel}/data/{name}"
        self.fs.makedirs(rel.rsplit("/", 1)[0])
        return rel

    def desc_rel(self, name: str) -> str:
        rel = f"{self.rel}/desc/{name}.json"
        self.fs.makedirs(rel.rsplit("/", 1)[0])
        return rel

    def artifact(self, name: str, **kwargs: Any) -> ArtifactSink:
        """Open a sink for a new artifact; see :class:`ArtifactSink` for the arguments."""
        return ArtifactSink(self, name, **kwargs)

    def artifacts(self) -> list[Artifact]:
        """Every committed artifact (one with a descriptor), sorted by name."""
        out: list[Artifact] = []
        for rel in self._walk(f"{self.rel}/desc"):
            if not rel.endswith(".json") or "/.tmp-" in rel or rel.rsplit("/", 1)[-1].startswith(".tmp-"):
                continue
            art = Artifact.from_dict(load_json(self.fs.read_bytes(rel), source=rel))
            out.append(art)
        return sorted(out, key=lambda a: a.name)

    @contextmanager
    def open_data(self, name: str) -> Iterator[BinaryIO]:
        with self.fs.open_read(f"{self.rel}/data/{name}") as f:
            yield f

    def _walk(self, rel: str) -> Iterator[str]:
        for entry in self.fs.listdir(rel):
            sub = f"{rel}/{entry}"
            if self.fs.is_dir(sub):
                yield from self._walk(sub)
            else:
                yield sub

    def claim(self, owner: dict[str, Any]) -> None:
        """Record a writer of this area (dag/run/task ids, host, pid), so that ``cleanup`` can tell
        the area of a run that died from one still being written."""
        name = staging_key(str(owner.get("task_id") or "writer"), str(owner.get("host")), str(owner.get("pid")))
        self.fs.makedirs(f"{self.rel}/owners")
        self.fs.write_bytes(
            f"{self.rel}/owners/{name}.json",
            json.dumps({**owner, "claimed_at": format_ts(utcnow())}, sort_keys=True).encode(),
        )

    def owners(self) -> list[dict[str, Any]]:
        return staging_owners(self.fs, self.rel)

    def discard(self) -> None:
        """Remove the staging area (after sealing, or after a failed run)."""
        self.fs.remove_tree(self.rel)
