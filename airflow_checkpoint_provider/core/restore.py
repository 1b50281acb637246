"""Restore plans, outcomes and health results shared by the engines and the orchestration.

Every engine restores *side by side, then cuts over*: it loads the checkpoint next to the
current state (``<db>__restoring``, a spare Redis db, ``<index>__restoring_<id>``), verifies
it against the manifest's fingerprints, and only then swaps it into place in one short
step, keeping the previous state as a *rollback copy*. A failure before the cut-over leaves
the original untouched; a failure during it rolls back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PlanItem:
    """One thing a restore would do to one store."""

    component: str  #: ``postgres`` / ``redis`` / ``search``
    source: str  #: what is restored (database, ``db0``, index)
    target: str  #: where it lands once cut over
    action: str  #: e.g. ``replace`` (target exists), ``create`` (target absent)
    staging_name: str = ""  #: the side-by-side name used before the cut-over
    conflicts: list[str] = field(default_factory=list)  #: sessions, busy keys, open indices, leftovers
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        text = f"{self.component}: {self.action} {self.target} from {self.source}"
        if self.staging_name:
            text += f" (loaded first as {self.staging_name})"
        for c in self.conflicts:
            text += f"\n    conflict: {c}"
        for n in self.notes:
            text += f"\n    note: {n}"
        return text


@dataclass
class RestorePlan:
    """What a restore would change, and why it could not (``problems`` blocks it)."""

    checkpoint_id: str
    items: list[PlanItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  #: incompatibilities: refuse to start
    #: what changed since the checkpoint (schema, config; core/drift.py): what the restore undoes
    drift: list[str] = field(default_factory=list)
    drift_accepted: bool = False  #: ``allow_drift``: the drift lines are accepted notes, not warnings

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "items": [i.to_dict() for i in self.items],
            "problems": list(self.problems),
            "drift": list(self.drift),
            "drift_accepted": self.drift_accepted,
            "ok": self.ok,
        }

    def describe(self, *, problems: bool = True) -> str:
        """The plan as text; ``problems=False`` leaves out the PROBLEM lines (to report them last)."""
        lines = [f"restore plan for {self.checkpoint_id}:"]
        lines += [f"  {item}" for item in self.items] or ["  (nothing to restore)"]
        label = "drift (accepted)" if self.drift_accepted else "DRIFT"
        lines += [f"  {label}: {d}" for d in self.drift]
        if problems:
            lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


@dataclass
class RestoreOutcome:
    """What a restore of one store did."""

    component: str
    restored: list[str] = field(default_factory=list)  #: targets now serving the checkpoint's data
    rollback: list[str] = field(default_factory=list)  #: rollback copies of what was replaced
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HealthCheck:
    """One health check: which, whether it passed, and by how much it missed."""

    component: str
    check: str  #: e.g. ``connect``, ``table public.orders rows``, ``index products docs``
    ok: bool
    expected: Any = None
    actual: Any = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        status = "ok" if self.ok else "FAILED"
        text = f"{self.component}: {self.check}: {status}"
        if not self.ok and (self.expected is not None or self.actual is not None):
            text += f" (expected {self.expected}, got {self.actual})"
        return text + (f" - {self.detail}" if self.detail else "")


def within(expected: int, actual: int, tolerance: float) -> bool:
    """``actual`` is within ``tolerance`` (a fraction, 0.0 = exact) of ``expected``."""
    return abs(actual - expected) <= tolerance * max(expected, 1)
