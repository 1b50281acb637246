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

Keys are 32 bytes; a key's id (the first 16 hex digits of a sha256 of the key) is what a
manifest records, never the key. Artifacts are encrypted with a random *data key* per
checkpoint; the *master key* (:class:`Cipher`) only wraps data keys (:meth:`Cipher.wrap`,
AES-256-GCM with the scope, e.g. ``checkpoint:<id>``, and the data key's id as associated
data). core/envelope.py keeps the wrapped keys beside the archives.
"""

from __future__ import annotations

import base64
import hashlib
import json
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
    return parse_key(raw, f"the encryption key file {p}")


def parse_key(raw: bytes, source: str, *, hex_only: bool = False) -> bytes:
    """A 32-byte key from 64 hex digits (whitespace ignored) or, unless ``hex_only``, 32 raw bytes;
    ``source`` names where it came from in the error (never the value)."""
    text = b"".join(raw.split())
    try:
        key = bytes.fromhex(text.decode()) if len(text) == 64 else raw
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) != 32 or (hex_only and key is raw):
        raise CheckpointError(
            f"{source} holds {len(raw)} bytes, not a 256-bit key (64 hex digits{'' if hex_only else ' or 32 raw bytes'})",
            hint="give it 64 hex digits (e.g. the output of `openssl rand -hex 32`)",
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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise IntegrityError(
            f"{what} is not base64", hint="the key record is damaged; restore it from a copy"
        ) from None


def _wrap_aad(scope: str, data_key_id: str) -> bytes:
    return b"airflow-checkpoint data key\0" + scope.encode() + b"\0" + data_key_id.encode()


def _check_algorithm(meta: dict[str, Any], art_name: str, source: str) -> None:
    if meta.get("algorithm") != ALGORITHM:
        raise IntegrityError(
            f"artifact {art_name} of {source} is encrypted with {meta.get('algorithm')!r}, which this reader "
            f"does not know (it knows {ALGORITHM})",
            hint="upgrade airflow-checkpoint-provider",
        )


@dataclass(frozen=True)
class DataKey:
    """The random key one checkpoint's artifacts (and fingerprints) are encrypted with; ``repr`` hides it."""

    key: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> DataKey:
        return cls(AESGCM.generate_key(bit_length=256))

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def meta(self, master_key_id: str) -> dict[str, Any]:
        """What an artifact's ``meta["encryption"]`` records: algorithm, chunk size and the key ids, never a key."""
        return {
            "algorithm": ALGORITHM,
            "chunk_size": CHUNK,
            "data_key_id": self.key_id,
            "master_key_id": master_key_id,
        }

    def writer(self, out: BinaryIO, art_name: str) -> EncryptingWriter:
        return EncryptingWriter(out, self.key, art_name)

    def reader(self, src: BinaryIO, art_name: str, meta: dict[str, Any], *, source: str) -> DecryptingReader:
        """Decrypt the stored bytes of artifact ``art_name``, refusing another data key or algorithm by name."""
        return _reader(self.key, src, art_name, meta, source, "data_key_id", _WRONG_DATA_KEY)

    def seal_json(self, context: str, value: Any) -> str:
        """``value`` as JSON, encrypted and bound to ``context``: base64 of nonce | ciphertext."""
        nonce = os.urandom(12)
        plain = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        return _b64(nonce + AESGCM(self.key).encrypt(nonce, plain, b"airflow-checkpoint sealed\0" + context.encode()))

    def open_json(self, context: str, sealed: Any, *, source: str) -> Any:
        blob = _unb64(sealed, f"the sealed value of {source}")
        try:
            plain = AESGCM(self.key).decrypt(blob[:12], blob[12:], b"airflow-checkpoint sealed\0" + context.encode())
        except (InvalidTag, ValueError):
            raise IntegrityError(
                f"the sealed value of {source} does not authenticate with data key {self.key_id}",
                hint="the manifest or the key record was changed; verify the checkpoint",
            ) from None
        return json.loads(plain)


