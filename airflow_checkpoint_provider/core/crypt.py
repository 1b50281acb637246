"""Encryption at rest: AES-256-GCM over a stream, in authenticated chunks, in constant memory.

The cipher is ``cryptography``'s AESGCM; nothing here is home-made cryptography, only the
framing around it. An encrypted stream is::

    header   b"ACKPTENC" | version (1 byte) | chunk size (4 bytes, big endian) | stream id (16 random bytes)
    chunk*   nonce (12 random bytes) | ciphertext length (4 bytes) | ciphertext (plaintext + 16-byte tag)

Each chunk holds at most ``chunk size`` (1 MiB) bytes of plaintext and is sealed with the
associated data ``header | context | chunk index (8 bytes) | final flag (1 byte)``. So:

* a flipped byte anywhere fails that chunk's tag;
* chunks cannot be reordered or dropped (the index is authenticated);
* the stream cannot be truncated (the last chunk, and only it, carries the final flag, and
  nothing may follow it);
* a chunk or a whole stream cannot be moved to another artifact (``context``: the artifact's
  name, and the stream id of the header, are authenticated).

The key is 32 bytes; its id (the first 16 hex digits of the sha256 of the key) is what a
manifest records, never the key.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from airflow_checkpoint_provider.core.errors import CheckpointError, IntegrityError

ALGORITHM = "AES-256-GCM-chunked-v1"
MAGIC = b"ACKPTENC"
VERSION = 1
CHUNK = 1024 * 1024
_HEADER = struct.Struct(">8sBI16s")
_FRAME = struct.Struct(">12sI")
TAG = 16


def key_id(key: bytes) -> str:
    """The public name of a key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(b"airflow-checkpoint key id\0" + key).hexdigest()[:16]


