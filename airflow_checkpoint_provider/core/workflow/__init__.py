"""Workflow checkpoints: long tasks save their progress step by step and resume after a crash.

Plain Python (no Airflow); ``airflow_checkpoint_provider.workflow`` is the Airflow layer::

    store = FileWorkflowStore(Store.open(root, create=True))      # or PostgresWorkflowStore(connect, ...)
    wf = Workflow(store, "planning-2025", config=SIM_CONFIG, validate=count_rows)
    for year in wf.steps(range(2025, 2030)):                      # resume.py: where, and whether
        wf.save(year, run_year(year, wf.state))                   # codec.py + the store: atomic, sha256, zstd
    wf.summary()

Modules: ``codec`` (state and config encoding), ``records`` (the state header, the store
interface), ``filestore`` and ``pgstore`` (the two stores), ``resume`` (the resume recipe),
``workflow`` (the task author's object), ``retention`` (expiry by age), ``blobs`` (large
task-state values for Airflow's ``[workers] state_store_backend``), ``errors``.
"""

from typing import Any

from airflow_checkpoint_provider.core.workflow.errors import (
    ConfigDriftError,
    DataMismatchError,
    NoIntactStateError,
    ResumeRefusedError,
    StateDamagedError,
    StateNotSerializableError,
    UnknownStepError,
    WorkflowError,
    WorkflowLockLostError,
)
from airflow_checkpoint_provider.core.workflow.filestore import FileWorkflowStore
from airflow_checkpoint_provider.core.workflow.records import (
    Entry,
    StateHeader,
    WorkflowInfo,
    WorkflowStore,
)
from airflow_checkpoint_provider.core.workflow.resume import (
    DataCheckpoints,
    ResumeOptions,
)
from airflow_checkpoint_provider.core.workflow.retention import (
    DEFAULT_RETENTION_DAYS,
    expire,
)
from airflow_checkpoint_provider.core.workflow.workflow import DEFAULT_HISTORY, Workflow

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_RETENTION_DAYS",
    "ConfigDriftError",
    "DataCheckpoints",
    "DataMismatchError",
    "Entry",
    "FileWorkflowStore",
    "NoIntactStateError",
    "PostgresWorkflowStore",
    "ResumeOptions",
    "ResumeRefusedError",
    "StateDamagedError",
    "StateHeader",
    "StateNotSerializableError",
    "UnknownStepError",
    "Workflow",
    "WorkflowError",
    "WorkflowInfo",
    "WorkflowLockLostError",
    "WorkflowStore",
    "expire",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresWorkflowStore":
        from airflow_checkpoint_provider.core.workflow.pgstore import PostgresWorkflowStore

        return PostgresWorkflowStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
