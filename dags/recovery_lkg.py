"""One click: restore the last-known-good checkpoint, then check health.

Optionally drains writers first (a callable, a shell command, DAGs to pause) and resumes
them afterwards, even if the restore fails. The restore loads everything side by side,
verifies it against the checkpoint's fingerprints and only then cuts over, after taking a
safety checkpoint of the current state. Use ``dry_run`` to see the plan first.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_checkpoint_provider.operators.drain import DrainOperator
from airflow_checkpoint_provider.operators.restore import RestoreOperator
from airflow_checkpoint_provider.restore_params import restore_params
from airflow_checkpoint_provider.sensors.health import HealthCheckSensor

with DAG(
    dag_id="recovery_lkg",
    description="Restore the last-known-good checkpoint, then verify health",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    params={
        **restore_params(),
        "drain_callable": Param("", type="string", title="Drain callable",
                                description="'package.module:function' called with action='drain'/'resume'."),
        "drain_command": Param("", type="string", title="Drain shell command", description="Run before the restore."),
        "resume_command": Param("", type="string", title="Resume shell command", description="Run after the restore."),
        "pause_dags": Param([], type="array", items={"type": "string"}, title="DAGs to pause",
                            description="Paused before the restore and unpaused after it."),
    },
    tags=["checkpoint", "restore"],
    doc_md=__doc__,
) as dag:
    drain = DrainOperator(task_id="drain", action="drain", callable_path="{{ params.drain_callable or None }}",
                          command="{{ params.drain_command or None }}", pause_dags="{{ params.pause_dags }}")
    restore = RestoreOperator(
        task_id="restore", checkpoint_id="last-known-good", components="{{ params.components }}",
        postgres_conn_id="{{ params.postgres_conn_id }}", redis_conn_id="{{ params.redis_conn_id }}",
        elasticsearch_conn_id="{{ params.elasticsearch_conn_id }}", dry_run="{{ params.dry_run }}",
        safety_checkpoint="{{ params.safety_checkpoint }}",
    )
    health = HealthCheckSensor(
        task_id="health_check", checkpoint_id="{{ ti.xcom_pull(task_ids='restore')['checkpoint_id'] }}",
        expectations="{{ ti.xcom_pull(task_ids='restore').get('expectations') }}",
        components="{{ params.components }}", postgres_conn_id="{{ params.postgres_conn_id }}",
        redis_conn_id="{{ params.redis_conn_id }}", elasticsearch_conn_id="{{ params.elasticsearch_conn_id }}",
        enabled="{{ not params.dry_run }}", poke_interval=5, timeout=300,
    )
    resume = DrainOperator(task_id="resume", action="resume", callable_path="{{ params.drain_callable or None }}",
                           command="{{ params.resume_command or None }}", pause_dags="{{ params.pause_dags }}")
    drain >> restore >> health >> resume
    drain.as_setup() >> resume.as_teardown(setups=drain)
