"""The ready-made ``example_migration_after_checkpoint`` DAG (see airflow_checkpoint_provider.dags)."""

from airflow_checkpoint_provider.dags import example_migration_after_checkpoint

dag = example_migration_after_checkpoint()
