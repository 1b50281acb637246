"""The chunked AES-256-GCM stream (core/crypt.py): round trips, and every kind of tampering is refused by name."""

from __future__ import annotations

import io
import os
import struct

import pytest

from airflow_checkpoint_provider.core.crypt import (
    _FRAME,
    _HEADER,
    DecryptingReader,
    EncryptingWriter,
    key_id,
    load_key,
)
from airflow_checkpoint_provider.core.errors import CheckpointError, IntegrityError

KEY = bytes(range(32))
CHUNK = 1024


def _encrypt(plain: bytes, key: bytes = KEY, context: str = "postgres/app.dump") -> bytes:
    out = io.BytesIO()
    w = EncryptingWriter(out, key, context, chunk=CHUNK)
    for i in range(0, len(plain), 300):
        w.write(plain[i : i + 300])
    w.close()
    return out.getvalue()


def _decrypt(blob: bytes, key: bytes = KEY, context: str = "postgres/app.dump") -> bytes:
    return DecryptingReader(io.BytesIO(blob), key, context, source="art").read()


def _frames(blob: bytes) -> tuple[bytes, list[bytes]]:
    header, rest, frames = blob[: _HEADER.size], blob[_HEADER.size :], []
    while rest:
        _, length = _FRAME.unpack(rest[: _FRAME.size])
        frames.append(rest[: _FRAME.size + length])
        rest = rest[_FRAME.size + length :]
    return header, frames


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 17])
def test_round_trip_of_every_length_gives_the_plaintext_back(size):
    plain = os.urandom(size)
    blob = _encrypt(plain)
    assert _decrypt(blob) == plain
    if size >= 16:  # a shorter plaintext may occur in random ciphertext by chance
        assert plain[:64] not in blob


def test_reordered_chunks_are_refused():
    header, frames = _frames(_encrypt(os.urandom(4 * CHUNK)))
    frames[0], frames[1] = frames[1], frames[0]
    with pytest.raises(IntegrityError, match="chunk 0 of art does not authenticate"):
        _decrypt(header + b"".join(frames))


def test_a_dropped_middle_chunk_is_refused():
    header, frames = _frames(_encrypt(os.urandom(4 * CHUNK)))
    del frames[1]
    with pytest.raises(IntegrityError, match="chunk 1 of art does not authenticate"):
        _decrypt(header + b"".join(frames))


def test_a_stream_truncated_at_a_chunk_boundary_is_refused():
    header, frames = _frames(_encrypt(os.urandom(4 * CHUNK)))
    with pytest.raises(IntegrityError, match="without its final chunk: the stream was truncated"):
        _decrypt(header + b"".join(frames[:-1]))


def test_a_stream_truncated_inside_a_chunk_is_refused():
    blob = _encrypt(os.urandom(3 * CHUNK))
    with pytest.raises(IntegrityError, match="truncated"):
        _decrypt(blob[:-5])


def test_data_after_the_final_chunk_is_refused():
    header, frames = _frames(_encrypt(os.urandom(2 * CHUNK)))
    with pytest.raises(IntegrityError, match="data after its final chunk"):
        _decrypt(header + b"".join(frames) + frames[0])


def test_a_flipped_ciphertext_byte_is_refused():
    blob = bytearray(_encrypt(os.urandom(3 * CHUNK)))
    blob[_HEADER.size + _FRAME.size + 10] ^= 1
    with pytest.raises(IntegrityError, match="chunk 0"):
        _decrypt(bytes(blob))


def test_a_chunk_moved_into_another_artifact_is_refused():
    blob = _encrypt(os.urandom(CHUNK), context="redis/dump.rdb")
    with pytest.raises(IntegrityError, match="does not authenticate"):
        _decrypt(blob, context="postgres/app.dump")


def test_a_wrong_key_names_the_key_id_it_tried():
    blob = _encrypt(os.urandom(10))
    other = os.urandom(32)
    with pytest.raises(IntegrityError, match=key_id(other)):
        _decrypt(blob, key=other)


def test_key_file_of_hex_digits_loads_and_a_readable_one_is_refused(tmp_path):
    p = tmp_path / "master.key"
    p.write_text(KEY.hex() + "\n")
    os.chmod(p, 0o600)
    assert load_key(p) == KEY
    os.chmod(p, 0o644)
    with pytest.raises(CheckpointError, match="readable by other users"):
        load_key(p)
    p.write_text("abc")
    os.chmod(p, 0o600)
    with pytest.raises(CheckpointError, match="not a 256-bit key"):
        load_key(p)


def test_header_version_unknown_is_refused():
    blob = bytearray(_encrypt(b"x"))
    blob[8] = 9
    with pytest.raises(IntegrityError, match="version 9"):
        _decrypt(bytes(blob))
    assert struct.calcsize(">8sBI16s") == _HEADER.size
