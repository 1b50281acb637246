"""``workflow_checkpoints(context, ...)``: workflow checkpoints inside an Airflow task.

::

    @task(retries=3)
    def simulate(years: list[int], **context):
        wf = workflow_checkpoints(context, config=SIM_CONFIG, validate=count_rows)
        for year in wf.steps(years):               # skips the steps already saved, after validating
            wf.save(year, run_year(year, wf.state))
        return wf.summary()

What Airflow adds to :class:`core.workflow.Workflow`:

* **The key.** Without ``workflow_id`` the workflow is this task instance (dag, run, task, map
  index): Airflow's retries resume it, a new run starts afresh. With ``workflow_id`` (or the
  run's ``workflow_id`` Param) a new run resumes where a failed one stopped.
* **The run's Params.** ``force_restart``, ``allow_config_drift``, ``resume_from``,
  ``restore_data`` and ``workflow_id`` are read from the run's Params when not passed, so a
  DAG's trigger form steers the workflow with no extra code.
* **Retries keep their place.** Those directives apply once per clear of the run: the task's
  ``task_state_store`` remembers that they were applied, so a retry after a crash resumes from
  its last save instead of restarting or re-restoring. A user's *clear* of the task (a new
  ``clear_number``) applies them again.
* **The UI shows progress.** The latest saved step is kept in ``task_state_store`` (key
  ``workflow_checkpoint``), visible on the task instance.
* **Refusals fail at once.** Config drift, data mismatches and unserialisable states raise
  ``AirflowFailException`` (a retry cannot fix them); I/O and connection errors stay retryable.
* **Clearing.** If Airflow discarded the task's state while the store still holds states of a
  per-task-instance workflow, the workflow starts over.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.workflow import (
    FileWorkflowStore,
    PostgresWorkflowStore,
    ResumeOptions,
    Workflow,
    WorkflowStore,
)
from airflow_checkpoint_provider.core.workflow.errors import (
    ResumeRefusedError,
    StateNotSerializableError,
)
from airflow_checkpoint_provider.core.workflow.records import DEFAULT_TABLE
from airflow_checkpoint_provider.core.workflow.resume import Validator
from airflow_checkpoint_provider.operators.base import open_store as open_checkpoint_store
from airflow_checkpoint_provider.operators.base import writer
from airflow_checkpoint_provider.workflow.data import DataTargets, EngineDataCheckpoints

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

#: the task_state_store key holding the workflow's pointer
STATE_KEY = "workflow_checkpoint"
DIRECTIVES = ("force_restart", "allow_config_drift", "resume_from", "restore_data")
_PERMANENT = (ResumeRefusedError, StateNotSerializableError)


def _param(context: Context, name: str, explicit: Any) -> Any:
    if explicit is not None:
        return explicit
    params = context.get("params") or {}
    return params.get(name) if hasattr(params, "get") else None


def default_workflow_id(context: Context) -> str:
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    base = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"
    return base if map_index is None or map_index < 0 else f"{base}/{map_index}"


def open_store(
    *, postgres_conn_id: str | None = None, table: str = DEFAULT_TABLE, storage_root: str | None = None
) -> WorkflowStore:
    """The file store under the checkpoint store root, or the PostgreSQL store of ``postgres_conn_id``."""
    if postgres_conn_id:
        from airflow_checkpoint_provider.workflow import engines

        connect, label, _ = engines.pg_connect(postgres_conn_id)
        return PostgresWorkflowStore(connect, location=label, table=table)
    return FileWorkflowStore(open_checkpoint_store(storage_root))  # local or s3:// (its connection's options)


class TaskWorkflow(Workflow):
    """A :class:`Workflow` whose refusals fail the task without retries."""

    def _open(self):
        try:
            return super()._open()
        except _PERMANENT as exc:
            raise AirflowFailException(str(exc)) from exc

    def save(self, step: Any, state: Any, **kwargs: Any):
        try:
            return super().save(step, state, **kwargs)
        except _PERMANENT as exc:
            raise AirflowFailException(str(exc)) from exc

    def steps(self, items: Any):
        try:
            yield from super().steps(items)
        except _PERMANENT as exc:
            raise AirflowFailException(str(exc)) from exc


def workflow_checkpoints(
    context: Context,
    *,
    config: Any = None,
    workflow_id: str | None = None,
    validate: Validator | None = None,
    data: DataTargets | None = None,
    initial: Any = None,
    history: int | None = -1,
    postgres_conn_id: str | None = None,
    table: str = DEFAULT_TABLE,
    storage_root: str | None = None,
    force_restart: bool | None = None,
    allow_config_drift: bool | None = None,
    resume_from: int | str | None = None,
    restore_data: bool | None = None,
    expire_on_success: bool = False,
    lock_timeout: float | None = None,
) -> Workflow:
    """Workflow checkpoints for the running task (see the module docstring).

    :param config: the inputs a resume must not silently change (JSON; only hashes are stored).
    :param workflow_id: resume across DAG runs under this id (default: the run's ``workflow_id``
        Param, else this task instance).
    :param validate: ``validate(step) -> {name: value}``, the live fingerprints of a step's data:
        recorded with each save, compared on resume.
    :param data: take a data checkpoint with each save (:class:`DataTargets`), and restore it with
        ``restore_data``.
    :param history: states kept per workflow (default ``[checkpoint] workflow_history``; None: all).
    :param postgres_conn_id: keep the states in this PostgreSQL database instead of the file store.
    :param expire_on_success: delete the workflow's states once ``summary()`` completes it.
    """
    wid = _param(context, "workflow_id", workflow_id) or default_workflow_id(context)
    store = open_store(postgres_conn_id=postgres_conn_id, table=table, storage_root=storage_root)
    if postgres_conn_id and data is not None:
        _refuse_store_among_data(postgres_conn_id, data)
    directives = {
        n: _param(context, n, v)
        for n, v in (
            ("force_restart", force_restart),
            ("allow_config_drift", allow_config_drift),
            ("resume_from", resume_from),
            ("restore_data", restore_data),
        )
    }
    pointer = _Pointer(context, wid, store.location)
    options = pointer.directives(
        directives, explicit_id=bool(workflow_id or _param(context, "workflow_id", None)), store=store
    )
    checkpointer = None
    if data is not None:
        data_store = open_checkpoint_store(storage_root)
        checkpointer = EngineDataCheckpoints(data, data_store, context, storage_root=storage_root)
    who = {**writer(context, context["ti"].task_id), "map_index": getattr(context["ti"], "map_index", -1)}
    return TaskWorkflow(
        store,
        wid,
        config=config,
        options=options,
        validate=validate,
        data=checkpointer,
        history=settings.workflow_history() if history == -1 else history,
        initial=initial,
        writer=who,
        lock_timeout=settings.lock_timeout() if lock_timeout is None else lock_timeout,
        expire_on_success=expire_on_success,
        on_event=pointer.update,
    )


def _refuse_store_among_data(conn_id: str, data: DataTargets) -> None:
    from airflow_checkpoint_provider.hooks.postgres import PgCheckpointHook

    store_target = PgCheckpointHook(postgres_conn_id=conn_id).target()
    data_target = PgCheckpointHook(postgres_conn_id=data.postgres_conn_id or settings.postgres_conn_id()).target()
    same_server = (store_target.host, store_target.port) == (data_target.host, data_target.port)
    if same_server and store_target.dbname in set(data.postgres):
        raise AirflowFailException(
            f"the workflow store's database {store_target.dbname!r} ({store_target.label}) is among the databases "
            "the data checkpoints capture and restore_data would restore, which would roll the workflow's own "
            "states back with the data. HINT: keep the workflow store in another database (its own connection)"
        )


class _Pointer:
    """The workflow's entry in the task's ``task_state_store``: applied directives and the latest save."""

    def __init__(self, context: Context, workflow_id: str, location: str) -> None:
        self.tss = context.get("task_state_store")
        self.workflow_id, self.location = workflow_id, location
        dag_run = context.get("dag_run")
        self.clear_number = int(getattr(dag_run, "clear_number", 0) or 0)
        self.value: dict[str, Any] = {}
        if self.tss is not None:
            try:
                got = self.tss.get(STATE_KEY)
            except Exception as exc:
                log.warning("Cannot read task_state_store key %s: %s", STATE_KEY, exc)
                self.tss = None
            else:
                self.value = got if isinstance(got, dict) and got.get("workflow_id") == workflow_id else {}

    def directives(self, asked: dict[str, Any], *, explicit_id: bool, store: WorkflowStore) -> ResumeOptions:
        force, drift = bool(asked["force_restart"]), bool(asked["allow_config_drift"])
        resume_from, restore = asked["resume_from"], bool(asked["restore_data"])
        if resume_from == "":
            resume_from = None
        if self.tss is not None and self.value.get("clear_number") == self.clear_number:
            if force or resume_from is not None or restore:
                log.info(
                    "Workflow %r: this run's %s already applied before the retry; resuming from the last save",
                    self.workflow_id,
                    ", ".join(
                        n
                        for n, v in (("force_restart", force), ("resume_from", resume_from), ("restore_data", restore))
                        if v
                    ),
                )
            force, resume_from, restore = False, None, False
        elif self.tss is not None and not self.value and not explicit_id and not force:
            try:
                saved = store.entries(self.workflow_id)
            except CheckpointError:
                saved = []
            if saved:
                log.warning(
                    "Workflow %r: Airflow holds no task state for this task instance, but %d saved state(s) "
                    "exist: the task state was cleared, so the workflow starts over",
                    self.workflow_id,
                    len(saved),
                )
                force, resume_from = True, None
        return ResumeOptions(
            force_restart=force, allow_config_drift=drift, resume_from=resume_from, restore_data=restore
        )

    def update(self, kind: str, info: dict[str, Any]) -> None:
        if self.tss is None:
            return
        value = {
            **self.value,
            "workflow_id": self.workflow_id,
            "store": self.location,
            "clear_number": self.clear_number,
        }
        if kind == "resumed":
            value["resumed_from"] = info.get("resumed_from")
        elif kind == "saved":
            value["latest"] = {k: info.get(k) for k in ("step", "seq", "saved_at", "sha256", "data_checkpoint")}
        elif kind == "completed":
            value["status"] = info.get("status")
        value.setdefault("status", "running")
        if kind != "completed":
            value["status"] = "running"
        try:
            self.tss.set(STATE_KEY, value)
        except Exception as exc:
            log.warning("Cannot write task_state_store key %s: %s", STATE_KEY, exc)
            return
        self.value = value
