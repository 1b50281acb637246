"""Stream an RDB file: validate it and walk its entries, parsing only each value's extent.

:class:`RdbParser` reads any object with ``read(n)`` (a file, a zstd stream reader, the
replication socket of :mod:`.replication`) in chunks, so memory stays flat whatever the size
of the data. In one pass it

* checks the magic ``REDIS`` and the 4-digit version (``RDB_VERSION_MIN`` .. ``RDB_VERSION_MAX``;
  others are refused by name),
* walks every opcode and entry. Values are *skipped* by their length prefixes (strings, LZF
  blocks, listpacks, quicklist nodes, stream consumer groups, module opcodes, ...), never
  decoded, which is what makes the walk fast,
* computes the CRC64 over everything before the trailing 8 bytes and compares it with them
  (a stored 0 means the server runs with ``rdbchecksum no``: nothing to compare),
* refuses bytes after the checksum,
* counts keys and keys with an expiry per db, value types and function libraries: the
  fingerprints (:meth:`RdbParser.fingerprints`).

:meth:`RdbParser.scan` does only that (the fast path used while capturing);
:meth:`RdbParser.records` also yields :class:`Entry` (db, key, RDB type byte, the raw value
bytes or just their extent, expiry, LRU/LFU hints), :class:`Aux`, :class:`Function`,
:class:`ResizeDb` and :class:`ModuleAux` records, in file order. ``Entry.restore_payload()``
turns an entry into the payload of ``RESTORE``.

Errors are :class:`~.encoding.RdbError` with the byte offset; callers wrap them into
``CaptureError`` naming the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .encoding import (
    RDB_VERSION_MAX,
    RDB_VERSION_MIN,
    TYPE_NAMES,
    RdbError,
    decode_length,
    module_type_name,
    restore_payload,
)
from .window import _INT_SKIP, CHUNK, DbFilter, RdbWindow, Readable

_ONE_STRING = frozenset({0, 9, 10, 11, 12, 13, 16, 17, 20, 23})  # value = one RDB string


@dataclass(frozen=True, slots=True)
class Entry:
    """One key. ``value`` is the serialized value (``None`` when not requested); ``offset`` and
    ``length`` locate those bytes in the RDB stream."""

    db: int
    key: bytes
    type: int
    value: bytes | None
    offset: int
    length: int
    expire_ms: int | None = None
    idle: int | None = None
    freq: int | None = None

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, f"unknown-{self.type}")

    def restore_payload(self, rdb_version: int) -> bytes:
        if self.value is None:
            raise ValueError("entry was read without its value (records(values=False))")
        return restore_payload(self.type, self.value, rdb_version)


@dataclass(frozen=True, slots=True)
class Aux:
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Function:
    code: bytes  #: the library source, as FUNCTION LOAD takes it


@dataclass(frozen=True, slots=True)
class ResizeDb:
    db: int
    keys: int
    expires: int


@dataclass(frozen=True, slots=True)
class ModuleAux:
    module: str
    offset: int
    length: int


class RdbParser(RdbWindow):
    """One pass over one RDB stream; see the module docstring."""

    def __init__(
        self, src: Readable, *, chunk_size: int = CHUNK, strict_end: bool = True, db_filter: DbFilter | None = None
    ) -> None:
        super().__init__(src, chunk_size)
        self._route = db_filter
        self._strict_end = strict_end
        self._started = False
        self.version = 0
        self.aux: dict[str, str] = {}
        self.keys: dict[int, int] = {}
        self.expires: dict[int, int] = {}
        self.resize_hints: dict[int, tuple[int, int]] = {}
        self.functions = 0
        self.stored_checksum: int | None = None
        self.computed_checksum: int | None = None
        self._types = [0] * 256
        self._modules: dict[str, int] = {}

    # ---------------------------------------------------------------- public API

    def scan(self) -> dict[str, Any]:
        """Walk the whole stream without yielding anything; return :meth:`fingerprints`."""
        for _ in self._run(emit=False, values=False):
            pass
        return self.fingerprints()

    def records(self, *, values: bool = True) -> Iterator[Entry | Aux | Function | ResizeDb | ModuleAux]:
        """Walk the stream, yielding its records in order. ``values=False`` skips value bytes."""
        return self._run(emit=True, values=values)

    def fingerprints(self) -> dict[str, Any]:
        """Counts of what the stream holds (with a :class:`DbFilter`: of what it let through)."""
        route = self._route
        drop = route.exclude if route is not None else frozenset()
        counts = (
            self._types if route is None else [a - b for a, b in zip(self._types, route.excluded_types, strict=True)]
        )
        modules = (
            self._modules
            if route is None
            else {k: v - route.excluded_modules.get(k, 0) for k, v in self._modules.items()}
        )
        types: dict[str, int] = {}
        for t, n in enumerate(counts):
            if n and t != 7:
                name = TYPE_NAMES.get(t, f"unknown-{t}")
                types[name] = types.get(name, 0) + n
        for name, n in modules.items():
            if n:
                types[name] = types.get(name, 0) + n
        return {
            "rdb_version": self.version,
            "keys": {str(db): n for db, n in sorted(self.keys.items()) if n and db not in drop},
            "expires": {str(db): n for db, n in sorted(self.expires.items()) if n and db not in drop},
            "types": dict(sorted(types.items())),
            "functions": self.functions,
        }

    @property
    def checksum_verified(self) -> bool:
        """True when the stored CRC64 was compared (and matched); False when it was 0 (disabled)."""
        return bool(self.stored_checksum)

    # ---------------------------------------------------------------- the walk

    def _run(self, *, emit: bool, values: bool) -> Iterator[Any]:
        if self._started:
            raise RuntimeError("an RdbParser walks its stream once")
        self._started = True
        try:
            yield from self._walk(emit, values)
        except IndexError:
            raise RdbError(
                "the RDB ends in the middle of a record (truncated or corrupt)", self._base + self._end
            ) from None

    def _walk(self, emit: bool, values: bool) -> Iterator[Any]:
        pos = self._header()
        buf, end = self._buf, self._end
        types, one_string = self._types, _ONE_STRING
        db, n_exp, db_first = 0, 0, 0  # keys of a db = entries counted since its SELECTDB
        expire = idle = freq = -1
        while True:
            if end - pos < 64:
                pos = self._more(pos)
                buf, end = self._buf, self._end
            t = buf[pos]
            if t < 0xF4:  # ------------------------------------------ an entry: type, key, value
                pos += 1
                if emit:
                    key, pos = self._read_string(pos)
                    buf, end = self._buf, self._end
                    if end - pos < 64:
                        pos = self._more(pos)
                        buf, end = self._buf, self._end
                    voff = self._base + pos
                    if values:
                        self._keep, self._kept = voff, []
                else:
                    b = buf[pos]
                    if b < 0x40:
                        pos += 1 + b
                    elif b < 0x80:
                        pos += 2 + (((b & 0x3F) << 8) | buf[pos + 1])
                    elif 0xC0 <= b <= 0xC2:  # 8/16/32-bit integer
                        pos += _INT_SKIP[b]
                    else:
                        pos = self._str_end(pos)
                    if end - pos < 64:
                        pos = self._more(pos)
                        buf, end = self._buf, self._end
                if t == 0 or t in one_string:
                    b = buf[pos]
                    if b < 0x40:
                        pos += 1 + b
                    elif b < 0x80:
                        pos += 2 + (((b & 0x3F) << 8) | buf[pos + 1])
                    elif b == 0xC3 and buf[pos + 1] < 0x40 and buf[pos + 2] < 0x40:  # short LZF
                        pos += 3 + buf[pos + 1]
                    elif 0xC0 <= b <= 0xC2:
                        pos += _INT_SKIP[b]
                    else:
                        pos = self._str_end(pos)
                else:
                    pos = self._skip_value(t, pos)
                    buf, end = self._buf, self._end
                types[t] += 1
                if emit:
                    if pos > end:
                        pos = self._spill(pos)
                        buf, end = self._buf, self._end
                    value = None
                    if values:
                        value = self._kept_bytes(pos)
                        self._keep, self._kept = -1, []
                    yield Entry(
                        db,
                        key,
                        t,
                        value,
                        voff,
                        self._base + pos - voff,
                        None if expire < 0 else expire,
                        None if idle < 0 else idle,
                        None if freq < 0 else freq,
                    )
                    expire = idle = freq = -1
                continue
            if t == 0xFC:  # EXPIRETIME_MS (the value matters only to records())
                expire = int.from_bytes(buf[pos + 1 : pos + 9], "little") if emit else 0
                n_exp += 1
                pos += 9
                continue
            pos += 1  # ------------------------------------------------- other opcodes
            if t == 0xFD:  # EXPIRETIME (seconds)
                expire = int.from_bytes(buf[pos : pos + 4], "little") * 1000
                n_exp += 1
                pos += 4
            elif t == 0xF9:  # FREQ
                freq = buf[pos]
                pos += 1
            elif t == 0xF8:  # IDLE
                idle, pos = self._len(pos)
            elif t == 0xFE:  # SELECTDB
                db_first = self._count(db, db_first, n_exp)
                n_exp = 0
                if self._route is not None:  # the db number is in the window: the loop keeps 64 bytes ahead
                    self._route.cut(self._base + pos - 1, decode_length(self._buf, pos)[0])
                db, pos = self._len(pos)
            elif t == 0xFB:  # RESIZEDB
                keys, pos = self._len(pos)
                exps, pos = self._len(pos)
                self.resize_hints[db] = (keys, exps)
                if emit:
                    yield ResizeDb(db, keys, exps)
            elif t == 0xFA:  # AUX
                if self._route is not None:
                    self._route.cut(self._base + pos - 1, None)
                name, pos = self._read_string(pos)
                value_, pos = self._read_string(pos)
                self.aux[name.decode("utf-8", "replace")] = value_.decode("utf-8", "replace")
                if emit:
                    yield Aux(name, value_)
            elif t == 0xF5:  # FUNCTION2
                if self._route is not None:
                    self._route.cut(self._base + pos - 1, None)
                code, pos = self._read_string(pos)
                self.functions += 1
                if emit:
                    yield Function(code)
            elif t == 0xF4:  # SLOT_INFO: slot id, slot size, expires slot size
                for _ in range(3):
                    _, pos = self._len(pos)
            elif t == 0xF7:  # MODULE_AUX: module id, when-opcode, when, module opcodes
                start = self._base + pos - 1
                if self._route is not None:
                    self._route.cut(start, None)
                module_id, pos = self._len(pos)
                when_op, pos = self._len(pos)
                _, pos = self._len(pos)
                if when_op != 2:
                    raise RdbError(f"module aux data with when-opcode {when_op} (expected 2)", start)
                pos = self._skip_module_ops(pos)
                if emit:
                    yield ModuleAux(module_type_name(module_id), start, self._base + pos - start)
            elif t == 0xFF:  # EOF
                self._count(db, db_first, n_exp)
                if self._route is not None:
                    self._route.cut(self._base + pos - 1, None)
                self._finish(pos)
                return
            elif t == 0xF6:
                raise RdbError(
                    "function data in the pre-release format of Redis 7.0 RC1/RC2 "
                    "(opcode 246); Redis itself no longer loads it",
                    self._base + pos - 1,
                )
            else:
                raise RdbError(f"unknown opcode 0x{t:02x}", self._base + pos - 1)
            buf, end = self._buf, self._end
            if pos > end:
                pos = self._spill(pos)
                buf, end = self._buf, self._end

    def _count(self, db: int, first: int, n_exp: int) -> int:
        """Book the keys counted since entry number ``first`` to ``db``; return the new total."""
        total = sum(self._types)
        if total > first:
            self.keys[db] = self.keys.get(db, 0) + total - first
        if n_exp:
            self.expires[db] = self.expires.get(db, 0) + n_exp
        if self._route is not None:
            self._route.section(db, self._types, self._modules)
        return total

    def _skip_value(self, t: int, pos: int) -> int:
        """Skip the value of type ``t`` at ``pos``; may return a position past the buffer."""
        skip = self._skip_strings
        if t in _ONE_STRING:
            return skip(pos, 1)
        if t in (1, 2, 14):  # list, set: n strings; quicklist: n ziplists
            n, pos = self._len(pos)
            return skip(pos, n)
        if t == 4:  # hash: n field/value pairs
            n, pos = self._len(pos)
            return skip(pos, 2 * n)
        if t == 3:  # zset: member, score as a length-prefixed decimal (253..255: nan, inf, -inf)
            n, pos = self._len(pos)
            for _ in range(n):
                pos = self._more(skip(pos, 1))
                b = self._buf[pos]
                pos += 1 if b >= 253 else 1 + b
            return pos
        if t == 5:  # zset 2: member, 8-byte binary double
            n, pos = self._len(pos)
            buf, end = self._buf, self._end
            while n > 0:
                if end - pos < 64:
                    pos = self._more(pos)
                    buf, end = self._buf, self._end
                b = buf[pos]
                if b < 0x40:
                    pos += 9 + b
                elif 0xC0 <= b <= 0xC2:
                    pos += 8 + _INT_SKIP[b]
                else:
                    pos = self._str_end(pos) + 8
                n -= 1
            return pos
        if t == 18:  # quicklist 2: container kind, then a listpack or a plain node
            n, pos = self._len(pos)
            for _ in range(n):
                container, pos = self._len(pos)
                if container not in (1, 2):
                    raise RdbError(
                        f"quicklist node container {container} is neither plain nor packed", self._base + pos
                    )
                pos = skip(pos, 1)
            return pos
        if t in (15, 19, 21):
            return self._skip_stream(t, pos)
        if t == 7:  # module value: module id, then typed opcodes up to EOF
            module_id, pos = self._len(pos)
            name = module_type_name(module_id)
            self._modules[name] = self._modules.get(name, 0) + 1
            return self._skip_module_ops(pos)
        if t in (22, 24):  # hash with field TTLs: [min expire,] n x (ttl, field, value)
            if t == 24:
                pos += 8
            n, pos = self._len(pos)
            for _ in range(n):
                _, pos = self._len(pos)
                pos = skip(pos, 2)
            return pos
        if t == 25:  # listpack hash with field TTLs: min expire, listpack
            return skip(pos + 8, 1)
        if t == 6:
            raise RdbError("module value in the pre-release format 6 (Redis 4.0 RC)", self._base + pos)
        raise RdbError(f"unknown value type {t}", self._base + pos - 1)

    def _skip_stream(self, t: int, pos: int) -> int:
        n, pos = self._len(pos)
        pos = self._skip_strings(pos, 2 * n)  # (master id, listpack) per node
        for _ in range(3 if t == 15 else 8):  # length, last id [, first id, max deleted id, entries added]
            _, pos = self._len(pos)
        groups, pos = self._len(pos)
        for _ in range(groups):
            pos = self._skip_strings(pos, 1)  # group name
            for _ in range(2 if t == 15 else 3):  # last id [, entries read]
                _, pos = self._len(pos)
            pel, pos = self._len(pos)
            for _ in range(pel):  # 16-byte id, 8-byte delivery time, delivery count
                _, pos = self._len(pos + 24)
            consumers, pos = self._len(pos)
            for _ in range(consumers):
                pos = self._skip_strings(pos, 1) + (16 if t == 21 else 8)  # name, seen [, active] time
                pel, pos = self._len(pos)
                pos += 16 * pel
        return pos

    def _skip_module_ops(self, pos: int) -> int:
        while True:
            op, pos = self._len(pos)
            if op == 0:
                return pos
            if op in (1, 2):
                _, pos = self._len(pos)
            elif op == 3:
                pos += 4
            elif op == 4:
                pos += 8
            elif op == 5:
                pos = self._skip_strings(pos, 1)
            else:
                raise RdbError(f"unknown module value opcode {op}", self._base + pos)

    # ---------------------------------------------------------------- primitives

    def _header(self) -> int:
        pos = self._more(0)
        head = self._buf[:9]
        if len(head) < 9 or head[:5] != b"REDIS":
            raise RdbError(f"not an RDB file: it starts with {bytes(head[:9])!r}, not b'REDIS' and a version", 0)
        if not head[5:9].isdigit():
            raise RdbError(f"RDB version field {bytes(head[5:9])!r} is not four digits", 5)
        self.version = int(head[5:9])
        if not RDB_VERSION_MIN <= self.version <= RDB_VERSION_MAX:
            raise RdbError(
                f"RDB version {self.version} is not supported: this reader handles versions "
                f"{RDB_VERSION_MIN} to {RDB_VERSION_MAX} (Redis 2.6 to 7.4)",
                5,
            )
        return pos + 9

    def _finish(self, pos: int) -> None:
        """After the EOF opcode: the CRC64, then nothing else."""
        self._consume(pos)
        if self._end - pos < 8:
            pos = self._fill(pos)
        if self._end - pos < 8:
            raise RdbError("the RDB ends inside its 8-byte checksum (truncated)", self._base + pos)
        self.computed_checksum = self._crc
        self.stored_checksum = int.from_bytes(self._buf[pos : pos + 8], "little")
        pos += 8
        self._crc_from = pos
        if self.stored_checksum and self.stored_checksum != self.computed_checksum:
            raise RdbError(
                f"CRC64 mismatch: the RDB stores {self.stored_checksum:016x} but its bytes give "
                f"{self.computed_checksum:016x} (corrupted in transfer or on disk)",
                self._base + pos - 8,
            )
        if self._strict_end:
            extra = self._end - pos
            while not extra and not self._eof:
                more = self._src.read(self._chunk)
                if not more:
                    self._eof = True
                extra = len(more)
            if extra:
                raise RdbError("unexpected bytes after the RDB checksum", self._base + pos)
        self.size = self._base + pos
