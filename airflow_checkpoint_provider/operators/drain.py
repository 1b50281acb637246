"""DrainOperator: quiesce writers before a restore, and bring them back afterwards.

Three ways, any combination: a Python callable (``"package.module:function"``), a shell
command, and Airflow DAGs to pause. The callable and the command are set in the DAG file
(or ``[checkpoint]`` options) and are not templated, so a run's trigger conf can never
choose what runs. The DAGs to pause may come from the form: pausing runs nothing.

Used as a setup/teardown pair: ``resume`` runs even when the restore failed, unpauses only
the DAGs that ``drain`` paused (never one that was paused before), and a dry run drains and
resumes nothing.
"""

from __future__ import annotations

import importlib
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_checkpoint_provider.operators.base import split_list
from airflow_checkpoint_provider.operators.restore import truthy

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_checkpoint_provider.hooks.airflow_api import Pauser


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise AirflowException(f"callable {path!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module), attr)


class DrainOperator(BaseOperator):
    """Run the drain (``action="drain"``) or resume (``action="resume"``) step.

    :param callable_path: ``"pkg.mod:func"``, called with ``action`` and ``context`` keyword arguments.
    :param command: shell command run with ``/bin/sh -c`` (its output goes to the task log).
    :param pause_dags: DAG ids paused by drain (templated); resume unpauses the ones drain paused.
    :param optional_pause_dags: DAG ids paused if possible: a DAG that is not deployed, or no
        way to pause DAGs (see :mod:`~airflow_checkpoint_provider.hooks.airflow_api`), only logs a warning.
    :param dry_run: templated; when true nothing is drained or resumed.
    :param drain_task_id: for ``resume``: the drain task whose result names the DAGs it paused.
    :param airflow_api_conn_id: the REST API connection used to pause DAGs.
    """

    template_fields = ("pause_dags", "optional_pause_dags", "plan_only")

    def __init__(
        self,
        *,
        action: str,
        callable_path: str | None = None,
        command: str | None = None,
        pause_dags: Sequence[str] | str | None = None,
        optional_pause_dags: Sequence[str] | str | None = None,
        dry_run: bool | str = False,
        drain_task_id: str = "drain",
        airflow_api_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        if action not in ("drain", "resume"):
            raise ValueError(f"action must be 'drain' or 'resume', not {action!r}")
        super().__init__(**kwargs)
        self.action = action
        self.callable_path = callable_path
        self.command = command
        self.pause_dags = pause_dags
        self.optional_pause_dags = optional_pause_dags
        self.plan_only = dry_run  #: ``dry_run``; BaseOperator.dry_run() is another thing
        self.drain_task_id = drain_task_id
        self.airflow_api_conn_id = airflow_api_conn_id

    def _pauser(self) -> Pauser:
        from airflow_checkpoint_provider import settings
        from airflow_checkpoint_provider.hooks.airflow_api import AirflowApiHook

        return AirflowApiHook(self.airflow_api_conn_id or settings.airflow_api_conn_id()).pauser()

    def execute(self, context: Context) -> dict[str, Any]:
        if truthy(self.plan_only):
            self.log.info("Dry run: nothing is %s", "drained" if self.action == "drain" else "resumed")
            return {"action": self.action, "dry_run": True, "paused": []}
        if self.action == "drain":
            done: dict[str, Any] = {"action": "drain", "paused": self._pause_all()}
            try:
                ran = self._run_hooks(context)
            except BaseException:
                self._unpause(done["paused"])  # resume will not run after a failed drain
                raise
        else:
            drained = context["ti"].xcom_pull(task_ids=self.drain_task_id) or {}
            try:
                ran = self._run_hooks(context)
            finally:
                done = {"action": "resume", "unpaused": self._unpause(list(drained.get("paused") or []))}
        if not done.get("paused") and not done.get("unpaused") and not ran:
            self.log.info(
                "Nothing to %s: no callable, command or DAG to pause is configured (set them in the DAG "
                "file or [checkpoint] drain_command, resume_command, drain_callable)",
                self.action,
            )
        return {**done, "ran": ran}

    def _pause_all(self) -> list[str]:
        """Pause every listed DAG that is not paused yet; on failure unpause those paused so far."""
        required, optional = split_list(self.pause_dags), split_list(self.optional_pause_dags)
        wanted = list(dict.fromkeys(required + [d for d in optional if d not in required]))
        if not wanted:
            return []
        from airflow_checkpoint_provider.hooks.airflow_api import PauseUnavailableError

        paused: list[str] = []
        try:
            pauser = self._pauser()
            for dag_id in wanted:
                state = pauser.is_paused(dag_id)
                if state is None:
                    if dag_id in required:
                        raise AirflowException(f"DAG {dag_id!r} to pause is not deployed here; check its id")
                    self.log.info("DAG %s is not deployed here: nothing to pause", dag_id)
                elif state:
                    self.log.info("DAG %s was already paused: it stays paused afterwards", dag_id)
                else:
                    pauser.set_paused(dag_id, True)
                    paused.append(dag_id)
                    self.log.info("Paused DAG %s (through %s)", dag_id, pauser.how)
        except PauseUnavailableError as exc:
            if set(required) - set(paused):
                self._unpause(paused)
                raise
            self.log.warning("Capture DAGs not paused: %s", exc)
        except Exception:
            self._unpause(paused)
            raise
        return paused

    def _unpause(self, dag_ids: list[str]) -> list[str]:
        if not dag_ids:
            return []
        pauser = self._pauser()
        for dag_id in dag_ids:
            pauser.set_paused(dag_id, False)
            self.log.info("Unpaused DAG %s (paused by the drain step)", dag_id)
        return dag_ids

    def _run_hooks(self, context: Context) -> list[str]:
        ran = []
        if self.callable_path:
            _load(self.callable_path)(action=self.action, context=context)
            self.log.info("Called %s(action=%r)", self.callable_path, self.action)
            ran.append("callable")
        if self.command:
            proc = subprocess.run(["/bin/sh", "-c", self.command], capture_output=True, text=True)
            for line in (proc.stdout + proc.stderr).splitlines():
                self.log.info("%s: %s", self.action, line)
            if proc.returncode != 0:
                raise AirflowException(f"{self.action} command exited with {proc.returncode}")
            self.log.info("%s command finished", self.action.capitalize())
            ran.append("command")
        return ran
