"""Read one artifact out of an archive, trusting nothing the manifest does not promise.

Two layers wrap a member's stream:

* :class:`CheckedReader` hashes the stored bytes; at their end size and sha256 must match.
* :class:`RawSizeReader` counts the decompressed bytes; more than the manifest's
  ``raw_size`` is an error naming the artifact, so a zstd bomb (kilobytes that inflate to
  gigabytes) costs at most ``raw_size`` bytes of reading and never more memory than the
  caller asked for. ``read()`` with no size reads in bounded chunks, never in one call.
"""

from __future__ import annotations

import hashlib
from typing import Any

from airflow_checkpoint_provider.core import progress
from airflow_checkpoint_provider.core.errors import IntegrityError
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE

_HINT = "the archive is damaged or forged; verify it and restore another checkpoint"


class CheckedReader:
    """Reads a member's stored bytes, hashing them; at the end size and sha256 must match."""

    def __init__(self, stream: Any, art: Artifact) -> None:
        self._stream = stream
        self._art = art
        self._sha = hashlib.sha256()
        self._n = 0
        self._checked = False
        self._progress = progress.track("restore", art.name, art.size)

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._stream.read(n)
        self._sha.update(data)
        self._n += len(data)
        if self._progress is not None:
            self._progress.advance(len(data))
        if not data or (self._n == self._art.size and n != 0):
            self._check()
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read what is left of the stored bytes, so that their checksum is checked."""
        while self.read(CHUNK_SIZE):
            pass

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        if self._progress is not None:
            self._progress.close()
        if self._n != self._art.size or self._sha.hexdigest() != self._art.sha256:
            raise IntegrityError(
                f"artifact {self._art.name}: read {self._n} bytes hashing to {self._sha.hexdigest()}, "
                f"manifest says {self._art.size} bytes, {self._art.sha256}",
                hint=_HINT,
            )


class RawSizeReader:
    """Decompressed bytes of an artifact, never more than its ``raw_size`` (nor fewer at the end)."""

    def __init__(self, stream: Any, art: Artifact, stored: CheckedReader | None = None) -> None:
        self._stream = stream
        self._art = art
        self._stored = stored
        self._limit = art.raw_size if art.raw_size is not None else art.size
        self.n = 0

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while piece := self._read(CHUNK_SIZE):
                parts.append(piece)
            return b"".join(parts)
        return self._read(n)

    def _read(self, n: int) -> bytes:
        if n == 0:
            return b""
        # ask for one byte more than may come, so that a longer stream is noticed right here
        data: bytes = self._stream.read(min(n, self._limit - self.n + 1))
        self.n += len(data)
        if self.n > self._limit:
            raise IntegrityError(
                f"artifact {self._art.name} decompresses to more than its raw_size of {self._limit} bytes",
                hint=_HINT,
            )
        if not data:
            if self.n < self._limit:
                raise IntegrityError(
                    f"artifact {self._art.name} decompresses to {self.n} bytes, its raw_size says {self._limit}",
                    hint=_HINT,
                )
            if self._stored is not None:
                self._stored.drain()
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True
