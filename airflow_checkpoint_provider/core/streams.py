"""Small streaming helpers: hash and count bytes in the same pass that moves them.

Nothing here holds a whole artifact in memory: every loop moves at most
``CHUNK_SIZE`` bytes at a time, so memory stays flat whatever the data size.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO, Protocol

import zstandard

CHUNK_SIZE = 1024 * 1024
DEFAULT_ZSTD_LEVEL = 3


class Writable(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int | None: ...


class HashingWriter:
    """File-like sink that forwards bytes to ``target`` while hashing and counting them."""

    def __init__(self, target: Writable) -> None:
        self._target = target
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._target.write(data)
        self._sha.update(data)
        n = len(data)
        self.size += n
        return n

    def flush(self) -> None:
        flush = getattr(self._target, "flush", None)
        if flush:
            flush()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class CountingWriter:
    """Counts bytes on their way to ``target`` (raw size before compression)."""

    def __init__(self, target: Writable) -> None:
        self._target = target
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._target.write(data)
        self.size += len(data)
        return len(data)


def zstd_compressor(level: int = DEFAULT_ZSTD_LEVEL, threads: int = -1) -> zstandard.ZstdCompressor:
    """zstd with content checksums; ``threads=-1`` uses every core, as ``zstd -T0`` does."""
    return zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)


def zstd_decompressor() -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor()


def copy_exact(src: BinaryIO, dst: Writable, size: int, *, chunk: int = CHUNK_SIZE) -> tuple[int, str]:
    """Copy exactly ``size`` bytes; return (bytes copied, sha256). Stops early at EOF."""
    sha = hashlib.sha256()
    left = size
    buf = bytearray(min(chunk, max(size, 1)))
    view = memoryview(buf)
    while left > 0:
        n = src.readinto(view[: min(len(buf), left)])  # type: ignore[attr-defined]
        if not n:
            break
        piece = view[:n]
        sha.update(piece)
        dst.write(piece)
        left -= n
    return size - left, sha.hexdigest()
