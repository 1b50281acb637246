"""Logical capture for servers that refuse SYNC: ``SCAN`` + pipelined ``DUMP`` + expiry, streamed.

Artifact ``redis/logical.bin`` (kind ``redis/logical``), before zstd compression::

    file     = MAGIC VERSION META [FUNCTIONS] KEY* END
    MAGIC    = the 8 ASCII bytes "REDISLOG"
    VERSION  = u16: 1
    META     = 'M' u32:n  n bytes of UTF-8 JSON: an object with at least "redis_version"
               (string) and "dbs" (the logical dbs captured, array of integers)
    FUNCTIONS= 'F' u32:n  n bytes: the FUNCTION DUMP payload (what FUNCTION RESTORE takes);
               present only when the server has function libraries
    KEY      = 'K' u16:db  i64:expire_ms  u32:k  k bytes of key  u64:v  v bytes of DUMP payload
    END      = 'E' u64:count of KEY records

Integers are big-endian; ``u`` unsigned, ``i`` two's complement. ``expire_ms`` is the absolute
expiry in Unix milliseconds on the server's clock (``PEXPIRETIME``; ``TIME`` + ``PTTL`` before
Redis 7.0), ``-1`` for a key without expiry: the same meaning as an RDB entry's expire time.
A DUMP payload is the value's RDB type byte, the value in RDB encoding, the RDB version
(u16 little-endian) and a CRC64 (little-endian): ``RESTORE key ttl payload`` takes it as is.
A reader MUST refuse an unknown magic or version, a record tag other than M/F/K/E, a file that
ends before END, bytes after END, and an END whose count differs from the KEY records read.

Every db listed in ``INFO keyspace`` is scanned (``SCAN cursor COUNT 1000``); for each batch
the expiries and DUMPs go out in one pipeline and every DUMP reply is copied into the sink
piece by piece, so memory stays flat even for huge values. A key deleted between SCAN and DUMP
is skipped. Without ``pause_writes`` the result is not a point in time (keys are read one
batch after the other), and ``SCAN`` may return a key twice if the db's hash table shrinks
during the scan (after mass deletions): restoring with ``RESTORE ... REPLACE`` is idempotent,
but the key counts then exceed the truth. Use ``pause_writes`` for a consistent capture.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    CaptureError,
    FormatError,
)
from airflow_checkpoint_provider.core.manifest import MAX_METADATA_BYTES, Artifact
from airflow_checkpoint_provider.core.safejson import load_json
from airflow_checkpoint_provider.core.staging import ArtifactSink, Staging

from .encoding import TYPE_MODULE_2, RdbError, decode_length, type_name
from .fence import write_fence
from .resp import Connection, RespError, connect, encode_command, info

log = logging.getLogger(__name__)

ARTIFACT = "redis/logical.bin"
KIND = "redis/logical"
MAGIC = b"REDISLOG"
FORMAT_VERSION = 1
SCAN_COUNT = 1000
_INLINE_PAYLOAD = 1 << 16  # DUMP replies up to this size are buffered, bigger ones streamed
_FLUSH = 1 << 20  # hand records to the sink in pieces of about this size
_KEY = struct.Struct(">cHqI")  # tag, db, expire_ms, key length
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class LogicalKey:
    db: int
    key: bytes
    expire_ms: int | None
    payload: bytes

    @property
    def type(self) -> int:
        return self.payload[0]


@dataclass(frozen=True, slots=True)
class LogicalFunctions:
    payload: bytes


# --------------------------------------------------------------------------- reading


def read_logical(src: BinaryIO) -> Iterator[dict[str, Any] | LogicalFunctions | LogicalKey]:
    """Yield the META object, then LogicalFunctions (if any) and every LogicalKey, in order."""
    head = _exact(src, 10, "header")
    if head[:8] != MAGIC:
        raise RdbError(f"not a logical Redis capture: starts with {head[:8]!r}, not {MAGIC!r}", 0)
    version = int.from_bytes(head[8:10], "big")
    if version != FORMAT_VERSION:
        raise RdbError(f"logical capture format version {version} is unknown (this reader knows {FORMAT_VERSION})", 8)
    count = 0
    seen_meta = False
    while True:
        tag = _exact(src, 1, "record tag")
        if tag == b"M" and not seen_meta:
            seen_meta = True
            yield _read_meta(src)
        elif tag == b"F":
            yield LogicalFunctions(_exact(src, _U32.unpack(_exact(src, 4, "FUNCTIONS length"))[0], "FUNCTIONS"))
        elif tag == b"K":
            db, expire, klen = struct.unpack(">HqI", _exact(src, 14, "KEY header"))
            key = _exact(src, klen, "key")
            payload = _exact(src, _U64.unpack(_exact(src, 8, "payload length"))[0], "DUMP payload")
            count += 1
            yield LogicalKey(db, key, None if expire < 0 else expire, payload)
        elif tag == b"E":
            stored = _U64.unpack(_exact(src, 8, "END count"))[0]
            if stored != count:
                raise RdbError(f"logical capture END says {stored} keys, but {count} were read")
            if src.read(1):
                raise RdbError("unexpected bytes after the END record of a logical capture")
            return
        else:
            raise RdbError(f"unknown record tag {tag!r} in a logical capture")


def _read_meta(src: BinaryIO) -> dict[str, Any]:
    """The META record's JSON object: size-capped before it is read, parsed with bounded depth."""
    n = _U32.unpack(_exact(src, 4, "META length"))[0]
    if n > MAX_METADATA_BYTES:
        raise RdbError(f"logical capture META is {n} bytes, more than the {MAX_METADATA_BYTES} allowed")
    try:
        meta = load_json(_exact(src, n, "META"), source="logical capture META")
    except FormatError as exc:
        raise RdbError(exc.message) from None
    if not isinstance(meta, dict):
        raise RdbError("logical capture META is not a JSON object")
    return meta


