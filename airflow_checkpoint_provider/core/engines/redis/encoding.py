"""RDB building blocks: opcodes, value types, string encodings, CRC64 and RESTORE payloads.

Everything here is a plain function over bytes; :mod:`.rdb` walks whole files with it.
References are Redis's ``rdb.h``/``rdb.c`` (RDB versions 1 to 12, i.e. up to Redis 7.4/8.x).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anycrc

#: Highest RDB version the parser understands (Redis 7.0 writes 10, 7.2 writes 11, 7.4 writes 12).
RDB_VERSION_MAX = 12
#: Lowest one: version 5 (Redis 2.6) introduced the trailing CRC64.
RDB_VERSION_MIN = 5

# Opcodes (rdb.h RDB_OPCODE_*): every byte >= 0xF4 at an entry boundary.
OP_SLOT_INFO = 0xF4  # 7.4: slot id, slot size, expires slot size (cluster mode)
OP_FUNCTION2 = 0xF5  # a function library (its source code)
OP_FUNCTION_PRE_GA = 0xF6  # 7.0 release candidates only; Redis itself refuses it
OP_MODULE_AUX = 0xF7
OP_IDLE = 0xF8  # LRU idle seconds of the next key
OP_FREQ = 0xF9  # LFU counter of the next key
OP_AUX = 0xFA
OP_RESIZEDB = 0xFB
OP_EXPIRETIME_MS = 0xFC
OP_EXPIRETIME = 0xFD
OP_SELECTDB = 0xFE
OP_EOF = 0xFF
FIRST_OPCODE = OP_SLOT_INFO

# Value types (rdb.h RDB_TYPE_*) -> the name Redis's TYPE command reports.
TYPE_NAMES: dict[int, str] = {
    0: "string",
    1: "list",  # linked list (RDB < 7.0 era)
    2: "set",
    3: "zset",  # scores as decimal strings
    4: "hash",
    5: "zset",  # ZSET_2: binary double scores
    7: "module",  # MODULE_2 (the name comes from the module id, see module_type_name)
    9: "hash",  # zipmap
    10: "list",  # ziplist
    11: "set",  # intset
    12: "zset",  # ziplist
    13: "hash",  # ziplist
    14: "list",  # quicklist of ziplists
    15: "stream",  # listpacks
    16: "hash",  # listpack
    17: "zset",  # listpack
    18: "list",  # quicklist 2 (listpacks, plain nodes)
    19: "stream",  # listpacks 2 (7.0)
    20: "set",  # listpack (7.2)
    21: "stream",  # listpacks 3 (7.2)
    22: "hash",  # hash with field TTLs, 7.4 RC
    23: "hash",  # listpack with field TTLs, 7.4 RC
    24: "hash",  # hash with field TTLs (7.4)
    25: "hash",  # listpack with field TTLs (7.4)
}
TYPE_MODULE_PRE_GA = 6
TYPE_MODULE_2 = 7

# Module value opcodes (RDB_MODULE_OPCODE_*), used by MODULE_2 values and MODULE_AUX.
MODULE_OP_EOF, MODULE_OP_SINT, MODULE_OP_UINT, MODULE_OP_FLOAT, MODULE_OP_DOUBLE, MODULE_OP_STRING = range(6)

# String encodings (the low 6 bits of a length byte whose top two bits are 11).
ENC_INT8, ENC_INT16, ENC_INT32, ENC_LZF = range(4)

_CRC64 = anycrc.Model("CRC64-REDIS")
_MODULE_CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class RdbError(ValueError):
    """The bytes are not a valid RDB (or a valid piece of one). ``offset`` is where, if known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(f"{message} (at byte {offset})" if offset is not None else message)


