"""A local relay that logs a client tool in to PostgreSQL with a password it cannot be given.

libpq reads passwords only from its connection string (argv), ``PGPASSWORD`` (the
environment) or a passfile, whose line syntax cannot hold a line break. For such a password
pg_dump and pg_restore connect instead to this relay, on a Unix socket in a private 0700
directory. For each connection the relay:

1. answers the tool's SSL request with "no" (the tool's side never leaves this machine);
2. reads its startup message (only the target's own user is served, only to this OS user);
3. opens the real connection, with TLS per ``sslmode`` and the other libpq TLS options;
4. sends the startup message, and answers the server's password challenge itself
   (SCRAM-SHA-256, md5 or cleartext, as libpq would), in this process;
5. hands the server's ``AuthenticationOk`` to the tool and copies bytes both ways.

Cancel requests are forwarded. ``sslmode=allow`` behaves as ``prefer``; channel binding and
GSSAPI are not offered (``channel_binding=require`` is refused).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import ssl
import stringprep
import struct
import tempfile
import threading
import unicodedata
from pathlib import Path
from typing import Any

from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import ConnectionFailedError, EngineError

_SSL_REQUEST, _GSSENC_REQUEST, _CANCEL_REQUEST, _PROTOCOL_3 = 80877103, 80877104, 80877102, 196608
_RELAY_PORT = 5432
_CHUNK = 256 * 1024
_PROTOCOLS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


class _Refused(Exception):
    """The relay cannot serve a connection; ``sqlstate`` goes into the tool's error message."""

    def __init__(self, message: str, hint: str, sqlstate: str = "08006") -> None:
        super().__init__(message)
        self.message, self.hint, self.sqlstate = message, hint, sqlstate


# --------------------------------------------------------------------------- authentication


def saslprep(password: str) -> bytes:
    """The bytes SCRAM hashes: SASLprep (RFC 4013) of the password, or the raw bytes when the
    password is not a valid SASLprep string (what libpq and the server both do)."""
    raw = password.encode("utf-8")
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c))
    text = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_a1,
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    if not text or any(check(c) for c in text for check in prohibited):
        return raw
    if any(stringprep.in_table_d1(c) for c in text) and (
        any(stringprep.in_table_d2(c) for c in text)
        or not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1]))
    ):
        return raw
    return text.encode("utf-8")


