"""A small RESP2 client on a raw socket (TLS optional): enough for INFO, AUTH, SYNC and pipelines.

The replication protocol needs the socket itself (the RDB arrives as a raw payload after
``SYNC``), so the engine speaks RESP directly instead of going through a client library.
Connection problems become :class:`ConnectionFailedError`, refused credentials
:class:`AuthenticationError`, both naming the target by ``target.label``. The password is
sent once, in ``AUTH``, and never appears in a message or a log record.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    ConnectionFailedError,
)

_RECV = 1 << 20


class RespError(Exception):
    """An error reply from the server (``-ERR ...``, ``-NOPERM ...``); ``code`` is its first word."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = message.split(" ", 1)[0].upper() if message else "ERR"


def encode_command(*args: Any) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n" % len(a))
        out.append(a)
        out.append(b"\r\n")
    return b"".join(out)


class Connection:
    """One connection to a Redis server; use :func:`connect` to open and authenticate it."""

    def __init__(self, target: RedisTarget, sock: socket.socket) -> None:
        self.target = target
        self.sock = sock
        self._buf = b""
        self._pos = 0

    # ------------------------------------------------------------------ sending

    def send(self, *commands: tuple[Any, ...]) -> None:
        """Send one or more commands in one write (a pipeline)."""
        self.sendall(b"".join(encode_command(*c) for c in commands))

    def sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._lost(exc) from None

    def call(self, *args: Any) -> Any:
        """Send one command and return its reply; an error reply raises :class:`RespError`."""
        reply = self.call_nothrow(*args)
        if isinstance(reply, RespError):
            raise reply
        return reply

    def call_nothrow(self, *args: Any) -> Any:
        """Send one command and return its reply, error replies as :class:`RespError` values."""
        self.send(args)
        return self.read_reply()

    # ------------------------------------------------------------------ receiving

    def read_some(self, n: int = _RECV) -> bytes:
        """Up to ``n`` bytes: buffered ones first, else one ``recv``; b"" when the server closed."""
        if self._pos < len(self._buf):
            data = self._buf[self._pos : self._pos + n]
            self._pos += len(data)
            return data
        return self._recv(n)

    def _recv(self, n: int = _RECV) -> bytes:
        try:
            return self.sock.recv(n)
        except OSError as exc:
            raise self._lost(exc) from None

    def _fill(self) -> None:
        """Append one ``recv`` to the buffer (dropping what was consumed)."""
        data = self._recv()
        if not data:
            raise ConnectionFailedError(
                f"{self.target.label} closed the connection",
                hint="check the server log (maxclients, timeouts, a restart)",
            )
        if self._pos:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        else:
            self._buf += data

    def read_line(self) -> bytes:
        """One line without its CRLF (for replies and the SYNC preamble)."""
        while True:
            i = self._buf.find(b"\r\n", self._pos)
            if i >= 0:
                line = self._buf[self._pos : i]
                self._pos = i + 2
                return line
            self._fill()

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            self._fill()
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

    def skip_newlines(self) -> None:
        """Skip the bare ``\\n`` keep-alives a master sends while it prepares an RDB."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] == 0x0A:
                self._pos += 1
            if self._pos < len(self._buf):
                return
            self._fill()

    def read_reply(self) -> Any:
        """The next reply: str/int/bytes/None/list, or a :class:`RespError` instance (not raised)."""
        line = self.read_line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.read_exact(n + 2)
            return data[:-2]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RespError(rest.decode("utf-8", "replace"))
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise ConnectionFailedError(
            f"{self.target.label} sent an unexpected reply {line[:40]!r}",
            hint="is this port a Redis server (and not, e.g., a TLS port spoken to in plain text)?",
        )

    def read_int(self) -> int | RespError:
        """An integer reply (or the error reply)."""
        line = self.read_line()
        if line[:1] == b":":
            return int(line[1:])
        if line[:1] == b"-":
            return RespError(line[1:].decode("utf-8", "replace"))
        raise ConnectionFailedError(
            f"{self.target.label} sent {line[:40]!r} where an integer reply was expected",
            hint="the connection is out of step; retry the capture",
        )

    def read_bulk_header(self) -> int | RespError | None:
        """The header of a bulk reply: its length, None for nil, or the error reply."""
        line = self.read_line()
        if line[:1] == b"$":
            n = int(line[1:])
            return None if n < 0 else n
        if line[:1] == b"-":
            return RespError(line[1:].decode("utf-8", "replace"))
        raise ConnectionFailedError(
            f"{self.target.label} sent {line[:40]!r} where a bulk reply was expected",
            hint="the connection is out of step; retry the capture",
        )

    def copy_bulk(self, n: int, write: Callable[[bytes], Any]) -> bytes:
        """Copy the ``n`` bytes of a bulk body to ``write`` piece by piece; return its first bytes."""
        head = b""
        left = n
        while left:
            if self._pos >= len(self._buf):
                self._buf, self._pos = self._recv(), 0
                if not self._buf:
                    raise ConnectionFailedError(
                        f"{self.target.label} closed the connection mid-reply",
                        hint="check the server log; retry the capture",
                    )
            piece = self._buf[self._pos : self._pos + left]
            self._pos += len(piece)
            left -= len(piece)
            if len(head) < 16:
                head += piece[:16]
            write(piece)
        if self.read_exact(2) != b"\r\n":
            raise ConnectionFailedError(
                f"{self.target.label}: a bulk reply is not followed by CRLF",
                hint="the connection is out of step; retry the capture",
            )
        return head

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _lost(self, exc: OSError) -> ConnectionFailedError:
        if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
            return _handshake_error(self.target, exc, after=True)  # TLS 1.3 refuses a client certificate here
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return ConnectionFailedError(
                f"{self.target.label} did not answer within {self.target.socket_timeout:g}s",
                hint="the server may be overloaded or blocked; raise socket_timeout on the target if it is just slow",
            )
        return ConnectionFailedError(
            f"lost the connection to {self.target.label}: {exc.strerror or exc}",
            hint="check the server log (restarts, maxclients, client-output-buffer-limit)",
        )


def tls_context(target: RedisTarget) -> ssl.SSLContext:
    """The client TLS context of ``target``, built the way redis-py builds it from the same options."""
    ctx = ssl.create_default_context()
    mode = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}[target.ssl_cert_reqs]
    ctx.check_hostname = target.ssl_check_hostname and mode != ssl.CERT_NONE
    ctx.verify_mode = mode
    for option, path in (
        ("ssl_certfile", target.ssl_certfile),
        ("ssl_keyfile", target.ssl_keyfile),
        ("ssl_ca_certs", target.ssl_ca_certs),
    ):
        if path and not os.path.isfile(path):
            raise ConnectionFailedError(
                f"{target.label}: {option} file {path!r} does not exist",
                hint=f"set {option} of the connection to a readable PEM file",
            )
    try:
        if target.ssl_certfile:
            ctx.load_cert_chain(certfile=target.ssl_certfile, keyfile=target.ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionFailedError(
            f"{target.label}: cannot load the client certificate {target.ssl_certfile!r}"
            f"{f' with key {target.ssl_keyfile!r}' if target.ssl_keyfile else ''}: {exc}",
            hint="ssl_certfile must be a PEM certificate and ssl_keyfile its unencrypted PEM private key",
        ) from None
    try:
        if target.ssl_ca_certs:
            ctx.load_verify_locations(cafile=target.ssl_ca_certs)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionFailedError(
            f"{target.label}: cannot load the CA file {target.ssl_ca_certs!r}: {exc}",
            hint="ssl_ca_certs must hold PEM certificates",
        ) from None
    return ctx


def _handshake_error(target: RedisTarget, exc: BaseException, *, after: bool = False) -> ConnectionFailedError:
    """The error for a failed TLS handshake (``after``: a TLS alert received once it had completed)."""
    ca = repr(target.ssl_ca_certs) if target.ssl_ca_certs else "the system CA store"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
            hint = (
                f"connect by a name the server's certificate lists (not {target.host!r}), "
                "or set ssl_check_hostname to false"
            )
        else:
            hint = "set ssl_ca_certs to the CA that signed the server's certificate"
        return ConnectionFailedError(
            f"TLS handshake with {target.label} failed: the server's certificate was not accepted ({reason}); "
            f"verified against {ca}",
            hint=hint,
        )
    text = str(exc)
    if "certificate required" in text.lower() or "alert_certificate_required" in text.lower():
        return ConnectionFailedError(
            f"TLS handshake with {target.label} failed: the server requires a client certificate ({text})",
            hint="set ssl_certfile and ssl_keyfile of the connection",
        )
    return ConnectionFailedError(
        f"TLS {'error on the connection to' if after else 'handshake with'} {target.label}"
        f"{'' if after else ' failed'}: {text or type(exc).__name__}",
        hint="check that the port speaks TLS (tls-port), and ssl_ca_certs / ssl_certfile / ssl_keyfile "
        "of the connection",
    )


def _probe_plaintext(conn: Connection, timeout: float) -> None:
    """Before a password goes out unencrypted, check with ``PING`` that the port speaks plain RESP."""
    conn.sock.settimeout(min(timeout, 10.0))
    try:
        conn.send(("PING",))
        conn.read_reply()
    except ConnectionFailedError as exc:
        raise ConnectionFailedError(
            f"{conn.target.label} did not answer PING in plain text ({exc.message}); the password was not sent",
            hint="if the server listens with TLS (tls-port), use a rediss connection (or extra ssl: true) "
            "with ssl_ca_certs",
        ) from None
    finally:
        conn.sock.settimeout(timeout)


def connect(target: RedisTarget, *, timeout: float | None = None) -> Connection:
    """Open a connection (TLS when ``target.ssl``) and authenticate it.

    Without TLS, a ``PING`` goes first: a port that answers it with no RESP reply (a TLS port)
    fails before the password is sent. Over TLS, the first reply is read here, where a refused
    client certificate shows.
    """
    timeout = target.socket_timeout if timeout is None else timeout
    ctx = tls_context(target) if target.ssl else None
    try:
        sock = socket.create_connection((target.host, target.port), timeout=min(timeout, 30.0))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConnectionFailedError(
            f"cannot connect to {target.label}: {reason}",
            hint="check the host and port of the connection, that the server runs and that no firewall blocks it",
        ) from None
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname=target.host)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise _handshake_error(target, exc) from None
    conn = Connection(target, sock)
    try:
        if ctx is None and target.password:
            _probe_plaintext(conn, timeout)
        try:
            reply = _first_exchange(conn, tls=ctx is not None)
        except ConnectionFailedError as exc:
            if ctx is None or "client certificate" in exc.message:
                raise
            raise _closed_after_handshake(target, exc) from None
        if target.password and isinstance(reply, RespError) and not _no_password_set(reply):
            raise AuthenticationError(
                f"{target.label} refused the credentials: {_redact(reply.message, target)}",
                hint="check the user name and password of the connection (and that the ACL user is enabled)",
            )
    except BaseException:
        conn.close()
        raise
    return conn


def _first_exchange(conn: Connection, *, tls: bool) -> Any:
    """``AUTH`` (with a password) or, over TLS, ``PING``: a TLS server that refuses the client's
    certificate says so only once the handshake is over, at the first reply."""
    target = conn.target
    if target.password:
        conn.send(("AUTH", target.username, target.password) if target.username else ("AUTH", target.password))
    elif tls:
        conn.send(("PING",))
    else:
        return None
    return conn.read_reply()


def _closed_after_handshake(target: RedisTarget, exc: ConnectionFailedError) -> ConnectionFailedError:
    if target.ssl_certfile:
        hint = (
            f"the server may refuse the client certificate {target.ssl_certfile!r}: it must be signed by "
            "the server's tls-ca-cert-file"
        )
    else:
        hint = (
            "the server may require a client certificate (tls-auth-clients yes): set ssl_certfile and "
            "ssl_keyfile of the connection"
        )
    return ConnectionFailedError(
        f"{target.label} ended the TLS connection right after the handshake ({exc.message})", hint=hint
    )


def _no_password_set(err: RespError) -> bool:
    """The server has no password at all (AUTH is then harmless): 6.0+ and older wordings."""
    text = err.message.lower()
    return "without any password configured" in text or "no password is set" in text


def auth_required_error(target: RedisTarget, err: RespError) -> AuthenticationError:
    return AuthenticationError(
        f"{target.label} requires authentication: {_redact(err.message, target)}",
        hint="set the password (and user) on the connection",
    )


def _redact(message: str, target: RedisTarget) -> str:
    """Belt and braces: a server never echoes the password, but make sure of it."""
    if target.password and target.password in message:
        message = message.replace(target.password, "***")
    return message


def server_info(target: RedisTarget, section: str = "server") -> dict[str, str]:
    """``INFO <section>`` as a dict (e.g. ``redis_version``); also a connectivity check."""
    with connect(target) as conn:
        return info(conn, section)


def info(conn: Connection, section: str = "server") -> dict[str, str]:
    reply = conn.call_nothrow("INFO", section)
    if isinstance(reply, RespError):
        if reply.code == "NOAUTH":
            raise auth_required_error(conn.target, reply)
        raise AuthenticationError(
            f"{conn.target.label} refused INFO {section}: {reply.message}",
            hint="grant the ACL user +info (it is needed to read the server version)",
        )
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out