def crc64(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Redis's CRC64 (Jones polynomial, reflected); ``crc`` continues an earlier result."""
    return _CRC64.calc(data, init=crc) if len(data) else crc


#: CRC64 check value of b"123456789" for the Jones polynomial with init 0 and no final xor (Redis's)
_CHECK = 0xE9C6D914C4B8D9CA


def short_crc64() -> tuple[Callable[[bytes, int, Any], int], Any]:
    """``(fn, table)`` for the CRC64 of short inputs, called as ``fn(data, 0, table)``.

    anycrc is fast on big buffers (CLMUL), but a call costs 0.5-1 µs whatever the size, which is
    most of the work of a ``RESTORE`` payload of a few dozen bytes. crcmod's table-driven C
    routine costs under half of that up to ~100 bytes (and more than anycrc from ~150 bytes on):
    it is used when installed (``crcmod-plus``) and when
    it gives the check value; otherwise anycrc, through the same signature."""
    try:
        import crcmod
        from crcmod import _crcfunext  # noqa: F401 - the C routines; without them crcmod is pure Python

        fun = crcmod.mkCrcFun(0x1AD93D23594C935A9, initCrc=0, rev=True, xorOut=0)
        _, table, routine = getattr(fun, "__defaults__", None) or (None, None, None)  # crcfun(data, crc, table, fun)
        if callable(routine) and routine(b"123456789", 0, table) == _CHECK:
            return routine, table
    except (ImportError, AttributeError, TypeError, ValueError):
        pass
    return (lambda data, crc, _table: _CRC64.calc(data, init=crc)), None


def type_name(rdb_type: int, module_id: int | None = None) -> str:
    """The TYPE name for an RDB type byte; module values are named after their module type."""
    if rdb_type == TYPE_MODULE_2 and module_id is not None:
        return module_type_name(module_id)
    return TYPE_NAMES.get(rdb_type, f"unknown-{rdb_type}")


def module_type_name(module_id: int) -> str:
    """The 9-character module type name encoded in a 64-bit module id (moduleTypeNameByID)."""
    mid = module_id >> 10
    chars = []
    for _ in range(9):
        chars.append(_MODULE_CHARSET[mid & 63])
        mid >>= 6
    return "".join(reversed(chars))


def decode_length(buf: bytes | memoryview, pos: int) -> tuple[int, bool, int]:
    """Decode a length at ``pos``: ``(value, is_encoded_string, new_pos)``.

    ``is_encoded_string`` is true for the ``11xxxxxx`` form, where ``value`` is the ENC_* kind.
    """
    b = buf[pos]
    kind = b >> 6
    if kind == 0:
        return b & 0x3F, False, pos + 1
    if kind == 1:
        return ((b & 0x3F) << 8) | buf[pos + 1], False, pos + 2
    if kind == 3:
        return b & 0x3F, True, pos + 1
    if b == 0x80:
        if len(buf) < pos + 5:
            raise RdbError("length runs past the end of the data", pos)
        return int.from_bytes(buf[pos + 1 : pos + 5], "big"), False, pos + 5
    if b == 0x81:
        if len(buf) < pos + 9:
            raise RdbError("length runs past the end of the data", pos)
        return int.from_bytes(buf[pos + 1 : pos + 9], "big"), False, pos + 9
    raise RdbError(f"invalid length byte 0x{b:02x}", pos)


def lzf_decompress(data: bytes | memoryview, expected: int) -> bytes:
    """Decompress an LZF block (liblzf's format) that must expand to ``expected`` bytes."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            run = ctrl + 1
            if i + run > n:
                raise RdbError("LZF literal runs past the end of the compressed data")
            out += data[i : i + run]
            i += run
            continue
        length = ctrl >> 5
        if length == 7:
            if i >= n:
                raise RdbError("LZF back-reference is cut short")
            length += data[i]
            i += 1
        if i >= n:
            raise RdbError("LZF back-reference is cut short")
        ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
        i += 1
        if ref < 0:
            raise RdbError("LZF back-reference points before the start of the data")
        length += 2
        if ref + length <= len(out):
            out += out[ref : ref + length]
        else:  # overlapping copy: repeats the pattern byte by byte
            for k in range(length):
                out.append(out[ref + k])
    if len(out) != expected:
        raise RdbError(f"LZF data expands to {len(out)} bytes, the header says {expected}")
    return bytes(out)


def decode_string(raw: bytes | memoryview) -> bytes:
    """Decode one complete RDB string (length header included) into its bytes.

    Integer encodings become their decimal text, as Redis does; LZF is decompressed.
    """
    value, encoded, pos = decode_length(raw, 0)
    if not encoded:
        if len(raw) - pos != value:
            raise RdbError(f"string of {value} bytes has {len(raw) - pos}")
        return bytes(raw[pos:])
    if value == ENC_INT8:
        return str(int.from_bytes(raw[pos : pos + 1], "little", signed=True)).encode()
    if value == ENC_INT16:
        return str(int.from_bytes(raw[pos : pos + 2], "little", signed=True)).encode()
    if value == ENC_INT32:
        return str(int.from_bytes(raw[pos : pos + 4], "little", signed=True)).encode()
    if value == ENC_LZF:
        clen, _, pos = decode_length(raw, pos)
        ulen, _, pos = decode_length(raw, pos)
        return lzf_decompress(raw[pos : pos + clen], ulen)
    raise RdbError(f"unknown string encoding {value}")


def encode_length(n: int) -> bytes:
    """The RDB length encoding of ``n`` (used for building test data and payloads)."""
    if n < 0x40:
        return bytes([n])
    if n < 0x4000:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    if n <= 0xFFFFFFFF:
        return b"\x80" + n.to_bytes(4, "big")
    return b"\x81" + n.to_bytes(8, "big")


def encode_string(data: bytes) -> bytes:
    """A plain (uncompressed, non-integer) RDB string."""
    return encode_length(len(data)) + data


def restore_payload(rdb_type: int, value: bytes | memoryview, rdb_version: int) -> bytes:
    """The payload ``RESTORE`` (and ``DUMP``) use: type byte, value, 2-byte RDB version LE, CRC64 LE."""
    body = bytes([rdb_type]) + bytes(value) + rdb_version.to_bytes(2, "little")
    return body + crc64(body).to_bytes(8, "little")


def split_payload(payload: bytes) -> tuple[int, bytes, int]:
    """Check a DUMP payload's CRC64 and return ``(rdb_type, value bytes, rdb_version)``."""
    if len(payload) < 11:
        raise RdbError(f"DUMP payload of {len(payload)} bytes is too short")
    body, stored = payload[:-8], int.from_bytes(payload[-8:], "little")
    if stored and crc64(body) != stored:
        raise RdbError("DUMP payload fails its CRC64")
    return body[0], body[1:-2], int.from_bytes(body[-2:], "little")
