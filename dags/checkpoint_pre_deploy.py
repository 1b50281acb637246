"""Validate a deployment, then take a ``pre-deploy`` checkpoint. Any failed check blocks the deploy.

Checks (each its own task, failing with the list of problems it found):
required environment variables, connections reachable, required config files present,
and dependency versions. Only when all pass is the checkpoint taken; a deploy pipeline
waits for this DAG run's success before deploying.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, TaskGroup

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.dag_params import capture_params, group_kwargs_from_params
from airflow_checkpoint_provider.operators.deploy import ValidateDeploymentOperator
from airflow_checkpoint_provider.task_groups import checkpoint_task_group

with DAG(
    dag_id="checkpoint_pre_deploy",
    description="Validate the deployment, then take a pre-deploy checkpoint",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    params={
        "required_env": Param([], type="array", items={"type": "string"}, title="Required environment variables",
                              description="Variables that must be set (non-empty) on the workers."),
        "required_connections": Param(None, type=["null", "array"], items={"type": "string"},
                                      title="Connections that must answer",
                                      description="Connection ids; default: the three checkpoint connections."),
        "required_files": Param([], type="array", items={"type": "string"}, title="Required config files",
                                description="Paths that must exist, be readable and non-empty."),
        "required_packages": Param({}, type="object", title="Dependency versions",
                                   description='Installed package versions, e.g. {"apache-airflow": ">=3.3,<3.4"}.'),
        **capture_params(mark_lkg=True),
    },
    default_args={"retries": settings.task_retries(), "retry_delay": timedelta(seconds=settings.retry_delay())},
    tags=["checkpoint", "deploy"],
    doc_md=__doc__,
) as dag:
    with TaskGroup("validate") as validate:
        ValidateDeploymentOperator(task_id="environment", check="env", items="{{ params.required_env }}")
        ValidateDeploymentOperator(
            task_id="connections", check="connections",
            items="{{ params.required_connections if params.required_connections is not none else "
                  "([params.postgres_conn_id] if 'postgres' in params.components else []) + "
                  "([params.redis_conn_id] if 'redis' in params.components else []) + "
                  "([params.elasticsearch_conn_id] if 'search' in params.components else []) }}",
        )
        ValidateDeploymentOperator(task_id="config_files", check="files", items="{{ params.required_files }}")
        ValidateDeploymentOperator(task_id="dependencies", check="dependencies",
                                   items="{{ params.required_packages }}")
    validate >> checkpoint_task_group("checkpoint", tags=["pre-deploy"], **group_kwargs_from_params())
