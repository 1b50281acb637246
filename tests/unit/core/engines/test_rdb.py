"""The RDB parser on hand-built files: every type and opcode, encodings, and corruptions.

RDB bytes produced by a real Redis are covered in test_rdb_real.py.
"""

from __future__ import annotations

import io
import struct

import pytest

from airflow_checkpoint_provider.core.engines.redis.encoding import (
    RDB_VERSION_MAX,
    RdbError,
    crc64,
    decode_string,
    encode_length,
    encode_string,
    lzf_decompress,
    module_type_name,
    restore_payload,
    split_payload,
)
from airflow_checkpoint_provider.core.engines.redis.rdb import Aux, Entry, Function, ModuleAux, RdbParser, ResizeDb

S = encode_string
L = encode_length


def _module_id(name: str, version: int) -> int:
    charset = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    mid = 0
    for ch in name:
        mid = (mid << 6) | charset.index(ch)
    return (mid << 10) | version


def _lzf(compressed: bytes, plain_len: int) -> bytes:
    return b"\xc3" + L(len(compressed)) + L(plain_len) + compressed


# "abc" literal, then a back-reference copying 9 bytes from 3 back (overlapping): "abcabcabcabc"
LZF_ABC = bytes([0x02]) + b"abc" + bytes([0xE0, 0x00, 0x02])
MODULE_ID = _module_id("testmodul", 3)
BIG = bytes(range(256)) * 12_000  # 3 MB: spans many read chunks


def _stream_value(rdb_type: int) -> bytes:
    """A stream: 2 listpack nodes, metadata, one group with a PEL of 2 and one consumer."""
    out = L(2) + S(b"\x00" * 16) + S(b"lp-one" * 3) + S(b"\x01" * 16) + S(b"lp-two")
    out += L(7) + L(1700000000000) + L(3)  # length, last id
    if rdb_type >= 19:
        out += L(1700000000000) + L(0) + L(0) + L(0) + L(7)  # first id, max deleted id, entries added
    out += L(1) + S(b"group-a") + L(1700000000000) + L(1)  # one group, its last id
    if rdb_type >= 19:
        out += L(5)  # entries read
    out += L(2)
    for i in range(2):  # global PEL: 16-byte id, 8-byte delivery time, delivery count
        out += bytes([i]) * 16 + struct.pack("<q", 1700000000123) + L(1)
    out += L(1) + S(b"consumer-1") + struct.pack("<q", 1700000000999)  # one consumer, seen time
    if rdb_type >= 21:
        out += struct.pack("<q", 1700000001000)  # active time
    out += L(2) + b"\x00" * 16 + b"\x01" * 16  # consumer PEL: raw ids
    return out


