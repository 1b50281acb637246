"""The ready-made ``restore_checkpoint`` DAG (see airflow_checkpoint_provider.dags)."""

from airflow_checkpoint_provider.dags import restore_checkpoint

dag = restore_checkpoint()
