"""Restore a chosen checkpoint, into the original servers or other ones, then check health.

Pick the checkpoint id (suggestions list the newest ones; any id can be typed), the
components, and the target connections. A destructive restore only runs when ``confirm``
equals the checkpoint id; a dry run only prints the plan and needs no confirmation.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_checkpoint_provider.operators.restore import RestoreOperator
from airflow_checkpoint_provider.restore_params import recent_checkpoint_ids, restore_params
from airflow_checkpoint_provider.sensors.health import HealthCheckSensor

with DAG(
    dag_id="restore_checkpoint",
    description="Restore a chosen checkpoint (confirmation required), then verify health",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    params={
        "checkpoint_id": Param("last-known-good", type="string", title="Checkpoint",
                               description="A checkpoint id (see `airflow-checkpoint list`) or last-known-good.",
                               examples=["last-known-good", *recent_checkpoint_ids()]),
        "confirm": Param("", type="string", title="Confirm",
                         description="Type the checkpoint id again to allow a restore that replaces data."),
        "databases": Param("", type="string", title="PostgreSQL databases",
                           description="Comma-separated subset of the checkpoint's databases; empty for all."),
        "rename_databases": Param({}, type="object", title="Restore databases under other names",
                                  description='e.g. {"app": "app_restored"}; the original stays untouched.'),
        "indices": Param("", type="string", title="Search indices",
                         description="Comma-separated subset of the checkpoint's indices; empty for all."),
        **restore_params(),
    },
    tags=["checkpoint", "restore"],
    doc_md=__doc__,
) as dag:

    @task
    def check_confirmation(params: dict) -> str:
        """Refuse a destructive restore unless ``confirm`` repeats the checkpoint id."""
        if params["dry_run"]:
            return "dry run: no confirmation needed"
        if params["confirm"].strip() != params["checkpoint_id"].strip():
            raise AirflowFailException(
                f"confirm ({params['confirm']!r}) does not equal the checkpoint id ({params['checkpoint_id']!r}); "
                "nothing was restored. Type the checkpoint id into 'confirm', or run a dry run first."
            )
        return "confirmed"

    restore = RestoreOperator(
        task_id="restore", checkpoint_id="{{ params.checkpoint_id }}", components="{{ params.components }}",
        databases="{{ params.databases }}", indices="{{ params.indices }}",
        rename_databases="{{ params.rename_databases }}",
        postgres_conn_id="{{ params.postgres_conn_id }}", redis_conn_id="{{ params.redis_conn_id }}",
        elasticsearch_conn_id="{{ params.elasticsearch_conn_id }}", dry_run="{{ params.dry_run }}",
        safety_checkpoint="{{ params.safety_checkpoint }}",
    )
    health = HealthCheckSensor(
        task_id="health_check", checkpoint_id="{{ ti.xcom_pull(task_ids='restore')['checkpoint_id'] }}",
        expectations="{{ ti.xcom_pull(task_ids='restore').get('expectations') }}",
        components="{{ params.components }}", rename_databases="{{ params.rename_databases }}",
        postgres_conn_id="{{ params.postgres_conn_id }}", redis_conn_id="{{ params.redis_conn_id }}",
        elasticsearch_conn_id="{{ params.elasticsearch_conn_id }}", enabled="{{ not params.dry_run }}",
        poke_interval=5, timeout=300,
    )
    check_confirmation() >> restore >> health
