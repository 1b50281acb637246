"""Pull an RDB over the replication protocol, as ``redis-cli --rdb`` does.

The conversation on a fresh, authenticated connection::

    > REPLCONF capa eof          < +OK            (we understand diskless "$EOF:" framing)
    > REPLCONF rdb-only 1        < +OK or -ERR    (7.0+: send the RDB only, no command stream;
                                                   older servers refuse it, which is fine)
    > SYNC
    < "\\n" "\\n" ...             keep-alives while the server forks / writes the RDB
    < $<len>\\r\\n <len bytes>                          disk-based transfer
    < $EOF:<40-byte mark>\\r\\n <rdb bytes> <mark>       diskless transfer

The header line arrives once the server has forked, i.e. once the point in time is fixed
(``on_header`` is the moment to lift a write pause). :class:`SyncStream` then hands out the
payload with ``read(n)``, stripping the framing, and passes every piece to ``on_data`` on the
way (the staging sink), so the RDB is never held whole. Bytes after the payload (the command
stream of servers without ``rdb-only``) are ignored; the connection is closed afterwards.

An error reply to ``REPLCONF capa`` or ``SYNC`` (ACL ``-NOPERM``, ``unknown command``, the
custom refusals of managed services) or a connection closed before any header raises
:class:`SyncRefused`, which ``mode="auto"`` turns into a logical capture.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from airflow_checkpoint_provider.core.errors import CaptureError, ConnectionFailedError

from .resp import Connection, RespError, auth_required_error

log = logging.getLogger(__name__)

EOF_MARK_LEN = 40
_NOT_REFUSALS = ("LOADING", "BUSY", "NOAUTH")


class SyncRefused(Exception):
    """The server will not replicate to us; ``reply`` is what it said (never contains secrets)."""

    def __init__(self, command: str, reply: str) -> None:
        super().__init__(f"{command}: {reply}")
        self.command = command
        self.reply = reply
        self.noperm = reply.upper().startswith("NOPERM")


def _refusal_or_raise(conn: Connection, command: str, err: RespError) -> SyncRefused:
    if err.code == "NOAUTH":
        raise auth_required_error(conn.target, err)
    if err.code in _NOT_REFUSALS:
        raise CaptureError(
            f"{conn.target.label} cannot serve {command} right now: {err.message}",
            hint="the server is loading or busy; retry the capture later",
        )
    return SyncRefused(command, err.message)


def start_sync(conn: Connection) -> str:
    """Negotiate and send SYNC; return the payload header (``"EOF:<mark>"`` or ``"<len>"``).

    Waits through the keep-alives until the server has forked; raises :class:`SyncRefused`.
    """
    reply = conn.call_nothrow("REPLCONF", "capa", "eof")
    if isinstance(reply, RespError):
        raise _refusal_or_raise(conn, "REPLCONF capa eof", reply)
    reply = conn.call_nothrow("REPLCONF", "rdb-only", "1")
    if isinstance(reply, RespError):
        log.info("%s does not take REPLCONF rdb-only (%s); continuing without it", conn.target.label, reply.message)
    conn.send(("SYNC",))
    try:
        conn.skip_newlines()
        line = conn.read_line()
    except ConnectionFailedError as exc:
        if "closed the connection" in exc.message:
            raise SyncRefused("SYNC", "the server closed the connection instead of sending an RDB") from None
        raise
    if line.startswith(b"-"):
        raise _refusal_or_raise(conn, "SYNC", RespError(line[1:].decode("utf-8", "replace")))
    if not line.startswith(b"$"):
        raise CaptureError(
            f"{conn.target.label} answered SYNC with {line[:60]!r} instead of an RDB header",
            hint="is this a Redis server (not a proxy that rewrites replication)?",
        )
    return line[1:].decode("ascii", "replace")


class SyncStream:
    """The RDB payload after a SYNC header, as a readable stream (see the module docstring)."""

    def __init__(self, conn: Connection, header: str, on_data: Callable[[bytes], Any]) -> None:
        self._conn = conn
        self._on_data = on_data
        self.received = 0
        self.done = False
        if header.startswith("EOF:"):
            mark = header[4:].encode()
            if len(mark) != EOF_MARK_LEN:
                raise CaptureError(
                    f"{conn.target.label} sent an EOF mark of {len(mark)} bytes, not 40",
                    hint="the replication stream is malformed; retry the capture",
                )
            self.framing = "eof"
            self._mark: bytes | None = mark
            self._held = b""
            self.expected: int | None = None
        else:
            try:
                self.expected = int(header)
            except ValueError:
                raise CaptureError(
                    f"{conn.target.label} sent the RDB header {header[:60]!r}",
                    hint="the replication stream is malformed; retry the capture",
                ) from None
            self.framing = "length"
            self._mark = None
            self._left = self.expected

    def read(self, n: int = 1 << 20) -> bytes:
        data = self._read_eof(n) if self._mark is not None else self._read_len(n)
        if data:
            self.received += len(data)
            self._on_data(data)
        return data

    def _read_len(self, n: int) -> bytes:
        if self._left == 0:
            self.done = True
            return b""
        data = self._conn.read_some(min(n, self._left))
        if not data:
            raise self._truncated()
        self._left -= len(data)
        return data

    def _read_eof(self, n: int) -> bytes:
        mark = self._mark
        assert mark is not None
        while not self.done:
            chunk = self._conn.read_some(n)
            if not chunk:
                raise self._truncated()
            data = self._held + chunk
            i = data.find(mark)
            if i >= 0:
                self.done = True
                self._held = b""
                return data[:i]
            if len(data) > EOF_MARK_LEN:
                self._held = data[-EOF_MARK_LEN:]
                return data[:-EOF_MARK_LEN]
            self._held = data
        return b""

    def _truncated(self) -> CaptureError:
        what = (
            f"{self.received} of {self.expected} bytes"
            if self.expected is not None
            else f"{self.received} bytes, before the end-of-RDB mark"
        )
        return CaptureError(
            f"{self._conn.target.label} closed the replication connection after {what}",
            hint="the server may have hit client-output-buffer-limit replica or restarted; check its log and retry",
        )
