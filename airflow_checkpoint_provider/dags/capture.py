"""Factories of the ready-made capture DAGs: scheduled, pre-migration and pre-deploy checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup

from airflow_checkpoint_provider import engines, settings
from airflow_checkpoint_provider.dags.alerts import Notifier, alert_args
from airflow_checkpoint_provider.dags.params import capture_params, group_kwargs_from_params, optional_list
from airflow_checkpoint_provider.task_groups import checkpoint_task_group

START = datetime(2026, 1, 1)

SCHEDULED_DOC = """Scheduled checkpoints of PostgreSQL, Redis and search, marked last-known-good once verified.

Runs every 30 minutes by default ([checkpoint] schedule). The stores are captured in
parallel, sealed into one archive, verified, and the LKG pointer moves to it.
"""

PRE_MIGRATION_DOC = """A pinned ``pre-migration`` checkpoint, taken on demand before a schema or data migration.

Trigger it from the UI (or with TriggerDagRunOperator(wait_for_completion=True) from your
migration DAG). When it succeeds it updates the asset ``checkpoint/pre-migration``, on which
``example_migration_after_checkpoint`` is scheduled: a migration that can only run after
a verified checkpoint. To embed the checkpoint in your own migration DAG instead, use
``checkpoint_task_group(tags=["pre-migration"], pinned=True) >> migrate``.
"""

PRE_DEPLOY_DOC = """Validate a deployment, then take a ``pre-deploy`` checkpoint. Any failed check blocks the deploy.

