"""Workflow checkpoints in Airflow tasks: the thin layer over ``core.workflow``.

* :func:`workflow_checkpoints` -- the task author's entry point (``task.py``);
* :class:`DataTargets` -- what a step's data checkpoint holds (``data.py``);
* :class:`CheckpointStateBackend` -- a ``[workers] state_store_backend`` putting large
  ``task_state_store`` values into the checkpoint store (``state_backend.py``);
* ``engines.py`` -- the only module that calls the engines and the restore builder;
* ``cli.py`` -- ``airflow-checkpoint workflow ...`` (imports no Airflow for the file store).

The names are loaded on first use, so that the CLI works where Airflow cannot be imported.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_NAMES = {"workflow_checkpoints": "task", "DataTargets": "data", "CheckpointStateBackend": "state_backend"}

__all__ = ["CheckpointStateBackend", "DataTargets", "workflow_checkpoints"]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