# (db, key, rdb type, value bytes, expire_ms) in file order, after a SELECTDB per db
ENTRIES: list[tuple[int, bytes, int, bytes, int | None]] = [
    (0, b"str:raw", 0, S(b"hello world"), None),
    (0, b"str:int8", 0, b"\xc0\x7b", 1700000000000),
    (0, b"str:int16", 0, b"\xc1" + struct.pack("<h", -1234), None),
    (0, b"str:int32", 0, b"\xc2" + struct.pack("<i", 123456789), None),
    (0, b"str:lzf", 0, _lzf(LZF_ABC, 12), None),
    (0, b"str:14bit", 0, S(b"x" * 1000), None),
    (0, b"str:big", 0, L(len(BIG)) + BIG, None),
    (0, b"list:linked", 1, L(2) + S(b"a") + S(b"b"), None),
    (0, b"set:plain", 2, L(3) + S(b"m1") + b"\xc0\x05" + S(b"m3"), None),
    (0, b"zset:v1", 3, L(3) + S(b"a") + bytes([3]) + b"1.5" + S(b"b") + bytes([254]) + S(b"c") + bytes([253]), None),
    (0, b"hash:plain", 4, L(2) + S(b"f1") + S(b"v1") + S(b"f2") + b"\xc1\x10\x00", None),
    (0, b"zset:v2", 5, L(2) + S(b"m") + struct.pack("<d", 2.5) + b"\xc0\x01" + struct.pack("<d", -1.0), None),
    (
        0,
        b"module",
        7,
        L(MODULE_ID)
        + L(2)
        + L(42)
        + L(1)
        + L(7)
        + L(3)
        + b"\x00\x00\x80\x3f"
        + L(4)
        + struct.pack("<d", 1.5)
        + L(5)
        + S(b"payload")
        + L(0),
        None,
    ),
    (0, b"hash:zipmap", 9, S(b"\x02zipmap-bytes"), None),
    (0, b"list:ziplist", 10, S(b"ziplist-bytes"), None),
    (0, b"set:intset", 11, S(b"\x02\x00\x00\x00\x02\x00\x00\x00\x01\x00\x02\x00"), None),
    (0, b"zset:ziplist", 12, S(b"zl"), None),
    (0, b"hash:ziplist", 13, S(b"zl"), None),
    (0, b"list:quicklist", 14, L(2) + S(b"zl-1") + _lzf(LZF_ABC, 12), None),
]
ENTRIES_DB1: list[tuple[int, bytes, int, bytes, int | None]] = [
    (1, b"stream:1", 15, _stream_value(15), None),
    (1, b"hash:listpack", 16, S(b"lp"), 1700000005000),
    (1, b"zset:listpack", 17, S(b"lp"), None),
    (1, b"list:quicklist2", 18, L(2) + L(2) + S(b"packed") + L(1) + S(b"plain node"), None),
    (1, b"stream:2", 19, _stream_value(19), None),
    (1, b"set:listpack", 20, S(b"lp"), None),
    (1, b"stream:3", 21, _stream_value(21), None),
    (1, b"hash:ttl-rc", 22, L(2) + L(0) + S(b"f") + S(b"v") + L(1700000009000) + S(b"g") + S(b"w"), None),
    (1, b"hash:lp-ttl-rc", 23, S(b"lpex"), None),
    (1, b"hash:ttl", 24, struct.pack("<q", 1700000009000) + L(1) + L(5) + S(b"f") + S(b"v"), None),
    (1, b"hash:lp-ttl", 25, struct.pack("<q", 1700000009000) + S(b"lpex"), None),
    (1, b"\x00binary\xffkey", 0, S(b""), None),
]


def build_rdb(*, version: int = 12, checksum: bool = True, entries=None, extra: bytes = b"") -> bytes:
    body = b"REDIS%04d" % version
    body += bytes([0xFA]) + S(b"redis-ver") + S(b"7.4.0")
    body += bytes([0xFA]) + S(b"redis-bits") + b"\xc0\x40"
    body += bytes([0xF7]) + L(MODULE_ID) + L(2) + L(2) + L(2) + L(9) + L(5) + S(b"aux-data") + L(0)
    body += bytes([0xF5]) + S(b"#!lua name=lib1\nredis.register_function('f', function() return 1 end)")
    all_entries = ENTRIES + ENTRIES_DB1 if entries is None else entries
    current = None
    for db, key, rdb_type, value, expire in all_entries:
        if db != current:
            current = db
            n = sum(1 for e in all_entries if e[0] == db)
            body += bytes([0xFE]) + L(db) + bytes([0xFB]) + L(n) + L(sum(1 for e in all_entries if e[0] == db and e[4]))
            if db == 1:
                body += bytes([0xF4]) + L(12) + L(n) + L(1)  # SLOT_INFO (7.4 cluster mode)
        if expire is not None:
            body += bytes([0xFC]) + struct.pack("<q", expire)
        if key == b"str:raw":
            body += bytes([0xF8]) + L(300)  # IDLE
        if key == b"str:int16":
            body += bytes([0xF9, 17])  # FREQ
        body += bytes([rdb_type]) + S(key) + value
    body += extra + bytes([0xFF])
    return body + (crc64(body) if checksum else 0).to_bytes(8, "little")


