"""The ready-made ``checkpoint_verify`` DAG (see airflow_checkpoint_provider.dags)."""

from airflow_checkpoint_provider.dags import checkpoint_verify

dag = checkpoint_verify()
