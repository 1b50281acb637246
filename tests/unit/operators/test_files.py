"""FilesSnapshotOperator: the directory from its connection, skipping when the default one is not
defined (so the ready-made DAGs run unchanged without a directory), and its trigger-form Params."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from airflow_checkpoint_provider.operators.files import FilesSnapshotOperator


def test_a_missing_connection_skips_an_optional_capture_and_fails_any_other(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_FILES_DEFAULT", raising=False)
    with pytest.raises(AirflowSkipException, match="no connection 'files_default' names a directory"):
        FilesSnapshotOperator(task_id="f", optional="True").target()
    with pytest.raises(Exception) as err:
        FilesSnapshotOperator(task_id="f", files_conn_id="typo_conn").target()
    assert type(err.value).__name__ == "AirflowNotFoundException" and "typo_conn" in str(err.value)


def test_the_directory_comes_from_the_connections_extra_path(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_UPLOADS", json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path)}}))
    target = FilesSnapshotOperator(task_id="f", files_conn_id="uploads", optional=True).target()
    assert target.path == str(tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_NOPATH", json.dumps({"conn_type": "fs"}))
    from airflow_checkpoint_provider.core.errors import CheckpointError

    with pytest.raises(CheckpointError, match="'nopath' names no directory"):  # defined but unusable: fail
        FilesSnapshotOperator(task_id="f", files_conn_id="nopath", optional=True).target()


def test_the_ready_made_dags_skip_only_the_default_connection_and_offer_the_consistency():
    kwargs = FilesSnapshotOperator.capture_kwargs()
    assert kwargs["optional"] == "{{ params.files_conn_id == 'files_default' }}"
    assert kwargs["consistency"] == "{{ params.files_consistency }}"
    param = FilesSnapshotOperator.capture_params()["files_consistency"]
    assert param.value == "auto" and param.schema["enum"] == ["auto", "detect", "quiesce"]
    assert "quiesce_hook" not in FilesSnapshotOperator.template_fields  # never rendered from a run's conf
    assert FilesSnapshotOperator.restore_params(chosen=False) == {}
    assert FilesSnapshotOperator.restore_params(chosen=True)["files_source"].value is None
