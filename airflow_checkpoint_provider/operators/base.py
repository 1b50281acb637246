"""What every checkpoint operator shares: the store, the run's staging key, XCom shape."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_checkpoint_provider import metrics, settings
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.staging import Staging, staging_key
from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.core.values import split_list
from airflow_checkpoint_provider.hooks.storage import store_kwargs
from airflow_checkpoint_provider.version import __version__

__all__ = ["CaptureOperator", "open_store", "split_list"]

if TYPE_CHECKING:
    from airflow.sdk import Context


def open_store(storage_root: str | None = None, *, create: bool = True) -> Store:
    """The store at ``storage_root`` or ``[checkpoint] storage_root``."""
    root = storage_root or settings.storage_root()
    return Store.open(root, create=create, lock_timeout=settings.lock_timeout(), **store_kwargs(root))


def group_prefix(task_id: str) -> str:
    """``checkpoint.bundle`` -> ``checkpoint``: tasks of one TaskGroup share a staging area."""
    return task_id.rpartition(".")[0]


def run_staging_key(context: Context, task_id: str, explicit: str | None = None) -> str:
    if explicit:
        return staging_key(explicit)
    return staging_key(context["dag"].dag_id, context["run_id"], group_prefix(task_id))


def provenance(context: Context, task_id: str) -> dict[str, Any]:
    ti = context["ti"]
    return {
        "dag_id": context["dag"].dag_id,
        "run_id": context["run_id"],
        "task_id": task_id,
        "try_number": int(getattr(ti, "try_number", 0) or 0),
        "provider_version": __version__,
        "hostname": worker_hostname(context),
    }


def worker_hostname(context: Context) -> str:
    """The worker's name as Airflow knows it (``[core] hostname_callable``), else the host's name."""
    return str(getattr(context["ti"], "hostname", None) or socket.gethostname())


def captured_on(context: Context) -> dict[str, Any]:
    """Where a capture ran: the worker, the executor queue, the try (recorded in the manifest)."""
    ti = context["ti"]
    return {
        "hostname": worker_hostname(context),
        "queue": str(getattr(ti.task, "queue", "") or ""),
        "task_id": ti.task_id,
        "try_number": int(getattr(ti, "try_number", 0) or 0),
    }


def writer(context: Context, task_id: str) -> dict[str, Any]:
    """Who writes a staging area: the task (dag, run, task, try) and its process."""
    from airflow_checkpoint_provider.core.lease import this_process

    return {**provenance(context, task_id), **this_process()}


def permanent(exc: BaseException) -> bool:
    """Errors a retry cannot fix: wrong credentials or names, refused settings, bad archives."""
    from airflow_checkpoint_provider.core.errors import (
        AuthenticationError,
        CheckpointError,
        ConnectionFailedError,
        LockTimeoutError,
        NotFoundError,
        StoreFullError,
    )

    if type(exc).__name__ == "AirflowNotFoundException":  # the connection id is not defined
        return True
    from airflow_checkpoint_provider.core.lease import LeaseHeldError

    if isinstance(exc, (ConnectionFailedError, LockTimeoutError, StoreFullError, LeaseHeldError)):
        return False
    return isinstance(exc, (AuthenticationError, NotFoundError, CheckpointError))


def fail_fast(exc: BaseException) -> BaseException:
    """Turn a permanent error into one Airflow does not retry; keep the message."""
    return AirflowFailException(str(exc)) if permanent(exc) else exc


def artifacts_to_xcom(artifacts: list[Artifact]) -> list[dict[str, Any]]:
    return [a.to_dict() for a in artifacts]


def artifacts_from_xcom(items: list[dict[str, Any]]) -> list[Artifact]:
    return [Artifact.from_dict(d) for d in items]


class CaptureOperator(BaseOperator):
    """Base of the capture operators: stream one store into the run's staging area.

    Subclasses implement :meth:`capture` and :meth:`config`. The XCom result is small,
    JSON-safe and secret-free: the artifact descriptors and the public capture config.

    :param storage_root: store root URI; default ``[checkpoint] storage_root``.
    :param staging_key: share a staging area explicitly; by default it is derived from the
        dag id, run id and the enclosing TaskGroup, so captures and the bundle of one group meet.
    :param enabled: templated switch; when false the task is skipped (lets a trigger-form
        Param choose the components).
    """

    component: str = ""
    task_name: str = ""  #: the task id the checkpoint task group gives it
    template_fields: tuple[str, ...] = ("storage_root", "staging_key", "enabled")
    #: ``checkpoint_task_group`` keyword -> this operator's keyword ("*": a dict merged into the kwargs)
    group_options: dict[str, str] = {}
    #: ``RestoreOperator`` keyword -> an option of this engine's restore ("*": a dict merged into them)
    restore_kwargs: dict[str, str] = {}
    #: the keyword naming what to capture (databases, indices), for callers that pick by name; None: all
    names_option: str | None = None

    def __init__(
        self,
        *,
        storage_root: str | None = None,
        staging_key: str | None = None,
        enabled: bool | str = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.storage_root = storage_root
        self.staging_key = staging_key
        self.enabled = enabled

    @property
    def conn_id(self) -> str:
        """The Airflow connection this capture reads (the engine's ``conn_param`` argument)."""
        from airflow_checkpoint_provider.core.engines import registry

        return getattr(self, registry.get(self.component).conn_param)

    def target(self) -> Any:
        """The engine target, from the operator's connection."""
        from airflow_checkpoint_provider import engines

        return engines.target(self.component, self.conn_id)

    # ---- how the ready-made DAGs offer this engine (trigger-form Params) -------------------------

    @classmethod
    def capture_params(cls) -> dict[str, Any]:
        """This engine's fields of the capture DAGs' trigger forms."""
        return {}

    @classmethod
    def capture_kwargs(cls) -> dict[str, Any]:
        """This operator's keywords in the capture DAGs, templated on :meth:`capture_params`."""
        return {}

    @classmethod
    def restore_params(cls, *, chosen: bool) -> dict[str, Any]:
        """This engine's fields of the restore DAGs' forms (``chosen``: restore_checkpoint, where a
        subset can be picked; else recovery_lkg too)."""
        return {}

    @classmethod
    def restore_options(cls, *, chosen: bool) -> dict[str, Any]:
        """This engine's restore options in the restore DAGs, templated on :meth:`restore_params`."""
        return {}

    @classmethod
    def default_capture_options(cls) -> dict[str, Any]:
        """This operator's keywords from the ``[checkpoint]`` options, as the ready-made DAGs pass them
        (for ``airflow-checkpoint create``, which has no trigger form)."""
        return {}

    @classmethod
    def default_restore_options(cls) -> dict[str, Any]:
        """This engine's restore options from the ``[checkpoint]`` options (for ``airflow-checkpoint restore``)."""
        return {}

    def capture(self, staging: Staging, target: Any) -> list[Artifact]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def before_capture(self, context: Context, store: Store, target: Any) -> str:
        """Heal interrupted restores, then wait until no restore holds this server. Returns its lease key."""
        from airflow_checkpoint_provider.core import leftovers
        from airflow_checkpoint_provider.core.lease import target_key, wait_for_restores
        from airflow_checkpoint_provider.operators.heal import heal, liveness

        key = target_key(self.component, target.public())
        heal(store, context, [key])
        wait_for_restores(store.fs, [key], timeout=settings.capture_lease_wait(), is_alive=liveness(context))
        try:
            for line in leftovers.drop(self.component, target, store, **self.leftover_options()):
                self.log.info("Removed the leftover %s of a restore or capture that died", line)
        except Exception as exc:
            self.log.warning("Removing leftovers on %s failed: %s", target.label, exc)
        return key

    def leftover_options(self) -> dict[str, Any]:
        """Engine-specific options of :func:`core.leftovers.drop` for this task (the search repository)."""
        return self.default_leftover_options()

    @classmethod
    def default_leftover_options(cls) -> dict[str, Any]:
        """The same from the ``[checkpoint]`` options (for ``airflow-checkpoint cleanup``)."""
        return {}

    def execute(self, context: Context) -> dict[str, Any]:
        if str(self.enabled).lower() in ("false", "0", "no", "off", "none", ""):
            raise AirflowSkipException(f"{self.component} capture disabled for this run")
        try:
            store = open_store(self.storage_root)
            target = self.target()
            key = self.before_capture(context, store, target)
            staging = store.staging(run_staging_key(context, self.task_id, self.staging_key))
            staging.claim(writer(context, self.task_id))
            started = time.monotonic()
            artifacts = self.capture(staging, target)
            metrics.capture_duration(self.component, time.monotonic() - started)
        except Exception as exc:
            raise fail_fast(exc) from exc
        for art in artifacts:
            self.log.info(
                "Captured %s: %s bytes stored (%s raw), sha256 %s", art.name, art.size, art.raw_size, art.sha256
            )
        return {
            "component": self.component,
            "staging": staging.key,
            "config": self.config(),
            "target_key": key,
            "artifacts": artifacts_to_xcom(artifacts),
            "captured_on": captured_on(context),
        }
