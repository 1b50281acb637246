"""Plain connection targets for the engines. Hooks build them from Airflow connections.

Secrets (passwords, API keys) are excluded from ``repr`` and from :meth:`public`, which is
what goes into logs, XCom, manifests and the configuration hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.errors import CheckpointError

#: Redis TLS verification modes, as redis-py and the Airflow Redis provider name them.
SSL_CERT_REQS = ("required", "optional", "none")


#: The libpq TLS options (besides ``sslmode``) a PostgreSQL connection may set; psycopg, pg_dump
#: and pg_restore all get them. ``sslpassword`` is a secret, like the password.
LIBPQ_SSL_OPTIONS = (
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "sslcertmode",
    "sslnegotiation",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "channel_binding",
)
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class PostgresTarget:
    host: str
    port: int = 5432
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    dbname: str = "postgres"  #: database used for catalogue queries (listing databases, version)
    sslmode: str | None = None  #: libpq's sslmode; None leaves libpq's default (``prefer``)
    connect_timeout: int = 10
    #: the other libpq TLS options (:data:`LIBPQ_SSL_OPTIONS`), e.g. ``{"sslrootcert": "/etc/ca.pem"}``
    ssl: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.sslmode is not None and self.sslmode not in SSLMODES:
            raise CheckpointError(
                f"{self.label}: sslmode={self.sslmode!r} is not a libpq sslmode",
                hint=f"use one of {', '.join(SSLMODES)}",
            )
        unknown = sorted(set(self.ssl) - set(LIBPQ_SSL_OPTIONS))
        if unknown:
            raise CheckpointError(
                f"{self.label}: unknown TLS option(s) {', '.join(map(repr, unknown))}",
                hint=f"the libpq TLS options are sslmode, {', '.join(LIBPQ_SSL_OPTIONS)}",
            )
        options = {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in self.ssl.items() if v is not None}
        bad = sorted(k for k, v in options.items() if "\0" in v)
        if bad:
            raise CheckpointError(
                f"{self.label}: TLS option {bad[0]} holds a NUL character",
                hint="fix the value in the connection's extra",
            )
        object.__setattr__(self, "ssl", options)

    @property
    def label(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}"

    def public(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "sslmode": self.sslmode,
            **{k: v for k, v in self.ssl.items() if k != "sslpassword"},
        }


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    ssl: bool = False  #: TLS (a ``rediss`` connection); the options below follow redis-py's
    ssl_ca_certs: str | None = None  #: CA bundle that signed the server's certificate (else the system's)
    ssl_certfile: str | None = None  #: client certificate, for servers with ``tls-auth-clients``
    ssl_keyfile: str | None = None  #: its private key (when not inside ``ssl_certfile``)
    ssl_cert_reqs: str = "required"  #: ``required``, ``optional`` or ``none`` (no verification)
    ssl_check_hostname: bool = True  #: the certificate must name ``host`` (off when ``ssl_cert_reqs=none``)
    socket_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.ssl_cert_reqs not in SSL_CERT_REQS:
            raise CheckpointError(
                f"{self.label}: ssl_cert_reqs={self.ssl_cert_reqs!r} is not a verification mode",
                hint=f"use one of {', '.join(SSL_CERT_REQS)} (required is the default)",
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise CheckpointError(
                f"{self.label}: ssl_keyfile={self.ssl_keyfile!r} is set without ssl_certfile",
                hint="set ssl_certfile to the client certificate that goes with the key",
            )

    @property
    def label(self) -> str:
        scheme = "rediss" if self.ssl else "redis"
        return f"{scheme}://{self.username + '@' if self.username else ''}{self.host}:{self.port}"

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "db": self.db,
            "ssl": self.ssl,
        }
        if self.ssl:
            out.update(
                ssl_cert_reqs=self.ssl_cert_reqs,
                ssl_check_hostname=self.ssl_check_hostname,
                client_certificate=bool(self.ssl_certfile),
            )
        return out


@dataclass(frozen=True)
class SearchTarget:
    url: str  #: e.g. http://127.0.0.1:9200 (scheme, host, port; no credentials)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout: float = 30.0

    @property
    def label(self) -> str:
        return self.url

    def public(self) -> dict[str, Any]:
        return {"url": self.url, "username": self.username, "verify_certs": self.verify_certs}