def _exact(src: BinaryIO, n: int, what: str) -> bytes:
    parts, left = [], n
    while left:
        piece = src.read(left)
        if not piece:
            raise RdbError(f"logical capture ends inside the {what} (truncated)")
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)


# --------------------------------------------------------------------------- capturing


def keyspace_dbs(conn: Connection) -> list[int]:
    """The logical dbs that hold keys, from ``INFO keyspace`` (``db3:keys=...``)."""
    return sorted(
        int(k[2:])
        for k, v in info(conn, "keyspace").items()
        if k.startswith("db") and k[2:].isdigit() and not v.startswith("keys=0,")
    )


def capture_logical(
    target: RedisTarget,
    staging: Staging,
    *,
    pause_ms: int | None = None,
    level: int = 3,
    left_out: dict[str, str] | None = None,
) -> Artifact:
    """Stream SCAN + DUMP of every db (but those of ``left_out``) into ``redis/logical.bin``; see
    the module docstring."""
    with connect(target) as conn:
        version = info(conn, "server").get("redis_version", "")
        major = _major(version)
        with (
            write_fence(conn, pause_ms) as fence,
            staging.artifact(
                ARTIFACT, store="redis", kind=KIND, engine="redis", engine_version=version, level=level
            ) as sink,
        ):
            dbs = [d for d in keyspace_dbs(conn) if str(d) not in (left_out or {})]
            functions = _function_dump(conn, major)
            meta = {"redis_version": version, "dbs": dbs, "expire": "unix-ms"}
            meta_bytes = json.dumps(meta, sort_keys=True).encode()
            sink.write(MAGIC + FORMAT_VERSION.to_bytes(2, "big") + b"M" + _U32.pack(len(meta_bytes)) + meta_bytes)
            n_functions = 0
            if functions is not None:
                n_functions, payload = functions
                sink.write(b"F" + _U32.pack(len(payload)) + payload)
            state = _Counts()
            for db in dbs:
                _capture_db(conn, sink, db, major, state)
            sink.write(b"E" + _U64.pack(state.total))
            sink.mark_captured()
            if fence is not None:
                fence.release()
                if fence.expired:
                    log.warning(
                        "The write pause on %s ran out (%d ms) before the logical capture ended: "
                        "the capture is not a single point in time",
                        target.label,
                        fence.max_ms,
                    )
            sink.fingerprints = {
                "keys": {str(d): n for d, n in sorted(state.keys.items()) if n},
                "expires": {str(d): n for d, n in sorted(state.expires.items()) if n},
                "types": dict(sorted(state.types.items())),
                "functions": n_functions,
            }
            sink.meta = {
                "mode": "logical",
                "format_version": FORMAT_VERSION,
                "dbs": dbs,
                **({"pause": fence.describe()} if fence is not None else {}),
                **({"left_out": left_out} if left_out else {}),
            }
    assert sink.artifact is not None
    log.info("Captured %d keys of %s logically (%d bytes)", state.total, target.label, sink.artifact.raw_size or 0)
    return sink.artifact


