"""TLS material and TLS servers for the integration tests.

* :class:`Pki`: a throwaway certificate authority (the ``cryptography`` package) issuing
  server and client certificates;
* :func:`redis_tls_server`: Debian's redis-server listening only on a TLS port;
* :func:`postgres_tls_server`, :func:`enable_postgres_ssl`: a cluster started by
  ``scripts/services.py`` that accepts only TLS connections (``hostssl``), password or
  client-certificate logins;
* :func:`recording_tool`: a wrapper recording a client tool's argv and environment;
* :class:`WireTap`: a TCP forwarder that records every byte, to prove what went over the wire.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Pki:
    """A certificate authority in ``directory`` (``ca.pem``), issuing leaf certificates."""

    def __init__(self, directory: Path, name: str = "checkpoint test CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now)
            .not_valid_after(self._now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca = str(self.directory / "ca.pem")
        Path(self.ca).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        common_name: str | None = None,
        client: bool = False,
        hosts: tuple[str, ...] = (HOST, "localhost"),
        key_password: bytes | None = None,
    ) -> tuple[str, str]:
        """``(certificate, key)`` paths (key 0600, encrypted with ``key_password`` if given) of a
        server (SANs ``hosts``) or client certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now)
            .not_valid_after(self._now + datetime.timedelta(days=2))
        )
        if client:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        else:
            names: list[x509.GeneralName] = []
            for h in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    names.append(x509.DNSName(h))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(key_password)
                    if key_password
                    else serialization.NoEncryption(),
                )
            )
        return str(cert_path), str(key_path)


# --------------------------------------------------------------------------- Redis


