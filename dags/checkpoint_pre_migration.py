"""The ready-made ``checkpoint_pre_migration`` DAG (see airflow_checkpoint_provider.dags)."""

from airflow_checkpoint_provider.dags import checkpoint_pre_migration

dag = checkpoint_pre_migration()
