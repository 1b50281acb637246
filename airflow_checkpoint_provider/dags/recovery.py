"""Factories of the ready-made restore DAGs: ``recovery_lkg`` (one click) and ``restore_checkpoint``.

Both drain first and resume afterwards (a setup/teardown pair, so resume runs even when
the restore fails): they pause the provider's own capture DAGs (and any listed in the
form), then run the drain callable and command. The callable and the commands come from
the factory's arguments or the ``[checkpoint]`` options, never from a run's conf.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.dags.alerts import Notifier, alert_args
from airflow_checkpoint_provider.dags.choices import checkpoint_choices
from airflow_checkpoint_provider.dags.params import (
    health_kwargs_from_params,
    optional_text,
    restore_kwargs_from_params,
    restore_params,
)
from airflow_checkpoint_provider.operators.drain import DrainOperator
from airflow_checkpoint_provider.operators.restore import RestoreOperator
from airflow_checkpoint_provider.sensors.health import HealthCheckSensor

#: the provider's own capture DAGs, paused during a restore
CAPTURE_DAG_IDS = ("checkpoint_scheduled", "checkpoint_pre_migration", "checkpoint_pre_deploy")

RECOVERY_DOC = """One click: restore the last-known-good checkpoint, then check health.

First it drains: it pauses the capture DAGs (and the DAGs you list) and runs the drain
callable and command configured for this deployment; afterwards it resumes them, even if
the restore fails. The restore loads everything side by side, verifies it against the
checkpoint's fingerprints and only then cuts over, after taking a safety checkpoint of the
current state. Use ``dry_run`` to see the plan first.
"""

RESTORE_DOC = """Restore a chosen checkpoint, into the original servers or other ones, then check health.

