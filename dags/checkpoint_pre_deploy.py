"""The ready-made ``checkpoint_pre_deploy`` DAG (see airflow_checkpoint_provider.dags)."""

from airflow_checkpoint_provider.dags import checkpoint_pre_deploy

dag = checkpoint_pre_deploy()
