"""Redis connection -> :class:`RedisTarget` for the core engine."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow.providers.redis.hooks.redis import RedisHook

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import CheckpointError

#: The TLS options of the connection extra, as the Airflow Redis provider hands them to redis-py.
TLS_EXTRAS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _tls(conn: Any, extra: dict[str, Any]) -> bool:
    """TLS is on for a ``rediss`` connection (type, or a ``rediss://`` host) or with extra ``ssl``."""
    scheme = "rediss" if str(conn.host or "").lower().startswith("rediss://") else conn.conn_type
    if scheme == "rediss":
        if "ssl" in extra and not _truthy(extra["ssl"]):
            raise CheckpointError(f"connection {conn.conn_id!r} is a rediss (TLS) connection but its extra says "
                                  f"ssl={extra['ssl']!r}",
                                  hint="remove ssl from the extra, or use a redis connection for plain text")
        return True
    return _truthy(extra.get("ssl", False))


class RedisCheckpointHook(RedisHook):
    """Reads an Airflow ``redis`` or ``rediss`` connection.

    The extra may hold ``db`` and the TLS options of the Airflow Redis provider: ``ssl``,
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` (``required``,
    ``optional``, ``none``) and ``ssl_check_hostname``. A connection of type ``rediss`` (or
    a ``rediss://`` URI) always uses TLS.

    :param redis_conn_id: the Airflow connection id (default ``redis_default``).
    """

    hook_name = "Checkpoint: Redis"

    def target(self) -> RedisTarget:
        conn = self.get_connection(self.redis_conn_id)
        extra = conn.extra_dejson
        tls = _tls(conn, extra)
        host, port = str(conn.host or "localhost"), conn.port
        if "://" in host:  # a URL typed into the host field
            url = urlsplit(host)
            host, port = url.hostname or "localhost", port or url.port
        if not tls and any(extra.get(k) for k in TLS_EXTRAS):
            self.log.warning("Connection %r sets TLS options but not ssl (nor type rediss): it is used in plain "
                             "text", self.redis_conn_id)
        options: dict[str, Any] = {}
        if tls:
            options = {
                "ssl_ca_certs": extra.get("ssl_ca_certs") or None,
                "ssl_certfile": extra.get("ssl_certfile") or None,
                "ssl_keyfile": extra.get("ssl_keyfile") or None,
                "ssl_cert_reqs": str(extra.get("ssl_cert_reqs") or "required").strip().lower(),
                "ssl_check_hostname": _truthy(extra.get("ssl_check_hostname", True)),
            }
        return RedisTarget(
            host=host,
            port=int(port or 6379),
            username=conn.login or None,
            password=conn.password or None,
            db=int(extra.get("db", 0)),
            ssl=tls,
            **options,
        )

    def test_connection(self) -> tuple[bool, str]:
        from airflow_checkpoint_provider.core.engines.redis import server_info

        try:
            target = self.target()
            info = server_info(target)
            return True, f"{target.label}: Redis {info.get('redis_version')}"
        except CheckpointError as exc:
            return False, str(exc)