@dataclass(frozen=True)
class Cipher:
    """The master key: it wraps each checkpoint's data key (and decrypts artifacts of the older
    direct scheme, encrypted with it); ``repr`` hides it."""

    key: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def meta(self) -> dict[str, Any]:
        """``meta["encryption"]`` of the direct scheme (artifacts encrypted with the master key itself)."""
        return {"algorithm": ALGORITHM, "key_id": self.key_id, "chunk_size": CHUNK}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Cipher:
        return cls(load_key(path))

    def wrap(self, data_key: DataKey, scope: str) -> dict[str, str]:
        """The wrapped form of ``data_key`` for ``scope`` (``staging:<key>`` or ``checkpoint:<id>``)."""
        nonce = os.urandom(12)
        sealed = AESGCM(self.key).encrypt(nonce, data_key.key, _wrap_aad(scope, data_key.key_id))
        return {
            "master_key_id": self.key_id,
            "data_key_id": data_key.key_id,
            "nonce": _b64(nonce),
            "wrapped_key": _b64(sealed),
        }

    def unwrap(self, record: dict[str, Any], scope: str, *, source: str) -> DataKey:
        """The data key of a record :meth:`wrap` made; a record wrapped by another master key is refused
        naming the key id it needs."""
        wanted = record.get("master_key_id")
        if wanted != self.key_id:
            raise IntegrityError(
                f"{source} is wrapped by master key {wanted}, not by the configured key {self.key_id}",
                hint=f"configure the master key whose id is {wanted} (encryption_key_file, encryption_key_variable "
                "or encryption_key_conn_id of [checkpoint]), or rekey the store to the configured key",
            )
        nonce = _unb64(record.get("nonce"), f"the nonce of {source}")
        sealed = _unb64(record.get("wrapped_key"), f"the wrapped key of {source}")
        try:
            key = AESGCM(self.key).decrypt(nonce, sealed, _wrap_aad(scope, str(record.get("data_key_id"))))
        except (InvalidTag, ValueError):
            raise IntegrityError(
                f"{source} does not unwrap with master key {self.key_id}: it was changed, or moved from "
                "another checkpoint",
                hint="restore the key record from a copy; the archive alone cannot be decrypted",
            ) from None
        data_key = DataKey(key)
        if data_key.key_id != record.get("data_key_id"):
            raise IntegrityError(f"{source} holds a data key whose id is not {record.get('data_key_id')}")
        return data_key

    def reader(self, src: BinaryIO, art_name: str, meta: dict[str, Any], *, source: str) -> DecryptingReader:
        """Decrypt an artifact of the direct scheme (encrypted with this key), refusing another key by name."""
        return _reader(self.key, src, art_name, meta, source, "key_id", _WRONG_MASTER_KEY)


#: (message, hint) of an artifact read with another key than its own: data key, master key (direct scheme)
_WRONG_DATA_KEY = (
    "artifact {art} of {source} is encrypted with data key {wanted}, but the checkpoint's key record holds data "
    "key {have}",
    "the key record was replaced by another checkpoint's; restore it from a copy",
)
_WRONG_MASTER_KEY = (
    "artifact {art} of {source} is encrypted with key id {wanted}, not with the configured key {have}",
    "configure the master key whose id is {wanted} ([checkpoint] encryption_key_file)",
)


def _reader(
    key: bytes, src: BinaryIO, art_name: str, meta: dict[str, Any], source: str, id_field: str, wrong: tuple[str, str]
) -> DecryptingReader:
    """Decrypt artifact ``art_name`` with ``key``, after refusing an unknown algorithm, or a key whose id is
    not the artifact's ``meta[id_field]`` (``wrong``: the message and hint that name the key it wants)."""
    _check_algorithm(meta, art_name, source)
    names = {"art": art_name, "source": source, "wanted": meta.get(id_field), "have": key_id(key)}
    if names["wanted"] != names["have"]:
        raise IntegrityError(wrong[0].format(**names), hint=wrong[1].format(**names))
    return DecryptingReader(src, key, art_name, source=f"{source}:{art_name}")
