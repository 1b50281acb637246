"""The ready-made ``example_resumable_simulation`` DAG (see airflow_checkpoint_provider.dags)."""

from airflow_checkpoint_provider.dags import example_resumable_simulation

dag = example_resumable_simulation()
