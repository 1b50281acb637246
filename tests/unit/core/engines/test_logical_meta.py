"""The META record of a logical Redis capture is read like any metadata: capped and depth-limited."""

from __future__ import annotations

import io
import struct

import pytest

from airflow_checkpoint_provider.core.engines.redis.encoding import RdbError
from airflow_checkpoint_provider.core.engines.redis.logical import MAGIC, read_logical


def _capture(meta: bytes, *, length: int | None = None) -> io.BytesIO:
    body = MAGIC + struct.pack(">H", 1) + b"M" + struct.pack(">I", len(meta) if length is None else length) + meta
    return io.BytesIO(body + b"E" + struct.pack(">Q", 0))


def test_meta_of_deeply_nested_arrays_is_refused_as_a_bad_capture():
    with pytest.raises(RdbError, match="nested"):
        next(read_logical(_capture(b"[" * 100_000 + b"]" * 100_000)))


def test_meta_claiming_4_gib_is_refused_before_it_is_read():
    with pytest.raises(RdbError, match="META is 4294967295 bytes"):
        next(read_logical(_capture(b"{}", length=2**32 - 1)))