class Chunked(io.RawIOBase):
    """Hands the bytes out in pieces of ``size`` (like a socket), to exercise buffer boundaries."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data, self._pos, self._size = data, 0, size

    def read(self, n: int = -1) -> bytes:
        piece = self._data[self._pos : self._pos + min(n, self._size)]
        self._pos += len(piece)
        return piece


ALL = ENTRIES + ENTRIES_DB1


def test_fingerprints_of_every_type_and_opcode():
    parser = RdbParser(io.BytesIO(build_rdb()))
    fp = parser.scan()
    assert fp == {
        "rdb_version": 12,
        "keys": {"0": len(ENTRIES), "1": len(ENTRIES_DB1)},
        "expires": {"0": 1, "1": 1},
        "types": {"hash": 8, "list": 4, "set": 3, "stream": 3, "string": 8, "testmodul": 1, "zset": 4},
        "functions": 1,
    }
    assert parser.aux == {"redis-ver": "7.4.0", "redis-bits": "64"}
    assert parser.checksum_verified and parser.stored_checksum == parser.computed_checksum
    assert parser.resize_hints == {0: (len(ENTRIES), 1), 1: (len(ENTRIES_DB1), 1)}


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000, 65536, 1 << 20])
def test_records_give_every_entry_with_exact_value_bytes(chunk):
    expected = ALL if chunk >= 64 else [e for e in ALL if e[1] != b"str:big"]  # 1-byte reads of 3 MB: slow
    data = build_rdb(entries=expected)
    records = list(RdbParser(Chunked(data, chunk), chunk_size=chunk).records())
    entries = [r for r in records if isinstance(r, Entry)]
    assert [(e.db, e.key, e.type, e.value, e.expire_ms) for e in entries] == expected
    for e in entries:  # the extent points at the value bytes in the file
        assert data[e.offset : e.offset + e.length] == e.value
    raw = next(e for e in entries if e.key == b"str:raw")
    assert (raw.idle, raw.freq) == (300, None)
    assert next(e for e in entries if e.key == b"str:int16").freq == 17
    assert [r for r in records if isinstance(r, Aux)] == [Aux(b"redis-ver", b"7.4.0"), Aux(b"redis-bits", b"64")]
    assert [type(r) for r in records if not isinstance(r, (Entry, Aux))] == [ModuleAux, Function, ResizeDb, ResizeDb]
    assert next(r for r in records if isinstance(r, ModuleAux)).module == "testmodul"
    assert next(r for r in records if isinstance(r, Function)).code.startswith(b"#!lua name=lib1")


def test_records_without_values_keep_extents_only():
    data = build_rdb()
    entries = [r for r in RdbParser(Chunked(data, 4096), chunk_size=4096).records(values=False) if isinstance(r, Entry)]
    big = next(e for e in entries if e.key == b"str:big")
    assert big.value is None and big.length == len(L(len(BIG))) + len(BIG)
    assert data[big.offset : big.offset + big.length].endswith(BIG[-100:])


def test_small_chunks_give_the_same_fingerprints():
    data = build_rdb(entries=[e for e in ALL if e[1] != b"str:big"])
    assert RdbParser(Chunked(data, 3), chunk_size=3).scan() == RdbParser(io.BytesIO(data)).scan()


def test_restore_payload_is_type_value_version_crc():
    entry = next(e for e in RdbParser(io.BytesIO(build_rdb())).records() if isinstance(e, Entry))
    payload = entry.restore_payload(10)
    assert payload[0] == 0 and payload[1:-10] == entry.value
    assert payload[-10:-8] == (10).to_bytes(2, "little")
    assert int.from_bytes(payload[-8:], "little") == crc64(payload[:-8])
    assert split_payload(payload) == (0, entry.value, 10)
    with pytest.raises(RdbError, match="CRC64"):
        split_payload(payload[:-1] + bytes([payload[-1] ^ 1]))


def test_string_encodings_decode():
    assert decode_string(b"\xc0\x7b") == b"123"
    assert decode_string(b"\xc0\xff") == b"-1"
    assert decode_string(b"\xc1" + struct.pack("<h", -1234)) == b"-1234"
    assert decode_string(b"\xc2" + struct.pack("<i", 123456789)) == b"123456789"
    assert decode_string(_lzf(LZF_ABC, 12)) == b"abcabcabcabc"
    assert decode_string(S(b"x" * 20000)) == b"x" * 20000
    assert decode_string(b"\x80" + (5).to_bytes(4, "big") + b"12345") == b"12345"


def test_lzf_rejects_bad_data():
    with pytest.raises(RdbError, match="expands to"):
        lzf_decompress(LZF_ABC, 13)
    with pytest.raises(RdbError, match="before the start"):
        lzf_decompress(bytes([0x20, 0x05]), 3)
    with pytest.raises(RdbError, match="literal runs past"):
        lzf_decompress(bytes([0x05]) + b"ab", 6)


def test_module_type_name_round_trips():
    assert module_type_name(MODULE_ID) == "testmodul"
    assert module_type_name(_module_id("ReJSON-RL", 3)) == "ReJSON-RL"


def test_checksum_zero_means_rdbchecksum_off():
    parser = RdbParser(io.BytesIO(build_rdb(checksum=False)))
    assert parser.scan()["keys"]["0"] == len(ENTRIES)
    assert parser.stored_checksum == 0 and not parser.checksum_verified


def test_corrupted_checksum_is_refused():
    data = bytearray(build_rdb())
    data[-3] ^= 0x40
    with pytest.raises(RdbError, match="CRC64 mismatch"):
        RdbParser(io.BytesIO(bytes(data))).scan()


def test_corrupted_value_byte_fails_the_crc():
    data = bytearray(build_rdb())
    i = bytes(data).index(b"hello world")
    data[i] ^= 0x01  # same length, different content: only the CRC can tell
    with pytest.raises(RdbError, match="CRC64 mismatch"):
        RdbParser(io.BytesIO(bytes(data))).scan()


def test_every_truncation_is_refused():
    data = build_rdb(entries=ENTRIES[:6] + ENTRIES_DB1[:4])
    for cut in range(0, len(data), 7):
        with pytest.raises(RdbError):
            RdbParser(Chunked(data[:cut], 50), chunk_size=50).scan()
    with pytest.raises(RdbError, match="checksum"):
        RdbParser(io.BytesIO(data[:-3])).scan()


def test_truncated_big_value_is_refused():
    data = build_rdb()
    i = data.index(BIG[:1000])
    with pytest.raises(RdbError, match="truncated"):
        RdbParser(io.BytesIO(data[: i + 100_000])).scan()


@pytest.mark.parametrize("version", [RDB_VERSION_MAX + 1, 99, 4])
def test_unknown_versions_are_refused_by_number(version):
    with pytest.raises(RdbError, match=f"RDB version {version} is not supported.*5 to {RDB_VERSION_MAX}"):
        RdbParser(io.BytesIO(build_rdb(version=version))).scan()


def test_accepted_versions():
    for version in (10, 11, 12):
        assert RdbParser(io.BytesIO(build_rdb(version=version))).scan()["rdb_version"] == version


def test_not_an_rdb():
    with pytest.raises(RdbError, match="not an RDB file"):
        RdbParser(io.BytesIO(b"PGDMP\x01\x0e\x00" + b"\x00" * 100)).scan()
    with pytest.raises(RdbError, match="not an RDB file"):
        RdbParser(io.BytesIO(b"")).scan()
    with pytest.raises(RdbError, match="four digits"):
        RdbParser(io.BytesIO(b"REDIS00x1" + b"\xff" + b"\x00" * 8)).scan()


def test_unknown_type_and_opcode_are_refused():
    with pytest.raises(RdbError, match="unknown value type 30"):
        RdbParser(io.BytesIO(build_rdb(entries=[(0, b"k", 30, S(b"v"), None)]))).scan()
    with pytest.raises(RdbError, match="pre-release format of Redis 7.0"):
        RdbParser(io.BytesIO(build_rdb(entries=[], extra=bytes([0xF6]) + S(b"x")))).scan()
    with pytest.raises(RdbError, match="module value in the pre-release format 6"):
        RdbParser(io.BytesIO(build_rdb(entries=[(0, b"k", 6, L(1), None)]))).scan()


def test_bytes_after_the_checksum_are_refused():
    with pytest.raises(RdbError, match="unexpected bytes after the RDB checksum"):
        RdbParser(io.BytesIO(build_rdb() + b"\x00")).scan()
    assert RdbParser(io.BytesIO(build_rdb() + b"junk"), strict_end=False).scan()["functions"] == 1


def test_a_parser_walks_once():
    parser = RdbParser(io.BytesIO(build_rdb()))
    parser.scan()
    with pytest.raises(RuntimeError):
        parser.scan()


def test_restore_payload_helper_matches_a_known_dump():
    # DUMP of SET k "hello" on Redis 7.0: type 0, "\x05hello", version 10, CRC64
    payload = restore_payload(0, b"\x05hello", 10)
    assert payload[:7] == b"\x00\x05hello" and payload[7:9] == b"\x0a\x00"
    assert split_payload(payload) == (0, b"\x05hello", 10)


class _RecordingConn:
    """A stand-in for a Redis connection (unit test of our own command building: no server):
    records what is sent and answers +OK to everything."""

    def __init__(self) -> None:
        self.sent = bytearray()

    def call(self, *args):  # TIME, at the start
        return [b"1700000000", b"0"]

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def read_some(self, n: int = 0) -> bytes:
        return b"+OK\r\n" * 1000


def _commands(data: bytes) -> list[list[bytes]]:
    out, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 1] == b"*"
        end = data.index(b"\r\n", pos)
        n, pos, args = int(data[pos + 1 : end]), end + 2, []
        for _ in range(n):
            end = data.index(b"\r\n", pos)
            size = int(data[pos + 1 : end])
            args.append(data[end + 2 : end + 2 + size])
            assert data[end + 2 + size : end + 4 + size] == b"\r\n"
            pos = end + 4 + size
        out.append(args)
    return out


@pytest.mark.parametrize("replace", [False, True])
def test_restore_commands_carry_exact_payloads_for_every_expiry_and_size(replace):
    """Every RESTORE the pipeline builds (short payloads with the table CRC, long ones with anycrc,
    13-digit and longer expiry times, none) is the command encode_command would write."""
    from airflow_checkpoint_provider.core.engines.redis._load import _Walk, restore_stream
    from airflow_checkpoint_provider.core.engines.redis.resp import encode_command

    entries = [
        (0, b"plain", 0, S(b"v" * 30), None),
        (0, b"ttl13", 0, S(b"w"), 1800000000000),
        (0, b"ttl14", 0, S(b"far"), 12345678901234),
        (0, b"long", 0, S(b"y" * 5000), 1800000000001),
        (0, b"lzf", 0, _lzf(LZF_ABC, 12), None),
        (0, b"int", 0, b"\xc0\x07", None),
        (0, b"hash", 13, S(b"zl"), 1800000000002),
    ]
    data = build_rdb(version=11, entries=entries)
    conn = _RecordingConn()
    walk = _Walk(io.BytesIO(data))
    version = walk.begin()
    stats = restore_stream(conn, walk.entries(), version, {0: 5}, replace=replace)  # type: ignore[arg-type]
    assert stats[0].restored == len(entries)
    got = _commands(bytes(conn.sent))
    rep = ["REPLACE"] if replace else []
    want = [["SELECT", 5]] + [
        ["RESTORE", key, 0, restore_payload(t, value, version), *rep]
        if expire is None
        else ["RESTORE", key, expire, restore_payload(t, value, version), "ABSTTL", *rep]
        for _, key, t, value, expire in entries
    ]
    assert got == [_commands(encode_command(*w))[0] for w in want]
