"""The ready-made ``checkpoint_scheduled`` DAG (see airflow_checkpoint_provider.dags)."""

from airflow_checkpoint_provider.dags import checkpoint_scheduled

dag = checkpoint_scheduled()
