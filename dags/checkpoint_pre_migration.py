"""A pinned ``pre-migration`` checkpoint, taken on demand before a schema or data migration.

Trigger it from the UI (or with TriggerDagRunOperator(wait_for_completion=True) from your
migration DAG). When it succeeds it updates the asset ``checkpoint/pre-migration``, on which
``example_migration_after_checkpoint`` is scheduled: a migration that can only run after
a verified checkpoint. To embed the checkpoint in your own migration DAG instead, use
``checkpoint_task_group(tags=["pre-migration"], pinned=True) >> migrate``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.dag_params import capture_params, group_kwargs_from_params
from airflow_checkpoint_provider.task_groups import checkpoint_task_group

with DAG(
    dag_id="checkpoint_pre_migration",
    description="Pinned pre-migration checkpoint; unlocks migrations scheduled on checkpoint/pre-migration",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    params={
        **capture_params(mark_lkg=True),
        "migration": Param("", type="string", title="Migration",
                           description="Name of the migration this checkpoint precedes; recorded as a tag."),
    },
    default_args={"retries": settings.task_retries(), "retry_delay": timedelta(seconds=settings.retry_delay())},
    tags=["checkpoint"],
    doc_md=__doc__,
) as dag:
    kwargs = group_kwargs_from_params()
    checkpoint_task_group(
        "checkpoint",
        tags=["pre-migration", "{{ 'migration:' ~ params.migration if params.migration else '' }}"],
        pinned=True,  # recorded in the manifest: retention never expires it
        **kwargs,
    )
