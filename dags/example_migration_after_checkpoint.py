"""Example: a migration that runs only after a verified pre-migration checkpoint.

It is scheduled on the asset ``checkpoint/pre-migration``, which ``checkpoint_pre_migration``
updates only when its checkpoint sealed and verified. The checkpoint id arrives in the
asset event, so the migration logs which checkpoint to restore if it goes wrong.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.operators.bundle import tag_asset

with DAG(
    dag_id="example_migration_after_checkpoint",
    description="Example migration, scheduled on fresh pre-migration checkpoints",
    schedule=[tag_asset("pre-migration")],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["checkpoint", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def checkpoint_id(**context) -> str:
        events = context["triggering_asset_events"][tag_asset("pre-migration")]
        cid = events[-1].extra["checkpoint_id"]
        print(f"migrating after checkpoint {cid}; restore it with restore_checkpoint if this goes wrong")
        return cid

    @task
    def migrate(cid: str) -> None:
        """A harmless example migration: record itself in a schema_migrations table."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id=settings.postgres_conn_id())
        hook.run(["CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, checkpoint_id text, "
                  "applied_at timestamptz DEFAULT now())",
                  "INSERT INTO schema_migrations (version, checkpoint_id) VALUES ('example-001', %(cid)s) "
                  "ON CONFLICT (version) DO UPDATE SET checkpoint_id = EXCLUDED.checkpoint_id"],
                 parameters={"cid": cid})

    migrate(checkpoint_id())
