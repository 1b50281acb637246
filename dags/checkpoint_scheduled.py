"""Scheduled checkpoints of PostgreSQL, Redis and search, marked last-known-good once verified.

Runs every 30 minutes by default ([checkpoint] schedule). The stores are captured in
parallel, sealed into one archive, verified, and the LKG pointer moves to it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.dag_params import capture_params, group_kwargs_from_params
from airflow_checkpoint_provider.task_groups import checkpoint_task_group

with DAG(
    dag_id="checkpoint_scheduled",
    description="Checkpoint PostgreSQL, Redis and search; mark it last-known-good once verified",
    schedule=settings.schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    render_template_as_native_obj=True,
    params=capture_params(mark_lkg=True),
    tags=["checkpoint"],
    doc_md=__doc__,
    default_args={"retries": settings.task_retries(), "retry_delay": timedelta(seconds=settings.retry_delay())},
) as dag:
    checkpoint_task_group("checkpoint", tags=["scheduled"], **group_kwargs_from_params())
