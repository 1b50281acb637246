"""Plain connection targets for the engines. Hooks build them from Airflow connections.

Secrets (passwords, API keys) are excluded from ``repr`` and from :meth:`public`, which is
what goes into logs, XCom, manifests and the configuration hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PostgresTarget:
    host: str
    port: int = 5432
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    dbname: str = "postgres"  #: database used for catalogue queries (listing databases, version)
    sslmode: str | None = None
    connect_timeout: int = 10

    @property
    def label(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}"

    def public(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname,
                "sslmode": self.sslmode}


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    ssl: bool = False
    ssl_ca_certs: str | None = None
    socket_timeout: float = 30.0

    @property
    def label(self) -> str:
        return f"redis://{self.username + '@' if self.username else ''}{self.host}:{self.port}"

    def public(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "username": self.username, "db": self.db, "ssl": self.ssl}


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