Pick the checkpoint (the newest are listed with their time, size, tags and the LKG mark;
type an older id into *Other checkpoint id*), the components, and the target connections.
A destructive restore only runs when ``confirm`` equals the checkpoint id; a dry run only
prints the plan and needs no confirmation.
"""


def _drain_pair(
    *, drain_callable: str | None, drain_command: str | None, resume_command: str | None, pause_dags: Sequence[str] = ()
) -> tuple[DrainOperator, DrainOperator]:
    kwargs: dict[str, Any] = {
        "callable_path": drain_callable if drain_callable is not None else settings.drain_callable(),
        "pause_dags": "{{ %r + (params.pause_dags or []) }}" % (list(pause_dags),),
        "optional_pause_dags": "{{ %s if params.pause_capture_dags else [] }}" % (list(CAPTURE_DAG_IDS),),
        "dry_run": "{{ params.dry_run }}",
    }
    drain = DrainOperator(
        task_id="drain",
        action="drain",
        command=drain_command if drain_command is not None else settings.drain_command(),
        **kwargs,
    )
    resume = DrainOperator(
        task_id="resume",
        action="resume",
        command=resume_command if resume_command is not None else settings.resume_command(),
        **kwargs,
    )
    return drain, resume


def _health(restore: RestoreOperator, **kwargs: Any) -> HealthCheckSensor:
    return HealthCheckSensor(
        task_id="health_check",
        checkpoint_id=cast(Any, restore.output)["checkpoint_id"],
        expectations=cast(Any, restore.output)["expectations"],
        enabled="{{ not params.dry_run }}",
        poke_interval=5,
        timeout=300,
        **health_kwargs_from_params(),
        **kwargs,
    )


def recovery_lkg(
    dag_id: str = "recovery_lkg",
    *,
    drain_callable: str | None = None,
    drain_command: str | None = None,
    resume_command: str | None = None,
    pause_dags: Sequence[str] = (),
    notifiers: Sequence[Notifier] | None = None,
) -> DAG:
    """Restore the last-known-good checkpoint, then verify health.

    :param drain_callable: ``"pkg.mod:func"`` called with ``action="drain"``/``"resume"``;
        default ``[checkpoint] drain_callable``.
    :param drain_command: shell command run before the restore; default ``[checkpoint] drain_command``.
    :param resume_command: shell command run after it; default ``[checkpoint] resume_command``.
    :param pause_dags: DAG ids always paused during the restore (besides the capture DAGs).
    :param notifiers: called when a task fails, besides those of ``[checkpoint] notify_*``.
    """
    with DAG(
        dag_id=dag_id,
        description="Restore the last-known-good checkpoint, then verify health",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        params=restore_params(),
        tags=["checkpoint", "restore"],
        doc_md=RECOVERY_DOC,
        default_args=alert_args(notifiers),
    ) as dag:
        drain, resume = _drain_pair(
            drain_callable=drain_callable,
            drain_command=drain_command,
            resume_command=resume_command,
            pause_dags=pause_dags,
        )
        restore = RestoreOperator(task_id="restore", checkpoint_id="last-known-good", **restore_kwargs_from_params())
        health = _health(restore)
        drain >> restore >> health >> resume
        drain.as_setup() >> resume.as_teardown(setups=drain)
    return dag


def restore_checkpoint(
    dag_id: str = "restore_checkpoint",
    *,
    drain_callable: str | None = None,
    drain_command: str | None = None,
    resume_command: str | None = None,
    pause_dags: Sequence[str] = (),
    choices: int = 25,
    notifiers: Sequence[Notifier] | None = None,
) -> DAG:
    """Restore a chosen checkpoint (confirmation required), then verify health.

    :param choices: how many of the newest checkpoints the form offers.
    Other parameters as for :func:`recovery_lkg`.
    """
    ids, labels = checkpoint_choices(limit=choices)
    params: dict[str, Param] = {
        "checkpoint_id": Param(
            ids[0],
            type="string",
            enum=ids,
            values_display=labels,
            title="Checkpoint",
            description="last-known-good, or one of the newest checkpoints (id, time, size, "
            "tags; LKG marks the last-known-good).",
        ),
        "other_checkpoint_id": optional_text(
            "Other checkpoint id",
            "Any checkpoint id (see `airflow-checkpoint list`), e.g. one too old to be listed above; when set it "
            "is restored instead of Checkpoint.",
        ),
        "confirm": optional_text(
            "Confirm",
            "Type the checkpoint id again (or last-known-good) to allow a restore that replaces "
            "data. Not needed for a dry run.",
        ),
        **restore_params(chosen=True),
    }
    with DAG(
        dag_id=dag_id,
        description="Restore a chosen checkpoint (confirmation required), then verify health",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        params=params,
        tags=["checkpoint", "restore"],
        doc_md=RESTORE_DOC,
        default_args=alert_args(notifiers),
    ) as dag:

        @task
        def check_confirmation(params: dict) -> str:
            """Return the exact checkpoint id the restore will use; refuse a destructive restore unless
            ``confirm`` repeats it."""
            cid = params.get("other_checkpoint_id") or params["checkpoint_id"]
            if not isinstance(cid, str) or not cid.strip():
                raise AirflowFailException(f"checkpoint id {cid!r} is not a non-empty string; nothing was restored")
            cid = cid.strip()
            if params["dry_run"]:
                print(f"dry run of {cid}: no confirmation needed")
                return cid
            confirm = params.get("confirm")
            if not isinstance(confirm, str) or confirm.strip() != cid:
                raise AirflowFailException(
                    f"confirm ({confirm!r}) does not equal the checkpoint id ({cid!r}); nothing was restored. "
                    "Type the checkpoint id into 'confirm', or run a dry run first."
                )
            return cid

        drain, resume = _drain_pair(
            drain_callable=drain_callable,
            drain_command=drain_command,
            resume_command=resume_command,
            pause_dags=pause_dags,
        )
        confirmed = check_confirmation()  # type: ignore[call-arg,misc]  # Airflow passes params
        restore = RestoreOperator(task_id="restore", checkpoint_id=confirmed, **restore_kwargs_from_params(chosen=True))
        health = _health(restore)
        confirmed >> drain >> restore >> health >> resume
        drain.as_setup() >> resume.as_teardown(setups=drain)
    return dag