@contextlib.contextmanager
def redis_tls_server(
    directory: Path, pki: Pki, *, auth_clients: str = "no", hosts: tuple[str, ...] = (HOST, "localhost")
) -> Iterator[dict[str, Any]]:
    """A redis-server with ``port 0`` (no plain text) and a TLS port, its certificate naming
    ``hosts``; yields its info.

    The info has ``host``, ``port``, ``password``, ``ca`` and ``tls`` (redis-py keyword
    arguments, with a client certificate), so ``scripts/sample_data.py`` can seed and read it.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (scripts/bootstrap.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = pki.issue("redis-server", hosts=hosts)
    client_cert, client_key = pki.issue("redis-client", client=True)
    password = secrets.token_hex(16)
    port = free_port()
    conf = directory / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the password
    with os.fdopen(fd, "w") as fh:
        fh.write(
            f"port 0\ntls-port {port}\nbind {HOST}\ntls-cert-file {cert}\ntls-key-file {key}\n"
            f"tls-ca-cert-file {pki.ca}\ntls-auth-clients {auth_clients}\nrequirepass {password}\n"
            f'save ""\nappendonly no\ndir {directory}\nrepl-diskless-sync-delay 0\ndatabases 16\n'
        )
    log = open(directory / "redis.log", "wb")
    proc = subprocess.Popen([exe, str(conf)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    tls = {
        "ssl": True,
        "ssl_ca_certs": pki.ca,
        "ssl_certfile": client_cert,
        "ssl_keyfile": client_key,
        "ssl_check_hostname": HOST in hosts,
    }
    info = {
        "host": HOST,
        "port": port,
        "password": password,
        "ca": pki.ca,
        "tls": tls,
        "client_cert": client_cert,
        "client_key": client_key,
        "pid": proc.pid,
    }
    try:
        client = redis.Redis(host=HOST, port=port, password=password, **tls)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start with TLS: {(directory / 'redis.log').read_text()[-2000:]}")
                time.sleep(0.1)
        client.close()
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def postgres_tls_server(
    services_module: Any, pki: Pki, methods: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """A private cluster (``scripts/services.py``) with ssl on; see :func:`enable_postgres_ssl`."""
    # outside pytest's base temp dir, which concurrent sessions may prune: the server lives there
    state = Path(tempfile.mkdtemp(prefix="ckpt-pgtls-"))
    try:
        info = services_module.start(state, only=["postgres"])["postgres"]
        for user, method in (methods or {}).items():
            if method == "cert":
                psql(info, f"CREATE ROLE {user} LOGIN SUPERUSER")
        enable_postgres_ssl(info, pki, methods)
        yield info
    finally:
        services_module.stop(state)
        shutil.rmtree(state, ignore_errors=True)


def enable_postgres_ssl(pg: dict[str, Any], pki: Pki, methods: dict[str, str] | None = None) -> None:
    """Switch ``ssl`` on and accept TCP logins only over TLS: SCRAM, or ``methods[user]`` (e.g.
    ``cert``: the client certificate of that name, or ``md5``)."""
    data = Path(pg["data_dir"])
    cert, key = pki.issue("postgres-server")
    for src, name in ((cert, "server.crt"), (key, "server.key"), (pki.ca, "client-ca.crt")):
        dest = data / name
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o600)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(pg["superuser"])
            os.chown(dest, pw.pw_uid, pw.pw_gid)
    with open(data / "postgresql.conf", "a", encoding="utf-8") as fh:
        fh.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'client-ca.crt'\n")
    hba = [f"local all {pg['superuser']} trust", "local all all scram-sha-256"]
    hba += [f"hostssl all {user} {HOST}/32 {method}" for user, method in (methods or {}).items()]
    hba += [f"hostssl all all {HOST}/32 scram-sha-256", f"hostnossl all all {HOST}/32 reject"]
    (data / "pg_hba.conf").write_text("\n".join(hba) + "\n")
    psql(pg, "SELECT pg_catalog.pg_reload_conf()")
    deadline = time.monotonic() + 20
    while psql(pg, "SHOW ssl").strip() != "on":
        assert time.monotonic() < deadline, "the server did not switch ssl on"
        time.sleep(0.2)


def psql(pg: dict[str, Any], sql: str) -> str:
    """Run ``sql`` as the superuser over the Unix socket; returns the unaligned output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    out = subprocess.run(
        [
            str(Path(pg["bin_dir"]) / "psql"),
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            pg["socket_dir"],
            "-p",
            str(pg["port"]),
            "-U",
            pg["superuser"],
            "-d",
            "postgres",
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def recording_tool(directory: Path, real: str) -> Path:
    """A wrapper of the client tool ``real`` that writes each run's argv and environment
    (NUL-separated) to ``directory/runs/<pid>.argv`` and ``.env``, then becomes the tool."""
    runs = directory / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    script = directory / Path(real).name
    script.write_text(
        f'#!/bin/sh\nrun="{runs}/$$"\nprintf \'%s\\0\' "$@" > "$run.argv"\nenv -0 > "$run.env"\n'
        f'exec {shlex.quote(real)} "$@"\n'
    )
    script.chmod(0o755)
    return script


def recorded_runs(directory: Path) -> list[bytes]:
    """The argv and environment of every run of the tools wrapped by :func:`recording_tool`."""
    return [p.read_bytes() for p in sorted((directory / "runs").iterdir())]


# --------------------------------------------------------------------------- wire


class WireTap:
    """Forwards ``127.0.0.1:<port>`` to ``host:port`` and records the bytes each way."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.sent = bytearray()  #: client -> server
        self.received = bytearray()  #: server -> client
        self.starts: list[bytes] = []  #: the first two bytes each connection sent
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for a, b, buf in ((client, server, self.sent), (server, client, self.received)):
                threading.Thread(target=self._copy, args=(a, b, buf), daemon=True).start()

    def _copy(self, src: socket.socket, dst: socket.socket, buf: bytearray) -> None:
        first = buf is self.sent
        try:
            while data := src.recv(65536):
                with self._lock:
                    if first:
                        self.starts.append(data[:2])
                        first = False
                    buf += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
