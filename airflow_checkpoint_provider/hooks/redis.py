"""Redis connection -> :class:`RedisTarget` for the core engine."""

from __future__ import annotations

from airflow.providers.redis.hooks.redis import RedisHook

from airflow_checkpoint_provider.core.engines.targets import RedisTarget


def _truthy(value: object) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


class RedisCheckpointHook(RedisHook):
    """Reads an Airflow ``redis`` connection (extra: ``db``, ``ssl``, ``ssl_ca_certs``).

    :param redis_conn_id: the Airflow connection id (default ``redis_default``).
    """

    hook_name = "Checkpoint: Redis"

    def target(self) -> RedisTarget:
        conn = self.get_connection(self.redis_conn_id)
        extra = conn.extra_dejson
        return RedisTarget(
            host=conn.host or "localhost",
            port=int(conn.port or 6379),
            username=conn.login or None,
            password=conn.password or None,
            db=int(extra.get("db", 0)),
            ssl=_truthy(extra.get("ssl", False)),
            ssl_ca_certs=extra.get("ssl_ca_certs"),
        )

    def test_connection(self) -> tuple[bool, str]:
        from airflow_checkpoint_provider.core.engines.redis import server_info
        from airflow_checkpoint_provider.core.errors import CheckpointError

        target = self.target()
        try:
            info = server_info(target)
            return True, f"{target.label}: Redis {info.get('redis_version')}"
        except CheckpointError as exc:
            return False, str(exc)