class _Counts:
    def __init__(self) -> None:
        self.total = 0
        self.keys: dict[int, int] = {}
        self.expires: dict[int, int] = {}
        self.types: dict[str, int] = {}


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def _function_dump(conn: Connection, major: int) -> tuple[int, bytes] | None:
    if major and major < 7:
        return None
    libs = conn.call_nothrow("FUNCTION", "LIST")
    if isinstance(libs, RespError):
        if libs.code == "NOPERM":
            log.warning(
                "%s: the ACL user may not run FUNCTION LIST/DUMP; functions are not captured (%s)",
                conn.target.label,
                libs.message,
            )
        return None
    if not libs:
        return None
    payload = conn.call_nothrow("FUNCTION", "DUMP")
    if isinstance(payload, RespError) or not isinstance(payload, bytes):
        log.warning("%s: FUNCTION DUMP failed (%s); functions are not captured", conn.target.label, payload)
        return None
    return len(libs), payload


def _check(conn: Connection, reply: Any, what: str) -> Any:
    if isinstance(reply, RespError):
        label = conn.target.label
        if reply.code == "NOPERM":
            raise AuthenticationError(
                f"{label} refused {what}: {reply.message}",
                hint="a logical capture needs +scan +dump +pexpiretime (+pttl +time before "
                "7.0) +select +info on all keys (~*)",
            )
        raise CaptureError(
            f"{label} answered {what} with an error: {reply.message}", hint="check the server log; retry the capture"
        )
    return reply


def _capture_db(conn: Connection, sink: ArtifactSink, db: int, major: int, state: _Counts) -> None:
    if db != 0:
        _check(conn, conn.call_nothrow("SELECT", db), f"SELECT {db}")
    absolute = major >= 7
    ttl_name = "PEXPIRETIME" if absolute else "PTTL"
    ttl_cmd = b"*2\r\n$11\r\nPEXPIRETIME\r\n" if absolute else b"*2\r\n$4\r\nPTTL\r\n"
    dump_cmd = b"*2\r\n$4\r\nDUMP\r\n"
    by_type = [0] * 256
    n = n_exp = 0
    out = bytearray()
    reply = _check(conn, conn.call_nothrow("SCAN", 0, "COUNT", SCAN_COUNT), "SCAN")
    while True:
        cursor, keys = reply
        # this batch's expiries and DUMPs, and the next SCAN, in one round trip
        parts = [] if absolute else [b"*1\r\n$4\r\nTIME\r\n"]
        for k in keys:
            arg = b"$%d\r\n%b\r\n" % (len(k), k)
            parts += (ttl_cmd, arg, dump_cmd, arg)
        if cursor != b"0":
            parts.append(encode_command("SCAN", cursor, "COUNT", SCAN_COUNT))
        if parts:
            conn.sendall(b"".join(parts))
        if keys:
            now_ms = 0
            if not absolute:
                secs, usecs = _check(conn, conn.read_reply(), "TIME")
                now_ms = int(secs) * 1000 + int(usecs) // 1000
            for k in keys:
                ttl = _check(conn, conn.read_int(), ttl_name)
                size = _check(conn, conn.read_bulk_header(), "DUMP")
                if size is None:  # deleted or expired since SCAN
                    continue
                expire = -1 if ttl < 0 else (ttl if absolute else now_ms + ttl)
                out += _KEY.pack(b"K", db, expire, len(k))
                out += k
                out += _U64.pack(size)
                if size <= _INLINE_PAYLOAD:
                    payload = conn.read_exact(size + 2)
                    out += memoryview(payload)[:size]
                    head = payload
                else:  # a big value: stream it through in pieces
                    sink.write(out)
                    out = bytearray()
                    head = conn.copy_bulk(size, sink.write)
                if head[0] == TYPE_MODULE_2:
                    name = _payload_type(head)
                    state.types[name] = state.types.get(name, 0) + 1
                else:
                    by_type[head[0]] += 1
                n += 1
                if expire >= 0:
                    n_exp += 1
            if len(out) >= _FLUSH:
                sink.write(out)
                out = bytearray()
        if cursor == b"0":
            break
        reply = _check(conn, conn.read_reply(), "SCAN")
    if out:
        sink.write(out)
    for t, count in enumerate(by_type):
        if count:
            name = type_name(t)
            state.types[name] = state.types.get(name, 0) + count
    state.total += n
    state.keys[db] = state.keys.get(db, 0) + n
    state.expires[db] = state.expires.get(db, 0) + n_exp


def _payload_type(head: bytes) -> str:
    """TYPE name from the first bytes of a DUMP payload (module values: the module's name)."""
    if head[0] == TYPE_MODULE_2:
        try:
            module_id, _, _ = decode_length(head, 1)
            return type_name(TYPE_MODULE_2, module_id)
        except (RdbError, IndexError):
            return "module"
    return type_name(head[0])
