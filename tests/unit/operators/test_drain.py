"""DrainOperator's own logic: which DAGs it pauses and unpauses, dry runs, rollback, logging.

The pauser here is a fake (a dict of DAG states) standing in for the REST API / metadata
database: these are unit tests of our bookkeeping only. The real pausing is exercised by
tests/integration/test_dag_restore.py (metadata database, dag.test()) and
tests/integration/test_ui_browser.py (REST API of a running api-server).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_checkpoint_provider.operators.drain import DrainOperator


class FakePauser:
    how = "a fake"

    def __init__(self, states, fail_on=None):
        self.states, self.fail_on, self.calls = dict(states), fail_on, []

    def is_paused(self, dag_id):
        return self.states.get(dag_id)

    def set_paused(self, dag_id, paused):
        if dag_id == self.fail_on:
            raise AirflowException(f"cannot pause {dag_id}")
        self.calls.append((dag_id, paused))
        self.states[dag_id] = paused


def _ctx(drained=None):
    return {"ti": SimpleNamespace(xcom_pull=lambda task_ids: drained)}


def _op(monkeypatch, pauser, **kwargs) -> DrainOperator:
    op = DrainOperator(task_id=kwargs.pop("task_id", "drain"), **kwargs)
    monkeypatch.setattr(op, "_pauser", lambda: pauser)
    return op


def test_a_dag_that_was_already_paused_is_never_unpaused(monkeypatch):
    pauser = FakePauser({"checkpoint_scheduled": False, "checkpoint_pre_migration": True})
    drain = _op(
        monkeypatch,
        pauser,
        action="drain",
        optional_pause_dags=["checkpoint_scheduled", "checkpoint_pre_migration", "checkpoint_pre_deploy"],
    )
    drained = drain.execute(_ctx())
    assert drained["paused"] == ["checkpoint_scheduled"]  # pre_deploy is not deployed, pre_migration was paused
    resume = _op(monkeypatch, pauser, task_id="resume", action="resume")
    assert resume.execute(_ctx(drained))["unpaused"] == ["checkpoint_scheduled"]
    assert pauser.states == {"checkpoint_scheduled": False, "checkpoint_pre_migration": True}


def test_a_dry_run_drains_nothing_and_runs_no_command(monkeypatch, tmp_path):
    pauser = FakePauser({"a": False})
    marker = tmp_path / "ran"
    op = _op(monkeypatch, pauser, action="drain", pause_dags=["a"], command=f"touch {marker}", dry_run=True)
    assert op.execute(_ctx()) == {"action": "drain", "dry_run": True, "paused": []}
    assert pauser.calls == [] and not marker.exists()


def test_a_failed_drain_command_unpauses_what_it_paused(monkeypatch):
    pauser = FakePauser({"a": False, "b": False})
    op = _op(monkeypatch, pauser, action="drain", pause_dags=["a", "b"], command="exit 3")
    with pytest.raises(AirflowException, match="drain command exited with 3"):
        op.execute(_ctx())
    assert pauser.states == {"a": False, "b": False}


def test_a_failure_to_pause_unpauses_the_dags_paused_before_it(monkeypatch):
    pauser = FakePauser({"a": False, "b": False}, fail_on="b")
    op = _op(monkeypatch, pauser, action="drain", pause_dags=["a", "b"])
    with pytest.raises(AirflowException, match="cannot pause b"):
        op.execute(_ctx())
    assert pauser.states["a"] is False


def test_an_unknown_dag_to_pause_named_by_the_user_fails(monkeypatch):
    op = _op(monkeypatch, FakePauser({}), action="drain", pause_dags=["typo_dag"])
    with pytest.raises(AirflowException, match="'typo_dag' to pause is not deployed"):
        op.execute(_ctx())


def test_resume_unpauses_even_when_the_resume_command_fails(monkeypatch):
    pauser = FakePauser({"a": True})
    op = _op(monkeypatch, pauser, task_id="resume", action="resume", command="exit 1")
    with pytest.raises(AirflowException, match="resume command exited with 1"):
        op.execute(_ctx({"paused": ["a"]}))
    assert pauser.states == {"a": False}


def test_nothing_configured_is_logged(monkeypatch, capsys):
    op = _op(monkeypatch, FakePauser({}), action="drain")
    op.execute(_ctx())
    out, err = capsys.readouterr()  # task logging goes to stdout, or to stderr once the CLI set it up in-process
    assert "Nothing to drain: no callable, command or DAG to pause is configured" in out + err


def test_commands_and_callables_are_not_templated():
    """A run's conf reaches templates; the command and the callable must never be one."""
    assert not {"command", "callable_path"} & set(DrainOperator.template_fields)