Checks (each its own task, failing with the list of problems it found):
required environment variables, connections reachable, required config files present,
and dependency versions. Only when all pass is the checkpoint taken; a deploy pipeline
waits for this DAG run's success before deploying.
"""


def _common(notifiers: Sequence[Notifier] | None = None, **overrides: Any) -> dict[str, Any]:
    return {
        "start_date": START,
        "catchup": False,
        "max_active_runs": 1,
        "render_template_as_native_obj": True,
        "default_args": alert_args(
            notifiers, retries=settings.task_retries(), retry_delay=timedelta(seconds=settings.retry_delay())
        ),
        **overrides,
    }


def checkpoint_scheduled(
    dag_id: str = "checkpoint_scheduled", *, schedule: Any = None, notifiers: Sequence[Notifier] | None = None
) -> DAG:
    """Checkpoint every store on a schedule and mark the result last-known-good.

    :param schedule: default ``[checkpoint] schedule`` (every 30 minutes).
    :param notifiers: called when a task fails (e.g. ``SmtpNotifier``), besides those of ``[checkpoint] notify_*``.
    """
    with DAG(
        dag_id=dag_id,
        description="Checkpoint PostgreSQL, Redis and search; mark it last-known-good once verified",
        schedule=schedule or settings.schedule(),
        dagrun_timeout=timedelta(hours=2),
        params=capture_params(mark_lkg=True),
        tags=["checkpoint"],
        doc_md=SCHEDULED_DOC,
        **_common(notifiers),
    ) as dag:
        checkpoint_task_group("checkpoint", tags=["scheduled"], **group_kwargs_from_params())
    return dag


def checkpoint_pre_migration(
    dag_id: str = "checkpoint_pre_migration", *, notifiers: Sequence[Notifier] | None = None
) -> DAG:
    """A pinned ``pre-migration`` checkpoint on demand; updates the asset ``checkpoint/pre-migration``.

    :param notifiers: as for :func:`checkpoint_scheduled`.
    """
    params = {
        **capture_params(mark_lkg=True),
        "migration": Param(
            None,
            type=["null", "string"],
            title="Migration",
            description="Name of the migration this checkpoint precedes; recorded as a tag 'migration:<name>'.",
        ),
    }
    with DAG(
        dag_id=dag_id,
        description="Pinned pre-migration checkpoint; unlocks migrations scheduled on checkpoint/pre-migration",
        schedule=None,
        params=params,
        tags=["checkpoint"],
        doc_md=PRE_MIGRATION_DOC,
        **_common(notifiers),
    ) as dag:
        checkpoint_task_group(
            "checkpoint",
            tags=["pre-migration", "{{ 'migration:' ~ params.migration if params.migration else '' }}"],
            pinned=True,  # recorded in the manifest: retention never expires it
            **group_kwargs_from_params(),
        )
    return dag


def checkpoint_pre_deploy(dag_id: str = "checkpoint_pre_deploy", *, notifiers: Sequence[Notifier] | None = None) -> DAG:
    """Validate the deployment (environment, connections, files, versions), then take a ``pre-deploy`` checkpoint.

    :param notifiers: as for :func:`checkpoint_scheduled`.
    """
    from airflow_checkpoint_provider.operators.deploy import ValidateDeploymentOperator

    params = {
        "required_env": optional_list(
            "Required environment variables", "Variables that must be set (non-empty) on the workers, one per line."
        ),
        "required_connections": optional_list(
            "Connections that must answer",
            "Connection ids, one per line; empty: the connections of the chosen components.",
        ),
        "required_files": optional_list(
            "Required config files", "Paths that must exist, be readable and non-empty, one per line."
        ),
        "required_packages": Param(
            None,
            type=["null", "object"],
            title="Dependency versions",
            description='Installed package versions, e.g. {"apache-airflow": ">=3.3,<3.4"}.',
        ),
        **capture_params(mark_lkg=True),
    }
    with DAG(
        dag_id=dag_id,
        description="Validate the deployment, then take a pre-deploy checkpoint",
        schedule=None,
        params=params,
        tags=["checkpoint", "deploy"],
        doc_md=PRE_DEPLOY_DOC,
        **_common(notifiers),
    ) as dag:
        with TaskGroup("validate") as validate:
            ValidateDeploymentOperator(task_id="environment", check="env", items="{{ params.required_env or [] }}")
            ValidateDeploymentOperator(
                task_id="connections",
                check="connections",
                items="{{ params.required_connections if params.required_connections else %s }}"
                % " + ".join(
                    f"([params.{e.conn_param}] if {e.name!r} in params.components else [])"
                    for e in engines.engines().values()
                ),
            )
            ValidateDeploymentOperator(task_id="config_files", check="files", items="{{ params.required_files or [] }}")
            ValidateDeploymentOperator(
                task_id="dependencies", check="dependencies", items="{{ params.required_packages or {} }}"
            )
        validate >> checkpoint_task_group(
            "checkpoint",
            tags=["pre-deploy"],
            deployment="{{ {'config_files': params.required_files or [], 'env': params.required_env or [], "
            "'packages': params.required_packages or {}} }}",  # what the checks covered: the config hash too
            **group_kwargs_from_params(),
        )
    return dag


def example_migration_after_checkpoint(
    dag_id: str = "example_migration_after_checkpoint", *, notifiers: Sequence[Notifier] | None = None
) -> DAG:
    """Example: a migration scheduled on the asset ``checkpoint/pre-migration``, so it only runs after a
    verified pre-migration checkpoint; it logs which checkpoint to restore if it goes wrong."""
    from airflow.sdk import task

    from airflow_checkpoint_provider.operators.bundle import tag_asset

    with DAG(
        dag_id=dag_id,
        description="Example migration, scheduled on fresh pre-migration checkpoints",
        schedule=[tag_asset("pre-migration")],
        start_date=START,
        catchup=False,
        tags=["checkpoint", "example"],
        doc_md=example_migration_after_checkpoint.__doc__,
        default_args=alert_args(notifiers),
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
            hook.run(
                [
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, checkpoint_id text, "
                    "applied_at timestamptz DEFAULT now())",
                    "INSERT INTO schema_migrations (version, checkpoint_id) VALUES ('example-001', %(cid)s) "
                    "ON CONFLICT (version) DO UPDATE SET checkpoint_id = EXCLUDED.checkpoint_id",
                ],
                parameters={"cid": cid},
            )

        migrate(checkpoint_id())  # type: ignore[arg-type]  # an XComArg, resolved at run time
    return dag
