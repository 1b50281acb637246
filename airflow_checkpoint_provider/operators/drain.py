"""DrainOperator: quiesce writers before a restore, and bring them back afterwards.

Three ways, any combination: a Python callable (``"package.module:function"``), a shell
command, and a list of Airflow DAGs to pause (resumed afterwards). Used as a setup/teardown
pair so the resume step runs even when the restore fails.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

if TYPE_CHECKING:
    from airflow.sdk import Context


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise AirflowException(f"callable {path!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module), attr)


class DrainOperator(BaseOperator):
    """Run the drain (``action="drain"``) or resume (``action="resume"``) step.

    :param callable_path: ``"pkg.mod:func"``, called with ``action`` and ``context`` keyword arguments.
    :param command: shell command run with ``/bin/sh -c`` (its output goes to the task log).
    :param pause_dags: DAG ids paused by drain and unpaused by resume.
    """

    template_fields = ("callable_path", "command", "pause_dags")

    def __init__(self, *, action: str, callable_path: str | None = None, command: str | None = None,
                 pause_dags: list[str] | str | None = None, **kwargs: Any) -> None:
        if action not in ("drain", "resume"):
            raise ValueError(f"action must be 'drain' or 'resume', not {action!r}")
        super().__init__(**kwargs)
        self.action = action
        self.callable_path = callable_path
        self.command = command
        self.pause_dags = pause_dags

    def _dags(self) -> list[str]:
        if not self.pause_dags:
            return []
        if isinstance(self.pause_dags, str):
            return [d.strip() for d in self.pause_dags.split(",") if d.strip()]
        return [str(d) for d in self.pause_dags]

    def execute(self, context: Context) -> dict[str, Any]:
        done: dict[str, Any] = {"action": self.action}
        for dag_id in self._dags():
            verb = "pause" if self.action == "drain" else "unpause"
            airflow = str(Path(sys.executable).parent / "airflow")
            proc = subprocess.run([airflow, "dags", verb, dag_id, "-y"], capture_output=True, text=True,
                                  env=os.environ.copy())
            if proc.returncode != 0:
                raise AirflowException(f"could not {verb} DAG {dag_id!r}: {proc.stderr.strip()[-500:]}")
            self.log.info("%sd DAG %s", verb.capitalize(), dag_id)
        done["dags"] = self._dags()
        if self.callable_path:
            _load(self.callable_path)(action=self.action, context=context)
            self.log.info("Called %s(action=%r)", self.callable_path, self.action)
            done["callable"] = self.callable_path
        if self.command:
            proc = subprocess.run(["/bin/sh", "-c", self.command], capture_output=True, text=True)
            for line in (proc.stdout + proc.stderr).splitlines():
                self.log.info("%s: %s", self.action, line)
            if proc.returncode != 0:
                raise AirflowException(f"{self.action} command exited with {proc.returncode}")
            done["command"] = True
        return done
