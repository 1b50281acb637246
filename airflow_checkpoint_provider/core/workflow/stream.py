"""Large payloads streamed: compressed while they are written, checked while they are read.

The compressed payload of a state of at least :data:`STREAM_THRESHOLD` raw bytes is never
held in memory. Saving compresses the raw bytes (a ``bytes`` state itself, or a JSON state's
text) chunk by chunk, on every core, straight into the store's temporary file, hashing what
is written, so its size and sha256 are known once the last chunk is out (the file store then
writes the header into the room it left at the start of the file). Loading reads the file
chunk by chunk, hashing and decompressing into the one buffer that becomes the state (or the
JSON text it is parsed from). For a ``bytes`` state, what this adds to the state's own memory
is some MiB of buffers whatever its size (``bench/workflow.py`` measures it). The PostgreSQL
store sends a payload as one bytea parameter, so it holds the compressed payload once.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

import zstandard

from airflow_checkpoint_provider.core.workflow.codec import DAMAGED_HINT, check_payload
from airflow_checkpoint_provider.core.workflow.errors import StateDamagedError

#: raw payloads at least this large are compressed while written, and read back in chunks
STREAM_THRESHOLD = 8 * 1024 * 1024
CHUNK = 1024 * 1024


class StreamedPayload:
    """The zstd payload of a large raw value, produced while it is written."""

    compression = "zstd"

    def __init__(self, raw: bytes | bytearray | memoryview, *, level: int) -> None:
        self._raw = memoryview(raw).cast("B")
        self._level = level
        self.raw_size = self._raw.nbytes

    def write_to(self, write: Callable[[bytes], Any]) -> tuple[int, str]:
        """Compress the value through ``write``; returns the payload's size and sha256."""
        sink = _Sink(write)
        cctx = zstandard.ZstdCompressor(level=self._level, threads=-1, write_checksum=True)
        with cctx.stream_writer(cast(IO[bytes], sink), size=self.raw_size, write_size=CHUNK, closefd=False) as out:
            for start in range(0, self.raw_size, 4 * CHUNK):
                out.write(self._raw[start : start + 4 * CHUNK])
        return sink.size, sink.digest.hexdigest()

    def materialize(self) -> tuple[bytes, int, str]:
        """The whole payload in memory (for a store that sends it in one piece), its size and sha256."""
        buf = io.BytesIO()
        size, sha256 = self.write_to(buf.write)
        return buf.getvalue(), size, sha256


class _Sink:
    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write, self.digest, self.size = write, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self._write(data)
        return len(data)

    def flush(self) -> None:
        pass


@dataclass(frozen=True)
class PayloadFile:
    """A payload left in its file (at ``offset``), read and checked when the state is wanted."""

    opener: Callable[[], BinaryIO]
    offset: int

    def read(self, *, size: int, sha256: str, compression: str, raw_size: int, source: str) -> bytes:
        """The raw bytes, after checking the payload's length and sha256 (:class:`StateDamagedError`)."""
        with self.opener() as f:
            f.seek(self.offset)
            reader = _Hashing(f)
            out = _Bounded(raw_size)
            problem = None
            try:
                if compression == "zstd":
                    zstandard.ZstdDecompressor().copy_stream(
                        cast(IO[bytes], reader), out, read_size=CHUNK, write_size=CHUNK
                    )
                else:
                    while chunk := reader.read(CHUNK):
                        out.write(chunk)
            except (zstandard.ZstdError, _TooLong) as exc:
                problem = str(exc)
            while reader.read(CHUNK):  # the rest of the file counts too (a longer file is damaged)
                pass
        check_payload(reader.size, reader.digest.hexdigest(), size=size, sha256=sha256, source=source)
        if problem is not None:
            raise StateDamagedError(f"{source}: the payload does not decompress ({problem})", hint=DAMAGED_HINT)
        raw = out.getvalue()  # BytesIO hands over its buffer: no copy
        if len(raw) != raw_size:
            raise StateDamagedError(
                f"{source}: the payload is {len(raw)} bytes decompressed, the header says {raw_size}", hint=DAMAGED_HINT
            )
        return raw


class _Hashing:
    def __init__(self, f: BinaryIO) -> None:
        self._f, self.digest, self.size = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n if n > 0 else CHUNK)
        self.digest.update(data)
        self.size += len(data)
        return data


class _TooLong(Exception):
    pass


class _Bounded(io.BytesIO):
    """A BytesIO that refuses to grow past ``limit`` (a forged frame cannot fill the memory)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self._limit:
            raise _TooLong(f"it decompresses to more than the {self._limit} bytes the header says")
        return super().write(data)
