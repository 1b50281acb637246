"""The ready-made ``recovery_lkg`` DAG (see airflow_checkpoint_provider.dags)."""

from airflow_checkpoint_provider.dags import recovery_lkg

dag = recovery_lkg()
