"""Operators of the checkpoint lifecycle: verify the store at a level, expire by the retention policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_checkpoint_provider import engines, metrics, settings
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.operators.base import open_store

if TYPE_CHECKING:
    from airflow.sdk import Context


def default_targets(log: Any) -> dict[str, Any]:
    """Every engine's target from its default connection; an engine without one is left out (logged)."""
    out = {}
    for name, engine in engines.engines().items():
        conn_id = engines.default_conn_id(engine)
        try:
            out[name] = engines.target(name, conn_id)
        except Exception as exc:
            log.info(
                "No %s target (connection %r: %s): its checks that need the server are skipped",
                engine.title,
                conn_id,
                str(exc).splitlines()[0],
            )
    return out


class VerifyCheckpointsOperator(BaseOperator):
    """Verify every checkpoint not yet verified at ``level``, plus a rolling sample of the others.

    Each verification is recorded beside the archive (core/states.py). A damaged checkpoint is
    marked ``corrupt``; if it is the last-known-good, the LKG falls back to the newest checkpoint
    in the ``[checkpoint] lkg_requires`` state. Either fails the task, so that alerting fires; the
    report is pushed to XCom (key ``report``) first.

    :param level: ``basic``, ``standard`` or ``deep``; default ``[checkpoint] verify_level``.
    :param sample: already verified checkpoints verified again; default ``[checkpoint] verify_sample``.
    :param checkpoint_id: verify just this checkpoint (an id or ``last-known-good``) instead; no sample.
    """

    template_fields = ("level", "sample", "checkpoint_id", "storage_root")

    def __init__(
        self,
        *,
        level: str | None = None,
        sample: int | str | None = None,
        checkpoint_id: str | None = None,
        storage_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.level = level
        self.sample = sample
        self.checkpoint_id = checkpoint_id
        self.storage_root = storage_root

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_checkpoint_provider.core.levels import sweep

        level = self.level or settings.verify_level()
        sample = int(self.sample if self.sample not in (None, "") else settings.verify_sample())
        targets = default_targets(self.log) if level == "deep" else {}
        by = {"dag_id": context["dag"].dag_id, "run_id": context["run_id"], "task_id": self.task_id}
        store, only = self._store_and_requested()
        report = sweep(
            store,
            level,
            sample=sample,
            targets=targets,
            requires=settings.lkg_requires(),
            by=by,
            only=only,
        )
        for row in report.verified:
            self.log.info("%s: %s at %s (%s)", row["checkpoint_id"], row["outcome"], level, row["why"])
        for note in report.unchecked:
            self.log.warning("Not checked: %s", note)
        summary = report.to_dict()
        metrics.verify_failures(len(report.corrupt) + len(report.damaged_entries))
        context["ti"].xcom_push(key="report", value=summary)
        if report.failed:
            lines = [f"corrupt: {cid}" for cid in report.corrupt] + [f"damaged: {d}" for d in report.damaged_entries]
            if report.lkg_fallback:
                fb = report.lkg_fallback
                lines.append(f"the last-known-good {fb['from']} fell back to {fb['to'] or 'nothing'}: {fb['reason']}")
            raise AirflowFailException("checkpoint verification found damage:\n  " + "\n  ".join(lines))
        return summary

    def _store_and_requested(self) -> tuple[Any, str | None]:
        """The store, and the one checkpoint asked for (checked to exist), or None for a sweep."""
        if self.checkpoint_id not in (None, "") and not isinstance(self.checkpoint_id, str):
            raise AirflowFailException(
                f"checkpoint_id arrived as {type(self.checkpoint_id).__name__} {self.checkpoint_id!r}, not as a "
                "string: a natively rendered template changed it; nothing was verified. "
                "HINT: pass the id as a plain string, not through a template"
            )
        only = self.checkpoint_id.strip() if self.checkpoint_id else None
        try:
            store = open_store(self.storage_root)
            if only:
                store.get(only)  # a clear failure for an unknown id, before anything is recorded
        except CheckpointError as exc:
            raise AirflowFailException(str(exc)) from None
        return store, only


def _age_text(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


class CheckLkgAgeOperator(BaseOperator):
    """Send the age of the last-known-good checkpoint (``checkpoint.lkg.age_seconds``); fail when it is too old.

    The age counts from the checkpoint's creation. With a limit, a missing LKG fails too: either
    way no recent checkpoint can be restored as the LKG, and the failure alert names it.

    :param max_age: a duration (``2d``, ``36h``, seconds); default ``[checkpoint] lkg_max_age``; empty: no limit.
    """

    template_fields = ("max_age", "storage_root")

    def __init__(self, *, max_age: str | None = None, storage_root: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_age = max_age
        self.storage_root = storage_root

    def execute(self, context: Context) -> dict[str, Any] | None:
        from airflow_checkpoint_provider.core.retention import parse_duration

        text = self.max_age or settings.lkg_max_age()
        try:
            limit = parse_duration(text, "lkg_max_age") if text else None
        except CheckpointError:
            raise AirflowFailException(
                f"[checkpoint] lkg_max_age is {text!r}, which is not a duration. "
                "HINT: use seconds or units s, m, h, d, w: '2d', '36h'; leave it empty for no limit"
            ) from None
        found = metrics.lkg_age(open_store(self.storage_root))
        if found is None:
            if limit is not None:
                raise AirflowFailException(
                    f"there is no last-known-good checkpoint, and [checkpoint] lkg_max_age is {text}. "
                    "HINT: run checkpoint_scheduled and look at why its runs do not mark an LKG"
                )
            self.log.info("No last-known-good checkpoint yet")
            return None
        cid, age = found
        self.log.info("The last-known-good checkpoint %s is %s old", cid, _age_text(age))
        if limit is not None and age > limit:
            raise AirflowFailException(
                f"the last-known-good checkpoint {cid} is {_age_text(age)} old, older than [checkpoint] "
                f"lkg_max_age {text}: no newer checkpoint became last-known-good. HINT: look at the recent runs "
                "of checkpoint_scheduled (failed captures, or LKG refused) and take a checkpoint"
            )
        return {"checkpoint_id": cid, "age_seconds": int(age), "max_age_seconds": limit}


class _PolicyOperator(BaseOperator):
    """An operator that applies a policy (templated), for real or as a dry run (``plan_only``)."""

    template_fields = ("policy", "plan_only", "storage_root")

    def __init__(
        self,
        *,
        policy: str | None = None,
        plan_only: bool | str = False,
        storage_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.policy = policy
        self.plan_only = plan_only
        self.storage_root = storage_root

    @property
    def executes(self) -> bool:
        """Whether this run deletes for real (``plan_only`` is a bool or its rendered text)."""
        return str(self.plan_only).lower() not in ("1", "true", "yes", "on")


class ExpireCheckpointsOperator(_PolicyOperator):
    """Apply the retention policy: finish earlier deletions, then delete what no rule keeps.

    Every checkpoint is logged with the rule that keeps it or the reason it goes. Search snapshots
    of a cluster that does not answer stay in their tombstones for the next run (logged as
    warnings, and in the XCom under ``pending``).

    :param policy: JSON of a retention policy; default ``[checkpoint] retention``.
    :param plan_only: only log the plan (a dry run).
    """

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_checkpoint_provider.core.expire import expire
        from airflow_checkpoint_provider.core.retention import Policy

        execute = self.executes
        targets = {k: v for k, v in default_targets(self.log).items() if engines.engines()[k].expire is not None}
        report = expire(
            open_store(self.storage_root),
            Policy.parse(self.policy or settings.retention()),
            requires=settings.lkg_requires(),
            targets=targets if execute else {},
            execute=execute,
        )
        for d in report.plan.decisions:
            self.log.info(
                "%s %s: %s",
                "keep" if d.keep else ("delete" if execute else "would delete"),
                d.checkpoint_id,
                "; ".join(d.reasons),
            )
        for warning in report.plan.warnings:
            self.log.warning("%s", warning)
        for line in report.pending:
            self.log.warning("Left for a later run: %s", line)
        return report.to_dict()


class ExpireRollbacksOperator(_PolicyOperator):
    """Apply ``[checkpoint] rollback_keep`` to the rollback copies in the live stores.

    A restore prunes its own copies when it succeeds; this daily sweep also expires the copies of
    restores that failed, were killed, or happened before the policy changed. Copies on a server
    a running restore holds are skipped. A store that does not answer is logged as a warning and
    swept by the next run; the task fails only if every store with copies was unreachable.

    :param policy: ``last=N,max_age=SECONDS`` or ``all``; default ``[checkpoint] rollback_keep``.
    :param plan_only: only log what would be dropped (a dry run).
    """

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_checkpoint_provider.core.rollbacks import RollbackPolicy, sweep

        execute = self.executes
        targets = default_targets(self.log)
        report = sweep(
            open_store(self.storage_root),
            targets,
            RollbackPolicy.parse(self.policy or settings.rollback_keep()),
            execute=execute,
        )
        for c, action in report.rows:
            self.log.info("%s %s %s (copy of %s, %.1f h old)", action, c.component, c.name, c.of, c.age / 3600)
        if not report.rows:
            self.log.info("No rollback copy is past [checkpoint] rollback_keep")
        for component, why in sorted(report.unreachable.items()):
            self.log.warning("Rollback copies on %s left for a later run: %s", component, why)
        if targets and set(report.unreachable) == set(targets):
            raise AirflowFailException(
                "no live store answered, so no rollback copy was swept: "
                + "; ".join(f"{k}: {v}" for k, v in sorted(report.unreachable.items()))
            )
        return report.to_dict()