class Scram:
    """The client side of SCRAM-SHA-256 without channel binding (RFC 5802, 7677)."""

    def __init__(self, password: str, *, nonce: str | None = None, username: str = "") -> None:
        self.password = saslprep(password)
        self.nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n={username},r={self.nonce}"  # PostgreSQL: empty, the user is in the startup message
        self.server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self.first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(","))
        if not attrs.get("r", "").startswith(self.nonce) or "s" not in attrs or "i" not in attrs:
            raise _Refused("the server's SCRAM challenge is malformed", "check the server", "08P01")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = hmac.digest(hmac.digest(salted, b"Server Key", "sha256"), message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check(self, server_final: bytes) -> None:
        attrs = dict(part.split("=", 1) for part in server_final.decode().split(",") if "=" in part)
        if "e" in attrs:
            raise _Refused(f"SCRAM authentication failed: {attrs['e']}", "check the password", "28P01")
        if not hmac.compare_digest(base64.b64decode(attrs.get("v", "")), self.server_signature):
            raise _Refused(
                "the server's SCRAM signature is wrong: it does not know the password",
                "check that host and port reach the intended server",
                "28000",
            )


def md5_response(password: str, user: str, salt: bytes) -> bytes:
    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()


# --------------------------------------------------------------------------- TLS


def _home_file(name: str) -> str:
    return str(Path.home() / ".postgresql" / name)


def tls_context(target: PostgresTarget) -> tuple[ssl.SSLContext | None, bool]:
    """``(context, required)`` for the server connection, following libpq's reading of the options."""
    mode = target.sslmode or "prefer"
    opts = target.ssl
    if mode == "disable":
        return None, False
    if opts.get("channel_binding") == "require":
        raise _Refused(
            "channel_binding=require is not available for a password with a line break",
            "set channel_binding=prefer, or change the password",
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    root = opts.get("sslrootcert") or _home_file("root.crt")
    if root == "system":
        ctx.load_default_certs()
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif os.path.exists(root):
        ctx.load_verify_locations(cafile=root)  # libpq verifies whenever the root file exists
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif mode in ("verify-ca", "verify-full"):
        raise _Refused(
            f'root certificate file "{root}" does not exist',
            "set sslrootcert to the CA certificate that signed the server's certificate",
        )
    ctx.check_hostname = mode == "verify-full"
    crl = opts.get("sslcrl") or (_home_file("root.crl") if os.path.exists(_home_file("root.crl")) else None)
    if crl or opts.get("sslcrldir"):
        ctx.load_verify_locations(cafile=crl, capath=opts.get("sslcrldir"))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    cert = opts.get("sslcert") or _home_file("postgresql.crt")
    if opts.get("sslcertmode") != "disable" and os.path.exists(cert):
        ctx.load_cert_chain(cert, opts.get("sslkey") or _home_file("postgresql.key"), password=opts.get("sslpassword"))
    ctx.minimum_version = _PROTOCOLS.get(opts.get("ssl_min_protocol_version", "TLSv1.2"), ssl.TLSVersion.TLSv1_2)
    if opts.get("ssl_max_protocol_version") in _PROTOCOLS:
        ctx.maximum_version = _PROTOCOLS[opts["ssl_max_protocol_version"]]
    if opts.get("sslnegotiation") == "direct":
        ctx.set_alpn_protocols(["postgresql"])
    return ctx, mode in ("require", "verify-ca", "verify-full")


# --------------------------------------------------------------------------- protocol


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    """A startup-phase packet (length-prefixed, no type byte), length included."""
    head = await reader.readexactly(4)
    (size,) = struct.unpack("!I", head)
    if not 8 <= size <= 10000:
        raise _Refused(f"invalid startup packet length {size}", "the client is not a PostgreSQL client", "08P01")
    return head + await reader.readexactly(size - 4)


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    kind = await reader.readexactly(1)
    (size,) = struct.unpack("!I", await reader.readexactly(4))
    return kind, await reader.readexactly(size - 4)


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _error_response(message: str, hint: str, sqlstate: str) -> bytes:
    fields = [b"SFATAL", b"VFATAL", b"C" + sqlstate.encode(), b"M" + message.encode(), b"H" + hint.encode()]
    return _message(b"E", b"\0".join(fields) + b"\0\0")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


# --------------------------------------------------------------------------- the relay


def _same_user(sock: socket.socket | None) -> bool:
    """The peer of a relay connection runs as this OS user (where the platform tells)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return True  # the socket's private directory already keeps other users out
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return bool(uid == os.geteuid())


class AuthRelay:
    """The relay for one client tool run; use as a context manager (see the module docstring)."""

    def __init__(self, target: PostgresTarget) -> None:
        self.target = target
        self.directory = ""
        self.errors: list[_Refused] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- lifecycle

    def __enter__(self) -> AuthRelay:
        parent = None if len(tempfile.gettempdir()) < 60 else "/tmp"
        self.directory = tempfile.mkdtemp(prefix="ckpt-pgrelay-", dir=parent)
        os.chmod(self.directory, 0o700)
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True, name="pg-auth-relay")
        self._thread.start()
        started.wait(30)
        if self._server is None:
            self.__exit__(None, None, None)
            raise ConnectionFailedError(
                f"{self.target.label}: cannot start the local login relay",
                hint="check that the temporary directory is writable",
            )
        return self

    def _run(self, started: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            path = os.path.join(self.directory, f".s.PGSQL.{_RELAY_PORT}")
            self._server = await asyncio.start_unix_server(self._accept, path=path)
            os.chmod(path, 0o600)

        with contextlib.suppress(Exception):
            self._loop.run_until_complete(serve())
        started.set()
        if self._server is not None:
            self._loop.run_forever()

    def __exit__(self, *exc: Any) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():

            async def shutdown() -> None:
                if self._server is not None:
                    self._server.close()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(30)
        if loop is not None and not loop.is_running():
            loop.close()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def conninfo_parts(self) -> dict[str, object]:
        """What replaces the server's address and TLS options in the tool's conninfo."""
        return {"host": self.directory, "port": _RELAY_PORT, "sslmode": "disable", "gssencmode": "disable"}

    def failure(self) -> EngineError | None:
        if not self.errors:
            return None
        first = self.errors[0]
        return ConnectionFailedError(f"{self.target.label}: {first.message}", hint=first.hint)

    # ---- one connection

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if not _same_user(writer.get_extra_info("socket")):
                return
            packet = await _read_packet(reader)
            while struct.unpack("!I", packet[4:8])[0] in (_SSL_REQUEST, _GSSENC_REQUEST):
                writer.write(b"N")
                await writer.drain()
                packet = await _read_packet(reader)
            code = struct.unpack("!I", packet[4:8])[0]
            if code == _CANCEL_REQUEST:
                _, upstream = await self._open()
                upstream.write(packet)
                await upstream.drain()
                return
            if code != _PROTOCOL_3:
                raise _Refused(
                    f"unsupported protocol {code >> 16}.{code & 0xFFFF}", "use a PostgreSQL 7.4+ client", "08P01"
                )
            items = packet[8:].split(b"\0")
            params = dict(zip(items[0::2], items[1::2], strict=False))
            if params.get(b"user", b"").decode("utf-8", "replace") != self.target.user:
                raise _Refused("this relay logs in only as the connection's user", "connect as that user", "28000")
            up_reader, upstream = await self._open()
            upstream.write(packet)
            await upstream.drain()
            if await self._authenticate(up_reader, upstream, writer):
                await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except _Refused as exc:
            self.errors.append(exc)
            with contextlib.suppress(Exception):
                writer.write(_error_response(f"{self.target.label}: {exc.message}", exc.hint, exc.sqlstate))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The server connection, TLS negotiated."""
        t = self.target
        timeout = float(t.connect_timeout or 60)
        try:
            ctx, required = tls_context(t)
        except (OSError, ssl.SSLError) as exc:
            raise _Refused(
                f"cannot load the TLS files of the connection: {exc}",
                "check sslcert, sslkey, sslrootcert and sslcrl of the connection",
            ) from None
        host = t.host
        try:
            if host.startswith("/"):
                return await asyncio.wait_for(
                    asyncio.open_unix_connection(os.path.join(host, f".s.PGSQL.{t.port}")), timeout
                )
            server_name = host if t.ssl.get("sslsni", "1") != "0" or (ctx and ctx.check_hostname) else None
            if ctx is not None and t.ssl.get("sslnegotiation") == "direct":
                return await asyncio.wait_for(
                    asyncio.open_connection(host, t.port, ssl=ctx, server_hostname=server_name), timeout
                )
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, t.port), timeout)
            if ctx is None:
                return reader, writer
            writer.write(struct.pack("!II", 8, _SSL_REQUEST))
            await writer.drain()
            answer = await reader.readexactly(1)
            if answer == b"S":
                await asyncio.wait_for(writer.start_tls(ctx, server_hostname=server_name), timeout)
                return reader, writer
            writer.close()
            if required:
                raise _Refused(
                    "server does not support SSL, but SSL was required", "enable ssl on the server, or lower sslmode"
                )
            return await asyncio.wait_for(asyncio.open_connection(host, t.port), timeout)
        except ssl.SSLCertVerificationError as exc:
            root = t.ssl.get("sslrootcert") or _home_file("root.crt")
            raise _Refused(
                f"SSL error: certificate verify failed: {exc.verify_message} (sslrootcert={root!r})",
                "set sslrootcert to the CA certificate that signed the server's certificate",
            ) from None
        except (TimeoutError, ssl.SSLError, OSError) as exc:
            raise _Refused(
                f"cannot connect to the server: {exc or type(exc).__name__}",
                "check host and port of the connection and its TLS settings",
            ) from None

    async def _authenticate(
        self, up: asyncio.StreamReader, upw: asyncio.StreamWriter, client: asyncio.StreamWriter
    ) -> bool:
        """Answer the server's challenges; True once ``AuthenticationOk`` was handed to the tool."""
        password = self.target.password or ""
        scram: Scram | None = None
        while True:
            kind, body = await _read_message(up)
            if kind in (b"E", b"N", b"v"):  # errors, notices and protocol negotiation go to the tool
                client.write(_message(kind, body))
                await client.drain()
                if kind == b"E":
                    return False
                continue
            if kind != b"R":
                raise _Refused(f"unexpected message {kind!r} during login", "check the server", "08P01")
            (code,) = struct.unpack("!I", body[:4])
            if code == 0:
                client.write(_message(kind, body))
                await client.drain()
                return True
            if code == 3:
                reply = password.encode() + b"\0"
            elif code == 5:
                reply = md5_response(password, self.target.user, body[4:8]) + b"\0"
            elif code == 10:
                if b"SCRAM-SHA-256" not in body[4:].split(b"\0"):
                    raise _Refused(
                        "the server offers no SASL mechanism the relay speaks",
                        "allow SCRAM-SHA-256 for this user",
                        "28000",
                    )
                scram = Scram(password)
                first = scram.first()
                reply = b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first
            elif code == 11 and scram is not None:
                reply = scram.final(body[4:])
            elif code == 12 and scram is not None:
                scram.check(body[4:])
                continue
            else:
                raise _Refused(
                    f"the server asks for an authentication method the relay does not speak ({code})",
                    "use password (SCRAM-SHA-256 or md5) authentication for this user",
                    "28000",
                )
            upw.write(_message(b"p", reply))
            await upw.drain()
