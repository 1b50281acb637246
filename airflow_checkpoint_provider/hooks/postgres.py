"""PostgreSQL connection -> :class:`PostgresTarget` for the core engine."""

from __future__ import annotations

from airflow.providers.postgres.hooks.postgres import PostgresHook

from airflow_checkpoint_provider.core.engines.targets import LIBPQ_SSL_OPTIONS, PostgresTarget


class PgCheckpointHook(PostgresHook):
    """Reads an Airflow ``postgres`` connection for pg_dump / pg_restore / catalogue queries.

    The extra's ``sslmode`` and other libpq TLS options (``sslrootcert``, ``sslcert``,
    ``sslkey``, ``sslpassword``, ``sslcrl``, ``sslsni``, ...) reach psycopg, pg_dump and pg_restore.

    :param postgres_conn_id: the Airflow connection id (default ``postgres_default``).
    """

    hook_name = "Checkpoint: PostgreSQL"

    def target(self) -> PostgresTarget:
        conn = self.get_connection(self.get_conn_id())
        extra = conn.extra_dejson
        return PostgresTarget(
            host=conn.host or "localhost",
            port=int(conn.port or 5432),
            user=conn.login or "postgres",
            password=conn.password or None,
            dbname=conn.schema or "postgres",
            sslmode=extra.get("sslmode") or None,
            connect_timeout=int(extra.get("connect_timeout", 10)),
            ssl={k: v for k, v in extra.items() if k in LIBPQ_SSL_OPTIONS and v not in (None, "")},
        )

    def test_connection(self) -> tuple[bool, str]:
        from airflow_checkpoint_provider.core.engines import postgres
        from airflow_checkpoint_provider.core.errors import CheckpointError

        try:
            target = self.target()
            return True, f"{target.label}: PostgreSQL {postgres.server_version(target)}"
        except CheckpointError as exc:
            return False, str(exc)
