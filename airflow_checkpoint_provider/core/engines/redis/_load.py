"""Loading an artifact into Redis: a fast RDB walk and pipelined ``RESTORE`` batches.

:class:`_Walk` reads an RDB with :class:`~.rdb.RdbParser`'s internals and yields compact tuples
(about half the cost per key of ``RdbParser.records()``); :func:`restore_stream` sends them as
``RESTORE key ttl payload ABSTTL`` in large pipelines and checks every reply. Used by
:class:`~.restore.RedisRestore`; ``test_walk_matches_the_rdb_parser`` keeps the walk in step
with the parser.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_checkpoint_provider.core.errors import ConnectionFailedError, EngineError

from .copies import PREFIX
from .encoding import _CRC64, RdbError, crc64, short_crc64
from .logical import LogicalKey, read_logical
from .rdb import Function, ModuleAux, RdbParser
from .resp import Connection, RespError, encode_command
from .window import _INT_SKIP

log = logging.getLogger(__name__)


MODES = ("side_by_side", "in_place")
PLAN_COUNTS = ("auto", "exact", "estimate")  #: how the plan counts the keys a restore replaces (see ``_plan``)
_OK = b"+OK\r\n"
_Q = struct.Struct("<Q").pack
_TB = [bytes([t]) for t in range(256)]
_HORIZON_MS = 6 * 3600 * 1000  # expiries this close are remembered, to allow for keys expiring meanwhile
_MAX_BUFFER = 4 << 20
_BIG_VALUE = 1 << 20
_MS13, _MS14 = 10**12, 10**13  # expiries written with 13 digits
_SHORT = 128  # shorter payloads get the table-driven CRC64: cheaper per call, slower per byte (even at ~150)
_SAMPLE_EVERY = 1024


class RedisRestoreError(EngineError):
    """Loading, verifying or cutting over a Redis restore failed; the message says what state things are in."""


# --------------------------------------------------------------------------- the walk


class _Walk(RdbParser):
    """:meth:`RdbParser.records`, specialised for restore (keep in step with ``RdbParser._walk``):
    yields ``(db, key, type, value, expire_ms, idle, freq)`` tuples (and Function/ModuleAux
    records), slicing short keys and plain string values straight out of the buffer."""

    def begin(self) -> int:
        self._started = True
        self._pos0 = self._header()
        return self.version

    def entries(self, values: bool = True) -> Iterator[Any]:
        try:
            yield from self._entries(values)
        except IndexError:
            raise RdbError(
                "the RDB ends in the middle of a record (truncated or corrupt)", self._base + self._end
            ) from None

    def _entries(self, values: bool) -> Iterator[Any]:
        pos, buf, end = self._pos0, self._buf, self._end
        db, expire, idle, freq = 0, None, None, None
        while True:
            if end - pos < 64:
                pos = self._more(pos)
                buf, end = self._buf, self._end
            t = buf[pos]
            if t < 0xF4:  # an entry: type, key, value
                b = buf[pos + 1]
                if b < 0x40 and pos + 2 + b <= end:
                    key = buf[pos + 2 : pos + 2 + b]
                    pos += 2 + b
                else:
                    key, pos = self._read_string(pos + 1)
                    buf, end = self._buf, self._end
                if end - pos < 64:
                    pos = self._more(pos)
                    buf, end = self._buf, self._end
                nxt = -1
                if t == 0:
                    b = buf[pos]
                    if b < 0x40:
                        nxt = pos + 1 + b
                    elif b < 0x80:
                        nxt = pos + 2 + (((b & 0x3F) << 8) | buf[pos + 1])
                    elif b == 0xC3 and buf[pos + 1] < 0x40 and buf[pos + 2] < 0x40:  # short LZF
                        nxt = pos + 3 + buf[pos + 1]
                    elif 0xC0 <= b <= 0xC2:
                        nxt = pos + _INT_SKIP[b]
                if 0 <= nxt <= end:
                    value = buf[pos:nxt] if values else None
                    pos = nxt
                else:
                    if values:
                        self._keep, self._kept = self._base + pos, []
                    pos = self._skip_value(t, pos)
                    if pos > self._end:
                        pos = self._spill(pos)
                    value = self._kept_bytes(pos) if values else None
                    self._keep, self._kept = -1, []
                    buf, end = self._buf, self._end
                yield db, key, t, value, expire, idle, freq
                expire = idle = freq = None
                continue
            if t == 0xFC:  # EXPIRETIME_MS
                expire = int.from_bytes(buf[pos + 1 : pos + 9], "little")
                pos += 9
                continue
            pos += 1
            if t == 0xFD:  # EXPIRETIME (seconds)
                expire = int.from_bytes(buf[pos : pos + 4], "little") * 1000
                pos += 4
            elif t == 0xF9:  # FREQ
                freq = buf[pos]
                pos += 1
            elif t == 0xF8:  # IDLE
                idle, pos = self._len(pos)
            elif t == 0xFE:  # SELECTDB
                db, pos = self._len(pos)
            elif t == 0xFB:  # RESIZEDB
                _, pos = self._len(pos)
                _, pos = self._len(pos)
            elif t == 0xFA:  # AUX
                name, pos = self._read_string(pos)
                aux, pos = self._read_string(pos)
                self.aux[name.decode("utf-8", "replace")] = aux.decode("utf-8", "replace")
            elif t == 0xF5:  # FUNCTION2
                code, pos = self._read_string(pos)
                yield Function(code)
            elif t == 0xF4:  # SLOT_INFO
                for _ in range(3):
                    _, pos = self._len(pos)
            elif t == 0xF7:  # MODULE_AUX
                start = self._base + pos - 1
                _, pos = self._len(pos)
                when_op, pos = self._len(pos)
                _, pos = self._len(pos)
                if when_op != 2:
                    raise RdbError(f"module aux data with when-opcode {when_op} (expected 2)", start)
                pos = self._skip_module_ops(pos)
                yield ModuleAux("module", start, self._base + pos - start)
            elif t == 0xFF:
                self._finish(pos)
                return
            else:
                raise RdbError(f"unknown opcode 0x{t:02x}", self._base + pos - 1)
            buf, end = self._buf, self._end
            if pos > end:
                pos = self._spill(pos)
                buf, end = self._buf, self._end


def _logical_items(src: Any) -> Iterator[Any]:
    for rec in read_logical(src):
        if type(rec) is LogicalKey:
            yield rec.db, rec.key, -1, rec.payload, rec.expire_ms, None, None
        else:
            yield rec


# --------------------------------------------------------------------------- pipelined RESTORE


class _Pipe:
    """Commands written in batches as one buffer, ``depth`` batches in flight; replies checked in bulk.

    With ``tolerate_busy`` a ``BUSYKEY`` reply (a key a logical capture listed twice) is counted per
    db in ``busy`` instead of failing."""

    def __init__(self, conn: Connection, depth: int = 2, *, tolerate_busy: bool = False) -> None:
        self.conn, self.depth, self.tolerate_busy = conn, depth, tolerate_busy
        self.parts: list[bytes] = []
        self.labels: list[Any] = []
        self.size = 0
        self.inflight: deque[tuple[list[Any], int]] = deque()
        self.rx = b""
        self.db = self.batch_db = -1  # selected after what was added / before the batch being built
        self.busy: dict[int, int] = {}

    def select(self, db: int) -> None:
        self.parts.append(encode_command("SELECT", db))
        self.labels.append(("SELECT", db))
        self.db = db

    def flush(self) -> None:
        if self.parts:
            self.conn.sendall(b"".join(self.parts))
            self.inflight.append((self.labels, self.batch_db))
            self.parts, self.labels, self.size, self.batch_db = [], [], 0, self.db
        while len(self.inflight) > self.depth:
            self._collect(*self.inflight.popleft())

    def send_pieces(self, pieces: list[bytes], label: Any) -> None:
        """One command in pieces (a big value is never copied); call after :meth:`flush`."""
        for piece in pieces:
            self.conn.sendall(piece)
        self.inflight.append(([label], self.db))
        self.flush()

    def drain(self) -> None:
        self.flush()
        while self.inflight:
            self._collect(*self.inflight.popleft())

    def _collect(self, labels: list[Any], db: int) -> None:
        n = len(labels)
        chunks, have = [self.rx], self.rx.count(b"\n")
        while have < n:
            data = self.conn.read_some()
            if not data:
                raise ConnectionFailedError(f"{self.conn.target.label} closed the connection during the restore")
            chunks.append(data)
            have += data.count(b"\n")
        rx = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        if rx.startswith(_OK * n):
            self.rx = rx[5 * n :]
            return
        lines = rx.split(b"\n", n)
        self.rx = lines[n] if len(lines) > n else b""
        errors = []
        for label, line in zip(labels, lines, strict=False):
            if type(label) is tuple:
                db = label[1]
            if line[:1] == b"-":
                message = line[1:].rstrip(b"\r").decode("utf-8", "replace")
                if self.tolerate_busy and message.startswith("BUSYKEY"):
                    self.busy[db] = self.busy.get(db, 0) + 1
                else:
                    errors.append((label, message, db))
        if errors:
            label, message, db = errors[0]
            raise _ReplyError(label, message, len(errors), db)


class _ReplyError(Exception):
    def __init__(self, label: Any, message: str, count: int, db: int) -> None:
        super().__init__(message)
        self.label, self.message, self.count, self.db = label, message, count, db


@dataclass
class _DbLoad:
    streamed: int = 0  #: entries of this db in the artifact
    restored: int = 0
    expired: int = 0  #: skipped: already expired
    duplicates: int = 0  #: keys listed twice (logical captures)
    soon: array[int] = field(default_factory=lambda: array("q"))  #: expiries within the horizon
    sample: list[tuple[bytes, int, int | None]] = field(default_factory=list)
    hashes: set[int] | None = None


def restore_stream(
    conn: Connection,
    items: Iterator[Any],
    rdb_version: int | None,
    mapping: dict[int, int],
    *,
    replace: bool = False,
    batch: int = 1000,
    keep_hashes: bool = False,
    tolerate_busy: bool = False,
    on_record: Any = None,
) -> dict[int, _DbLoad]:
    """Pipe ``RESTORE`` commands for the entries of the dbs in ``mapping`` (source -> destination db).

    ``items`` come from :class:`_Walk` (payloads built here) or :func:`_logical_items` (type -1:
    the value is the payload). Other records go to ``on_record``. Raises :class:`_ReplyError`.
    A key listed twice (possible in a logical capture) is counted in ``duplicates``: with
    ``keep_hashes`` (and REPLACE) the later value wins, with ``tolerate_busy`` the first."""
    rep = b"$7\r\nREPLACE\r\n" if replace else b""
    extra = 1 if replace else 0
    plain = b"*%d\r\n$7\r\nRESTORE\r\n" % (4 + extra) + b"$%d\r\n%b\r\n$1\r\n0\r\n$%d\r\n%b\r\n" + rep
    timed = b"*%d\r\n$7\r\nRESTORE\r\n" % (5 + extra) + b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$6\r\nABSTTL\r\n" + rep
    # the same for an RDB value, the payload given as body (type, value, version) and CRC64, the
    # expiry as a 13-digit number (every time in ms from 2001 to 2286): one format, no concatenation
    plain2 = b"*%d\r\n$7\r\nRESTORE\r\n" % (4 + extra) + b"$%d\r\n%b\r\n$1\r\n0\r\n$%d\r\n%b%b\r\n" + rep
    timed2 = (
        b"*%d\r\n$7\r\nRESTORE\r\n" % (5 + extra) + b"$%d\r\n%b\r\n$13\r\n%d\r\n$%d\r\n%b%b\r\n$6\r\nABSTTL\r\n" + rep
    )
    ver = rdb_version.to_bytes(2, "little") if rdb_version is not None else b""
    calc = _CRC64.calc  # :func:`~.encoding.crc64` without its wrapper: every payload is non-empty
    short, table = short_crc64()  # cheaper per call: for payloads under _SHORT bytes
    stats: dict[int, _DbLoad] = {}
    pipe = _Pipe(conn, tolerate_busy=tolerate_busy)
    parts, labels = pipe.parts, pipe.labels
    secs, usecs = conn.call("TIME")
    clock0, mono0 = int(secs) * 1000 + int(usecs) // 1000, time.monotonic()
    now = clock0
    horizon = now + _HORIZON_MS
    cur: int | None = None
    st: _DbLoad | None = None
    soon: array[int] = array("q")  # the current db's: rebound when the db changes
    sample: list[tuple[bytes, int, int | None]] = []
    hashes: set[int] | None = None
    n = r = size = 0  # entries streamed and keys sent for the current db; bytes in the batch
    big, mask, tb, pack = _BIG_VALUE, _SAMPLE_EVERY - 1, _TB, _Q
    for item in items:
        if type(item) is not tuple:
            if on_record is not None:
                on_record(item)
            continue
        db, key, t, value, expire, idle, freq = item
        if db != cur:
            if st is not None:
                st.streamed, st.restored = st.streamed + n, st.restored + r
            cur, n, r = db, 0, 0
            if db in mapping:
                st = stats.setdefault(db, _DbLoad(hashes=set() if keep_hashes else None))
                soon, sample, hashes = st.soon, st.sample, st.hashes
                pipe.select(mapping[db])
            else:
                st = None
        if st is None:
            continue
        n += 1
        if expire is not None:
            if expire <= now:
                st.expired += 1
                continue
            if expire < horizon:
                soon.append(expire)
        if not n & mask or n <= 64:
            sample.append((key, t if t >= 0 else value[0], expire))
        if hashes is not None:
            h = hash(key)
            if h in hashes:
                st.duplicates += 1
                r -= 1  # counted again below
            else:
                hashes.add(h)
        r += 1
        if idle is None and freq is None and len(value) <= big:
            if t >= 0:  # an RDB value: the payload is built inside the command
                body = tb[t] + value + ver
                crc = pack(short(body, 0, table) if len(body) < _SHORT else calc(body))
                if expire is None:
                    parts.append(plain2 % (len(key), key, len(body) + 8, body, crc))
                elif _MS13 <= expire < _MS14:
                    parts.append(timed2 % (len(key), key, expire, len(body) + 8, body, crc))
                else:
                    ms = b"%d" % expire
                    parts.append(timed % (len(key), key, len(ms), ms, len(body) + 8, body + crc))
                labels.append(key)
                size += len(body)
                if len(labels) >= batch or size >= _MAX_BUFFER:
                    pipe.flush()
                    parts, labels, size = pipe.parts, pipe.labels, 0
                    now = clock0 + int((time.monotonic() - mono0) * 1000)
                continue
            if expire is None:
                parts.append(plain % (len(key), key, len(value), value))
            else:
                ms = b"%d" % expire
                parts.append(timed % (len(key), key, len(ms), ms, len(value), value))
            labels.append(key)
            size += len(value)
            if len(labels) >= batch or size >= _MAX_BUFFER:
                pipe.flush()
                parts, labels, size = pipe.parts, pipe.labels, 0
                now = clock0 + int((time.monotonic() - mono0) * 1000)
            continue
        # rare: a big value (sent in pieces, never copied) or LRU/LFU hints
        pipe.flush()
        pieces = [tb[t], value, ver + pack(crc64(ver, crc64(value, crc64(tb[t]))))] if t >= 0 else [value]
        post: list[bytes] = [b"ABSTTL"] + ([b"REPLACE"] if replace else [])
        if idle is not None:
            post += [b"IDLETIME", b"%d" % idle]
        elif freq is not None:
            post += [b"FREQ", b"%d" % freq]
        head = b"*%d\r\n" % (4 + len(post)) + _bulks([b"RESTORE", key, b"%d" % (expire or 0)])
        pipe.send_pieces([head, b"$%d\r\n" % sum(map(len, pieces)), *pieces, b"\r\n", _bulks(post)], key)
        parts, labels, size = pipe.parts, pipe.labels, 0
    if st is not None:
        st.streamed, st.restored = st.streamed + n, st.restored + r
    pipe.drain()
    for src, st in stats.items():
        busy = pipe.busy.get(mapping[src], 0)
        st.duplicates += busy
        st.restored -= busy
    return stats


def _bulks(args: list[bytes]) -> bytes:
    return b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


# --------------------------------------------------------------------------- helpers


class _Refused(Exception):
    """A command of a MULTI block was refused when queued: EXEC discarded the transaction."""


def _transaction(conn: Connection, commands: list[tuple[Any, ...]]) -> list[Any]:
    """``MULTI`` + commands + ``EXEC`` in one write; the EXEC results (errors as RespError values)."""
    conn.sendall(encode_command("MULTI") + b"".join(encode_command(*c) for c in commands) + encode_command("EXEC"))
    replies = [conn.read_reply() for _ in range(len(commands) + 2)]
    for cmd, reply in zip([("MULTI",), *commands], replies, strict=False):
        if isinstance(reply, RespError):
            raise _Refused(f"{_describe(cmd)}: {reply.message}")
    result = replies[-1]
    if not isinstance(result, list):
        raise _Refused(f"EXEC: {result.message if isinstance(result, RespError) else 'the transaction was aborted'}")
    return result


def _describe(cmd: tuple[Any, ...]) -> str:
    """A command for messages: its name and small arguments (never values, payloads or code)."""
    if cmd[0] == "FUNCTION":
        return f"FUNCTION {cmd[1]}"

    def word(a: Any) -> str:
        return "<marker>" if isinstance(a, bytes) and a.startswith(PREFIX) else str(a)

    return " ".join(
        word(a) for a in cmd[:3] if isinstance(a, (int, str)) or (isinstance(a, bytes) and a.startswith(PREFIX))
    )


class _Tee:
    """Reads from ``src``, writing every byte read to ``out``."""

    def __init__(self, src: Any, out: Any) -> None:
        self.src, self.out = src, out

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.src.read(n)
        if data:
            self.out.write(data)
        return data


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
