"""Rollback copies across the stores, and the policy that expires them.

Every side-by-side restore keeps what it replaced as a *rollback copy* (a database
``<db>__rollback_<ckpt>_<ts>``, a Redis spare db, an index ``<index>__rollback_<ckpt>_<ts>``).
They are a fast way back, but they fill production servers, so ``[checkpoint] rollback_keep``
expires them after each successful restore, and ``airflow-checkpoint rollbacks`` lists and
drops them by hand. A copy is never dropped while a restore of its server is running.

The policy is ``last=N`` (keep the newest N copies of each restored database, db or index),
``max_age=SECONDS`` (drop copies older than that), both comma-separated, or ``all`` (keep
everything).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC
from typing import Any

from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.manifest import parse_ts


@dataclass(frozen=True)
class RollbackCopy:
    """One rollback copy in a live store, as every engine lists it."""

    component: str  #: ``postgres`` / ``redis`` / ``search``
    name: str  #: what to pass to ``drop`` (a database, ``db15``, an index)
    of: str  #: what it is a copy of (the database, ``db0``, the index)
    checkpoint: str  #: the (short) id of the checkpoint whose restore replaced it
    created_at: str  #: RFC 3339 UTC
    size: int | None = None  #: bytes, when the server says cheaply
    items: int | None = None  #: rows are not counted; keys of a Redis db, documents of an index

    @property
    def age(self) -> float:
        try:
            return max(0.0, time.time() - parse_ts(self.created_at).timestamp())
        except ValueError:
            return 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "age_seconds": int(self.age)}


@dataclass(frozen=True)
class RollbackPolicy:
    keep_last: int | None = None  #: None: no count limit
    max_age: float | None = None  #: None: no age limit

    @classmethod
    def parse(cls, text: str) -> RollbackPolicy:
        text = (text or "").strip()
        if text in ("", "all"):
            return cls()
        keep_last = max_age = None
        for part in text.split(","):
            key, sep, value = part.strip().partition("=")
            try:
                if not sep:
                    raise ValueError
                if key == "last":
                    keep_last = int(value)
                    if keep_last < 0:
                        raise ValueError
                elif key == "max_age":
                    max_age = float(value)
                    if max_age < 0:
                        raise ValueError
                else:
                    raise ValueError
            except ValueError:
                raise CheckpointError(
                    f"rollback_keep {text!r}: {part.strip()!r} is not last=N or max_age=SECONDS",
                    hint="e.g. 'last=1,max_age=86400', or 'all' to keep every copy",
                ) from None
        return cls(keep_last, max_age)

    def expired(self, copies: Iterable[RollbackCopy]) -> list[RollbackCopy]:
        """The copies the policy drops: beyond the newest ``keep_last`` of each original, or older
        than ``max_age``."""
        by_original: dict[tuple[str, str], list[RollbackCopy]] = {}
        for c in copies:
            by_original.setdefault((c.component, c.of), []).append(c)
        out = []
        for group in by_original.values():
            group.sort(key=lambda c: (c.created_at, c.name), reverse=True)
            for i, c in enumerate(group):
                if (self.keep_last is not None and i >= self.keep_last) or (
                    self.max_age is not None and c.age > self.max_age
                ):
                    out.append(c)
        return out


def normal_ts(value: str) -> str:
    """``2026-12-01T08:46:51Z`` (or with microseconds) -> the format's RFC 3339 form."""
    from datetime import datetime

    from airflow_checkpoint_provider.core.manifest import format_ts

    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return format_ts(datetime.strptime(value, fmt).replace(tzinfo=UTC))
        except (TypeError, ValueError):
            continue
    return value


def list_copies(component: str, target: Any, store: Any = None) -> list[RollbackCopy]:
    from airflow_checkpoint_provider.core.engines import registry

    return registry.get(component).rollbacks(target, store)


def drop_copy(component: str, target: Any, name: str, store: Any = None) -> None:
    from airflow_checkpoint_provider.core.engines import registry

    registry.get(component).drop_rollback(target, name, store)


def expire(component: str, target: Any, policy: RollbackPolicy, store: Any = None) -> list[RollbackCopy]:
    """Drop the copies on ``target`` that ``policy`` expires. The caller holds the server's lease
    (after a restore) or has checked that no restore holds it (the CLI)."""
    if policy == RollbackPolicy():
        return []
    doomed = policy.expired(list_copies(component, target, store))
    for c in doomed:
        drop_copy(component, target, c.name, store)
    return doomed


@dataclass
class SweepReport:
    """What :func:`sweep` did: per copy ``dropped`` / ``would drop`` / ``skipped``, and the stores it
    could not reach."""

    rows: list[tuple[RollbackCopy, str]]
    unreachable: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "copies": [{**c.to_dict(), "action": action} for c, action in self.rows],
            "unreachable": dict(self.unreachable),
        }


def sweep(store: Any, targets: dict[str, Any], policy: RollbackPolicy, *, execute: bool) -> SweepReport:
    """Apply ``policy`` to the rollback copies on every target (the retention run's sweep).

    A copy on a server that a restore holds (its lease is live) is skipped: that restore prunes
    its own copies when it succeeds. A store that does not answer is reported and left for the
    next run; the others are still swept. Nothing is dropped unless ``execute``.
    """
    from airflow_checkpoint_provider.core.lease import live_holders, target_key

    rows: list[tuple[RollbackCopy, str]] = []
    unreachable: dict[str, str] = {}
    for component, target in sorted(targets.items()):
        try:
            copies = list_copies(component, target, store)
        except CheckpointError as exc:
            unreachable[component] = exc.message.splitlines()[0]
            continue
        busy = live_holders(store.fs, [target_key(component, target.public())])
        for c in policy.expired(copies):
            if busy:
                rows.append((c, f"skipped: restore {busy[0].holder} is running on that server"))
            elif not execute:
                rows.append((c, "would drop"))
            else:
                try:
                    drop_copy(component, target, c.name, store)
                except CheckpointError as exc:
                    unreachable[component] = exc.message.splitlines()[0]
                    rows.append((c, f"kept: {exc.message.splitlines()[0]}"))
                else:
                    rows.append((c, "dropped"))
    return SweepReport(rows, unreachable)
