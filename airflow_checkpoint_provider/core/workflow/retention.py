"""Retention of workflow checkpoints: by age (default 7 days since the last save), and on success.

``expire`` deletes every workflow whose newest state is older than the age, whatever its status;
a workflow whose lock is held (a task is running it) is skipped and reported. Deleting takes the
workflow's lock, so it never races a writer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from airflow_checkpoint_provider.core.errors import LockTimeoutError
from airflow_checkpoint_provider.core.manifest import utcnow
from airflow_checkpoint_provider.core.workflow.records import (
    WorkflowInfo,
    WorkflowStore,
)

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 7.0


@dataclass(frozen=True)
class Expired:
    workflow: WorkflowInfo
    removed: bool  #: False: a dry run, or its writer was running (``skipped`` says why)
    skipped: str | None = None


def _parse(ts: str) -> datetime | None:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def expire(
    store: WorkflowStore,
    *,
    older_than: timedelta = timedelta(days=DEFAULT_RETENTION_DAYS),
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[Expired]:
    """Delete the workflows not saved for ``older_than``; returns what went (or would go, or was skipped)."""
    cutoff = (now or utcnow()) - older_than
    out = []
    for info in store.workflows():
        updated = _parse(info.updated_at)
        if updated is None or updated >= cutoff:
            continue
        if dry_run:
            out.append(Expired(info, False))
            continue
        try:
            session = store.session(info.workflow_id, timeout=0, owner={"reason": "expire"})
        except LockTimeoutError:
            out.append(Expired(info, False, "a writer is running it"))
            continue
        try:
            n = session.reset()
        finally:
            session.close()
        log.info("Expired workflow %r (%d state(s), last saved %s)", info.workflow_id, n, info.updated_at)
        out.append(Expired(info, True))
    return out
