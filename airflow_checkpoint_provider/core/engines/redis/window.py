"""The sliding window :class:`~.rdb.RdbParser` reads through: buffer, CRC64 and byte retention.

The parser decodes headers straight out of ``_buf`` (a ``bytes`` object) at integer positions,
which is what makes the walk fast. This class keeps that window filled from the source:

* ``_more(pos)`` guarantees at least ``_HDR`` bytes at ``pos`` (unless the stream ends), first
  consuming from the source any gap when a skip jumped past the buffer (``_spill``): values
  larger than the window are skipped without ever being held in memory;
* every byte leaves the window through ``_consume``, which feeds the running CRC64, a
  :class:`DbFilter` if one is attached, and, while ``_keep`` is set, retains the bytes
  (to return a key or a value to :meth:`RdbParser.records`);
* positions are relative to the window; ``_base + pos`` is the offset in the stream.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from .encoding import RdbError, crc64, decode_length, decode_string

CHUNK = 1 << 20
_HDR = 64  # bytes guaranteed in the buffer before any header is decoded inline
_INT_SKIP = {0xC0: 2, 0xC1: 3, 0xC2: 5}  # integer-encoded strings: header byte + 1, 2 or 4 bytes


class DbFilter:
    """Copy an RDB to ``out`` as the parser consumes it, leaving out the dbs in ``exclude``.

    A db's section runs from its ``SELECTDB`` opcode to the next ``SELECTDB`` or global opcode
    (``AUX``, ``FUNCTION2``, ``MODULE_AUX``, ``EOF``); the parser reports those offsets
    (:meth:`cut`) before the bytes they start leave its window (:meth:`feed`). :meth:`finish`
    writes the CRC64 of what was copied, in place of the original's. The parser still checks the
    original CRC64, and its fingerprints count only what was copied.
    """

    def __init__(self, out: Any, exclude: Any) -> None:
        self.out, self.exclude = out, frozenset(exclude)
        self.include = True
        self.crc = 0
        self.written = self.dropped = 0
        self.excluded_types = [0] * 256
        self.excluded_modules: dict[str, int] = {}
        self._cuts: deque[tuple[int, bool]] = deque()
        self._types = [0] * 256
        self._modules: dict[str, int] = {}

    def cut(self, offset: int, db: int | None) -> None:
        """From stream offset ``offset`` on, bytes belong to ``db`` (None: to no db)."""
        self._cuts.append((offset, db is None or db not in self.exclude))

    def feed(self, view: memoryview, start: int) -> None:
        """The bytes at stream offsets ``start ..`` are leaving the parser's window."""
        i, cuts = 0, self._cuts
        while cuts and cuts[0][0] < start + len(view):
            offset, include = cuts.popleft()
            j = max(0, offset - start)
            if j > i:
                self._emit(view[i:j])
                i = j
            self.include = include
        if i < len(view):
            self._emit(view[i:] if i else view)

    def _emit(self, piece: memoryview) -> None:
        if self.include:
            self.crc = crc64(piece, self.crc)
            self.out(piece)
            self.written += len(piece)
        else:
            self.dropped += len(piece)

    def section(self, db: int, types: list[int], modules: dict[str, int]) -> None:
        """The section of ``db`` ended with these running type counts: book it if left out."""
        if db in self.exclude:
            for t, (now, before) in enumerate(zip(types, self._types, strict=True)):
                self.excluded_types[t] += now - before
            for name, n in modules.items():
                self.excluded_modules[name] = self.excluded_modules.get(name, 0) + n - self._modules.get(name, 0)
        self._types, self._modules = list(types), dict(modules)

    def finish(self) -> None:
        self.out(self.crc.to_bytes(8, "little"))
        self.written += 8


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class RdbWindow:
    """Buffer management shared by the parsing code; see the module docstring."""

    def __init__(self, src: Readable, chunk_size: int = CHUNK) -> None:
        self._src = src
        self._chunk = chunk_size
        self._buf = b""
        self._end = 0
        self._base = 0  # absolute stream offset of _buf[0]
        self._eof = False
        self._crc = 0
        self._crc_from = 0  # CRC covers the stream up to _base + _crc_from
        self._keep = -1  # absolute offset from which consumed bytes are retained (-1: off)
        self._kept: list[bytes] = []
        self._route: DbFilter | None = None  #: a :class:`DbFilter` fed every byte consumed (None: off)
        self.size = 0

    def _len(self, pos: int) -> tuple[int, int]:
        """A length at ``pos`` (refilling first); refuses the string-encoding form."""
        if self._end - pos < _HDR:
            pos = self._more(pos)
        n, encoded, new = decode_length(self._buf, pos)
        if encoded:
            raise RdbError(f"expected a length, found string encoding 0x{self._buf[pos]:02x}", self._base + pos)
        return n, new

    def _str_end(self, pos: int) -> int:
        """Where the string whose header is at ``pos`` ends (may be past the buffer)."""
        buf = self._buf
        n, encoded, pos = decode_length(buf, pos)
        if not encoded:
            return pos + n
        if n < 3:
            return pos + (1, 2, 4)[n]
        if n == 3:  # LZF: compressed length, uncompressed length, data
            clen, _, pos = decode_length(buf, pos)
            _, _, pos = decode_length(buf, pos)
            return pos + clen
        raise RdbError(f"unknown string encoding {n}", self._base + pos - 1)

    def _skip_strings(self, pos: int, n: int) -> int:
        buf, end = self._buf, self._end
        while n > 0:
            if end - pos < 64:
                pos = self._more(pos)
                buf, end = self._buf, self._end
            b = buf[pos]
            if b < 0x40:
                pos += 1 + b
            elif b < 0x80:
                pos += 2 + (((b & 0x3F) << 8) | buf[pos + 1])
            elif 0xC0 <= b <= 0xC2:
                pos += _INT_SKIP[b]
            else:
                pos = self._str_end(pos)
            n -= 1
        return pos

    def _read_string(self, pos: int) -> tuple[bytes, int]:
        """Decode the string at ``pos`` into bytes (LZF and integer encodings included)."""
        if self._end - pos < _HDR:
            pos = self._more(pos)
        self._keep, self._kept = self._base + pos, []
        pos = self._str_end(pos)
        if pos > self._end:
            pos = self._spill(pos)
        raw = self._kept_bytes(pos)
        self._keep, self._kept = -1, []
        return decode_string(raw), pos

    def _kept_bytes(self, pos: int) -> bytes:
        tail = self._buf[self._keep - self._base : pos]
        return b"".join((*self._kept, tail)) if self._kept else bytes(tail)

    def _more(self, pos: int) -> int:
        """Make ``pos`` valid and at least ``_HDR`` bytes available there (unless the stream ends)."""
        if pos > self._end:
            pos = self._spill(pos)
        if self._end - pos < _HDR and not self._eof:
            pos = self._fill(pos)
        return pos

    def _consume(self, upto: int) -> None:
        """Bytes of the buffer before ``upto`` are about to be dropped: CRC (and keep) them."""
        if upto > self._crc_from:
            view = memoryview(self._buf)[self._crc_from : upto]
            self._crc = crc64(view, self._crc)
            if self._route is not None:
                self._route.feed(view, self._base + self._crc_from)
            self._crc_from = upto
        if self._keep >= 0:
            start = self._keep - self._base
            if start < upto:
                self._kept.append(self._buf[start:upto])
                self._keep = self._base + upto

    def _fill(self, pos: int) -> int:
        self._consume(pos)
        pieces = [self._buf[pos:]]
        have = self._end - pos
        while have < _HDR and not self._eof:
            more = self._src.read(self._chunk)
            if not more:
                self._eof = True
                break
            pieces.append(more)
            have += len(more)
        self._buf = b"".join(pieces)
        self._base += pos
        self._end = len(self._buf)
        self._crc_from = 0
        self.size = self._base + self._end
        return 0

    def _spill(self, pos: int) -> int:
        """``pos`` lies past the buffer: consume the gap from the source, keeping memory flat."""
        self._consume(self._end)
        need = pos - self._end
        self._base += self._end
        self._buf, self._end, self._crc_from = b"", 0, 0
        while need > 0:
            more = self._src.read(self._chunk)
            if not more:
                self._eof = True
                raise RdbError(f"the RDB ends {need} bytes before the end of a value (truncated)", self._base)
            self.size = self._base + len(more)
            if len(more) <= need:
                self._buf, self._end = more, len(more)
                self._consume(len(more))
                self._base += len(more)
                self._buf, self._end, self._crc_from = b"", 0, 0
                need -= len(more)
            else:
                self._buf, self._end = more, len(more)
                self._consume(need)
                return need
        return 0