def load_key(path: str | os.PathLike[str]) -> bytes:
    """A 32-byte key from a file: 64 hex digits (whitespace ignored) or 32 raw bytes."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        mode = p.stat().st_mode
    except OSError as exc:
        raise CheckpointError(
            f"cannot read the encryption key file {p}: {exc.strerror or exc}",
            hint="point the key setting at a readable file of 64 hex digits (e.g. `openssl rand -hex 32`)",
        ) from None
    if mode & 0o077:
        raise CheckpointError(
            f"the encryption key file {p} is readable by other users (mode {mode & 0o777:o})",
            hint=f"chmod 600 {p}",
        )
    text = b"".join(raw.split())
    try:
        key = bytes.fromhex(text.decode()) if len(text) == 64 else raw
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) != 32:
        raise CheckpointError(
            f"the encryption key file {p} holds {len(raw)} bytes, not a 256-bit key",
            hint="write 64 hex digits into it (e.g. `openssl rand -hex 32 > key`)",
        )
    return key


class EncryptingWriter:
    """Encrypt everything written into ``out``; :meth:`close` writes the final chunk (call it once)."""

    def __init__(self, out: BinaryIO, key: bytes, context: str, *, chunk: int = CHUNK) -> None:
        self._out, self._aead, self._chunk = out, AESGCM(key), chunk
        self._header = _HEADER.pack(MAGIC, VERSION, chunk, os.urandom(16))
        self._aad = self._header + context.encode() + b"\0"
        self._buf = bytearray()
        self._index = 0
        self.closed = False
        out.write(self._header)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buf += data
        while len(self._buf) > self._chunk:  # keep the last chunk for close(): it carries the final flag
            self._seal(bytes(self._buf[: self._chunk]), final=False)
            del self._buf[: self._chunk]
        return len(data)

    def _seal(self, plain: bytes, *, final: bool) -> None:
        nonce = os.urandom(12)
        aad = self._aad + struct.pack(">QB", self._index, final)
        sealed = self._aead.encrypt(nonce, plain, aad)
        self._out.write(_FRAME.pack(nonce, len(sealed)) + sealed)
        self._index += 1

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._buf), final=True)
            self._buf.clear()
            self.closed = True


class DecryptingReader:
    """Read the plaintext of a stream :class:`EncryptingWriter` wrote; every problem is an :class:`IntegrityError`."""

    def __init__(self, src: BinaryIO, key: bytes, context: str, *, source: str = "stream") -> None:
        self._src, self._aead, self._source, self._context = src, AESGCM(key), source, context
        header = self._exact(_HEADER.size, "header")
        magic, version, self._chunk, _ = _HEADER.unpack(header)
        if magic != MAGIC or version != VERSION:
            raise IntegrityError(
                f"{source} is not an encrypted stream this reader knows (magic {magic!r}, version {version})",
                hint="the artifact is damaged, or was not encrypted; verify the checkpoint",
            )
        self._aad = header + context.encode() + b"\0"
        self._index, self._done = 0, False
        self._plain = b""
        self._key_id = key_id(key)

    def _exact(self, n: int, what: str) -> bytes:
        data = self._src.read(n)
        if len(data) != n:
            raise IntegrityError(
                f"{self._source} ends inside its {what} (got {len(data)} of {n} bytes): the stream was truncated",
                hint="the encrypted artifact is incomplete; restore another checkpoint",
            )
        return data

    def _next(self) -> None:
        head = self._src.read(_FRAME.size)
        if not head:
            raise IntegrityError(
                f"{self._source} ends after chunk {self._index - 1} without its final chunk: the stream was truncated",
                hint="the encrypted artifact is incomplete; restore another checkpoint",
            )
        if len(head) != _FRAME.size:
            self._exact(_FRAME.size - len(head), f"chunk {self._index} frame")
        nonce, length = _FRAME.unpack(head)
        if length > self._chunk + TAG:
            raise IntegrityError(
                f"chunk {self._index} of {self._source} claims {length} bytes, more than a chunk may hold",
                hint="the encrypted artifact is damaged; restore another checkpoint",
            )
        sealed = self._exact(length, f"chunk {self._index}")
        for final in (False, True):
            try:
                self._plain = self._aead.decrypt(nonce, sealed, self._aad + struct.pack(">QB", self._index, final))
            except InvalidTag:
                continue
            self._done = final
            self._index += 1
            if final and self._src.read(1):
                raise IntegrityError(
                    f"{self._source} has data after its final chunk {self._index - 1}",
                    hint="the encrypted artifact was tampered with; restore another checkpoint",
                )
            return
        raise IntegrityError(
            f"chunk {self._index} of {self._source} does not authenticate with key {self._key_id}: wrong key, or the "
            "chunk was changed, moved or reordered",
            hint=f"check that the master key is the one with id {self._key_id}; otherwise the artifact is damaged",
        )

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while n < 0 or len(out) < n:
            if not self._plain:
                if self._done:
                    break
                self._next()
                continue
            take = len(self._plain) if n < 0 else min(n - len(out), len(self._plain))
            out += self._plain[:take]
            self._plain = self._plain[take:]
        return bytes(out)


@dataclass(frozen=True)
class Cipher:
    """The key a store encrypts new artifacts with (and decrypts them with); ``repr`` hides it."""

    key: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def meta(self) -> dict[str, Any]:
        """What an artifact's ``meta["encryption"]`` records: the algorithm and the key id, never the key."""
        return {"algorithm": ALGORITHM, "key_id": self.key_id, "chunk_size": CHUNK}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Cipher:
        return cls(load_key(path))

    def reader(self, src: BinaryIO, art_name: str, meta: dict[str, Any], *, source: str) -> DecryptingReader:
        """Decrypt the stored bytes of artifact ``art_name``, refusing another key or algorithm by name."""
        if meta.get("algorithm") != ALGORITHM:
            raise IntegrityError(
                f"artifact {art_name} of {source} is encrypted with {meta.get('algorithm')!r}, which this reader "
                f"does not know (it knows {ALGORITHM})",
                hint="upgrade airflow-checkpoint-provider",
            )
        if meta.get("key_id") != self.key_id:
            raise IntegrityError(
                f"artifact {art_name} of {source} is encrypted with key id {meta.get('key_id')}, not with the "
                f"configured key {self.key_id}",
                hint=f"set [checkpoint] encryption_key_file to the key whose id is {meta.get('key_id')}",
            )
        return DecryptingReader(src, self.key, art_name, source=f"{source}:{art_name}")
