"""The ready-made ``checkpoint_restore_drill`` DAG (see airflow_checkpoint_provider.dags)."""

from airflow_checkpoint_provider.dags import checkpoint_restore_drill

dag = checkpoint_restore_drill()
