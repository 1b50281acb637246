"""Redis connection -> :class:`RedisTarget` for the core engine."""

from __future__ import annotations

from airflow.providers.redis.hooks.redis import RedisHook

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import CheckpointError


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
        from airflow_checkpoint_provider import engines

        return engines.target("redis", self.redis_conn_id)

    def test_connection(self) -> tuple[bool, str]:
        from airflow_checkpoint_provider.core.engines.redis import server_info

        try:
            target = self.target()
            info = server_info(target)
            return True, f"{target.label}: Redis {info.get('redis_version')}"
        except CheckpointError as exc:
            return False, str(exc)
