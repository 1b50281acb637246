"""The ready-made ``checkpoint_retention`` DAG (see airflow_checkpoint_provider.dags)."""

from airflow_checkpoint_provider.dags import checkpoint_retention

dag = checkpoint_retention()
