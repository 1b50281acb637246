"""Factories of the lifecycle DAGs: ``checkpoint_verify`` (integrity monitoring) and ``checkpoint_retention``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.states import LEVELS
from airflow_checkpoint_provider.dags.alerts import Notifier, alert_args

VERIFY_DOC = """Integrity monitoring: verify every checkpoint not yet verified at the level, plus a rolling sample.

Levels: ``basic`` (sizes, the manifests' checksums), ``standard`` (the sha256 of every artifact),
``deep`` (also decompress and parse every artifact: ``pg_restore --list``, the full RDB walk with
its CRC64, the search snapshot in its repository). Each outcome is recorded beside the archive.
A damaged checkpoint is marked ``corrupt`` and is never restored as the LKG; if it was the LKG,
the LKG falls back to the newest good checkpoint and this run fails, so that alerting fires.
With a *Checkpoint* it verifies just that one (the page's **Verify now**). The ``lkg_age``
task fails when the LKG is older than ``[checkpoint] lkg_max_age``.
"""


def checkpoint_verify(
    dag_id: str = "checkpoint_verify", *, schedule: Any = None, notifiers: Sequence[Notifier] | None = None
) -> DAG:
    """Verify the store's checkpoints on a schedule (``[checkpoint] verify_schedule``, daily), then check the
    LKG's age.

    :param notifiers: called when a task fails, besides those of ``[checkpoint] notify_*``.
    """
    from airflow_checkpoint_provider.operators.lifecycle import CheckLkgAgeOperator, VerifyCheckpointsOperator

    params = {
        "checkpoint_id": Param(
            None,
            type=["null", "string"],
            title="Checkpoint",
            description="Verify just this checkpoint (an id or last-known-good) at the level; empty: every "
            "checkpoint not yet verified at the level, plus the rolling sample.",
        ),
        "level": Param(
            settings.verify_level(),
            type=["null", "string"],
            enum=[*LEVELS, None],
            title="Verification level",
            description="basic: sizes and manifests; standard: sha256 of every artifact; deep: also "
            "decompress and parse every artifact and check the search snapshot. Empty: [checkpoint] verify_level.",
        ),
        "sample": Param(
            settings.verify_sample(),
            type="integer",
            minimum=0,
            title="Rolling sample",
            description="Already verified checkpoints to verify again (verified longest ago first).",
        ),
    }
    with DAG(
        dag_id=dag_id,
        description="Verify checkpoints at a level; a damaged LKG falls back",
        schedule=schedule or settings.verify_schedule(),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        params=params,
        dagrun_timeout=timedelta(hours=12),
        tags=["checkpoint", "lifecycle"],
        doc_md=VERIFY_DOC,
        default_args=alert_args(notifiers),
    ) as dag:
        # two leaves, side by side: either failing fails the run (a downstream all_done task would hide it)
        VerifyCheckpointsOperator(
            task_id="verify",
            level="{{ params.level or '' }}",
            sample="{{ params.sample }}",
            checkpoint_id="{{ params.checkpoint_id or '' }}",
        )
        CheckLkgAgeOperator(task_id="lkg_age")
    return dag


RETENTION_DOC = """Retention: delete the checkpoints no rule of ``[checkpoint] retention`` keeps (daily, 02:00 UTC).

Rules: keep_last, keep_within, keep_hourly/daily/weekly/monthly/yearly, rules per tag and the
storage cap max_total_bytes. Always kept: the LKG, pinned checkpoints, the newest checkpoint in
the ``lkg_requires`` state, and checkpoints a restore uses. Each checkpoint is logged with the
rule that keeps it or the reason it goes; ``dry_run`` only logs. A checkpoint goes as a unit:
its store copy of the manifest first, then the archive, its records and its search snapshot; a
crash or a search cluster that is down leaves a tombstone the next run finishes.

Then ``expire_rollbacks`` applies ``[checkpoint] rollback_keep`` to the rollback copies in the
live stores (databases, Redis spare dbs, indices and rollback snapshots a restore kept), also
those of restores that failed or were killed. Copies on a server a restore holds are skipped.
"""


def checkpoint_retention(
    dag_id: str = "checkpoint_retention", *, schedule: Any = None, notifiers: Sequence[Notifier] | None = None
) -> DAG:
    """Expire checkpoints by the retention policy (``[checkpoint] retention_schedule``, 02:00 UTC).

    :param notifiers: as for :func:`checkpoint_verify`.
    """
    from airflow_checkpoint_provider.operators.lifecycle import ExpireCheckpointsOperator, ExpireRollbacksOperator

    params = {
        "dry_run": Param(False, type="boolean", title="Dry run", description="Only log what would be deleted."),
        "policy": Param(
            None,
            type=["null", "string"],
            title="Policy (JSON)",
            description="A retention policy for this run instead of [checkpoint] retention.",
        ),
    }
    with DAG(
        dag_id=dag_id,
        description="Delete the checkpoints no retention rule keeps",
        schedule=schedule or settings.retention_schedule(),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        params=params,
        tags=["checkpoint", "lifecycle"],
        doc_md=RETENTION_DOC,
        default_args=alert_args(notifiers),
    ) as dag:
        expire = ExpireCheckpointsOperator(
            task_id="expire", policy="{{ params.policy or '' }}", plan_only="{{ params.dry_run }}"
        )
        rollbacks = ExpireRollbacksOperator(
            task_id="expire_rollbacks", plan_only="{{ params.dry_run }}", trigger_rule="all_done"
        )
        expire >> rollbacks
    return dag


DRILL_DOC = """Restore drill: prove a checkpoint restores, without touching production (weekly).

It restores the LKG (or the chosen checkpoint, or the newest verified one) side by side on the
target servers (production or scratch connections), compares every copy with the manifest's
fingerprints, records the evidence (per-store durations, sizes) and drops the copies: no safety
checkpoint, no cut-over, no session terminated. A failure marks the checkpoint ``drill_failed``
and fails the run; the LKG stays where it is. With ``[checkpoint] drill_pre_migration`` it also
runs after each pre-migration checkpoint, and drills that one.
"""


def checkpoint_restore_drill(
    dag_id: str = "checkpoint_restore_drill", *, schedule: Any = None, notifiers: Sequence[Notifier] | None = None
) -> DAG:
    """Drill a checkpoint on a schedule (``[checkpoint] drill_schedule``, weekly), and after each pre-migration
    checkpoint when ``[checkpoint] drill_pre_migration`` is on.

    :param notifiers: as for :func:`checkpoint_verify`.
    """
    from airflow_checkpoint_provider.dags.params import components_param, connection_params
    from airflow_checkpoint_provider.operators.bundle import tag_asset
    from airflow_checkpoint_provider.operators.drill import NEWEST, DrillCheckpointOperator

    default = "last-known-good" if settings.lkg_requires() == "verified" else NEWEST
    params = {
        "checkpoint_id": Param(
            default,
            type="string",
            minLength=1,
            title="Checkpoint",
            description=f"A checkpoint id, last-known-good, or {NEWEST}.",
        ),
        "components": components_param("drill"),
        **connection_params("Drill "),
    }
    if schedule is None:
        schedule = settings.drill_schedule()
        if settings.drill_pre_migration():
            from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule
            from airflow.sdk.definitions.timetables.trigger import CronTriggerTimetable

            schedule = AssetOrTimeSchedule(
                timetable=CronTriggerTimetable(schedule, timezone="UTC"), assets=tag_asset("pre-migration")
            )
    with DAG(
        dag_id=dag_id,
        description="Restore a checkpoint side by side, verify it, drop the copies",
        schedule=schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        params=params,
        dagrun_timeout=timedelta(hours=12),
        tags=["checkpoint", "lifecycle"],
        doc_md=DRILL_DOC,
        default_args=alert_args(notifiers),
    ) as dag:
        from airflow_checkpoint_provider import engines

        DrillCheckpointOperator(
            task_id="drill",
            checkpoint_id="{{ params.checkpoint_id }}",
            components="{{ params.components }}",
            conn_ids={e.name: "{{ params.%s }}" % e.conn_param for e in engines.engines().values()},
        )
    return dag
