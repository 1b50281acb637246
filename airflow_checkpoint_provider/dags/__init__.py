"""The ready-made DAGs, as factories: a DAG file needs two lines to deploy one.

    # dags/recovery_lkg.py in your dags folder
    from airflow_checkpoint_provider.dags import recovery_lkg
    dag = recovery_lkg()

Each factory takes the DAG id (and a few deployment choices, e.g. the drain command of
``recovery_lkg``) as arguments, so one deployment can hold several variants.
"""

from airflow_checkpoint_provider.dags.capture import (
    checkpoint_pre_deploy,
    checkpoint_pre_migration,
    checkpoint_scheduled,
    example_migration_after_checkpoint,
)
from airflow_checkpoint_provider.dags.lifecycle import checkpoint_restore_drill, checkpoint_retention, checkpoint_verify
from airflow_checkpoint_provider.dags.recovery import CAPTURE_DAG_IDS, recovery_lkg, restore_checkpoint
from airflow_checkpoint_provider.dags.simulation import example_resumable_simulation

__all__ = [
    "CAPTURE_DAG_IDS",
    "checkpoint_pre_deploy",
    "checkpoint_pre_migration",
    "checkpoint_restore_drill",
    "checkpoint_retention",
    "checkpoint_scheduled",
    "checkpoint_verify",
    "example_migration_after_checkpoint",
    "example_resumable_simulation",
    "recovery_lkg",
    "restore_checkpoint",
]
