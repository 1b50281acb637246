"""PostgreSQL connection -> :class:`PostgresTarget` for the core engine."""

from __future__ import annotations

from airflow.providers.postgres.hooks.postgres import PostgresHook

from airflow_checkpoint_provider.core.engines.targets import PostgresTarget


class PgCheckpointHook(PostgresHook):
    """Reads an Airflow ``postgres`` connection for pg_dump / pg_restore / catalogue queries.

    The extra's ``sslmode`` and other libpq TLS options (``sslrootcert``, ``sslcert``,
    ``sslkey``, ``sslpassword``, ``sslcrl``, ``sslsni``, ...) reach psycopg, pg_dump and pg_restore.

    :param postgres_conn_id: the Airflow connection id (default ``postgres_default``).
    """

    hook_name = "Checkpoint: PostgreSQL"

    def target(self) -> PostgresTarget:
        from airflow_checkpoint_provider import engines

        return engines.target("postgres", self.get_conn_id())

    def test_connection(self) -> tuple[bool, str]:  # type: ignore[override]  # Airflow's UI reads (ok, message)
        from airflow_checkpoint_provider.core.engines import postgres
        from airflow_checkpoint_provider.core.errors import CheckpointError

        try:
            target = self.target()
            return True, f"{target.label}: PostgreSQL {postgres.server_version(target)}"
        except CheckpointError as exc:
            return False, str(exc)
