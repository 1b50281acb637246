"""Retention: which checkpoints a policy keeps, and why; which go, and why. Pure planning, no I/O.

A :class:`Policy` holds rules as restic's ``forget`` has them, plus rules per tag and a cap:

- ``keep_last N``: the N newest;
- ``keep_within D``: every checkpoint younger than D (``7d``, ``36h``, ``1w2d``), counted from *now*;
- ``keep_hourly``/``daily``/``weekly``/``monthly``/``yearly N``: the newest checkpoint of each of
  the N most recent hours/days/ISO weeks/months/years that hold one (UTC);
- ``tags: {tag: rules}``: a checkpoint carrying one of these tags is judged by that tag's rules
  (the first such tag in the policy's order) instead of the default rules, and counted only
  among checkpoints of the same group;
- ``max_total_bytes``: when what the rules keep is larger, the oldest unprotected checkpoints go
  first until it fits; if the protected ones alone exceed it, the plan warns.

Always kept, whatever the rules (**protected**): the LKG, pinned checkpoints, the newest
checkpoint in the ``lkg_requires`` state, and checkpoints a restore or drill uses.

:func:`plan` takes plain :class:`Candidate` records (the caller reads them from the store, see
:mod:`.expire`) and returns one :class:`Decision` per checkpoint with every reason that applies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from airflow_checkpoint_provider.core.errors import CheckpointError

BUCKETS = ("hourly", "daily", "weekly", "monthly", "yearly")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION_RE = re.compile(r"^(?:\d+[smhdwy])+\Z")
_HINT = (
    'write the policy as JSON, e.g. {"keep_within": "7d", "keep_daily": 7, "tags": {"pre-migration": '
    '{"keep_within": "90d"}}, "max_total_bytes": 500000000000}'
)


def parse_duration(value: Any, where: str = "keep_within") -> int:
    """``"7d"``, ``"36h"``, ``"1w2d"`` or a number of seconds -> seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip().lower()
    if not _DURATION_RE.match(text):
        raise CheckpointError(
            f"retention {where} is {value!r}, which is not a duration",
            hint="use a number of seconds or units s, m, h, d, w, y: '7d', '36h', '1w2d'",
        )
    return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdwy])", text))


def bucket_key(when: datetime, bucket: str) -> str:
    """The hour, day, ISO week, month or year ``when`` (UTC) falls in."""
    if bucket == "weekly":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    return when.strftime({"hourly": "%Y-%m-%d %H", "daily": "%Y-%m-%d", "monthly": "%Y-%m", "yearly": "%Y"}[bucket])


@dataclass(frozen=True)
class Rules:
    """One set of keep rules (see the module docstring)."""

    keep_last: int = 0
    keep_within: int | None = None  #: seconds
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    @classmethod
    def from_dict(cls, obj: Any, where: str = "retention") -> Rules:
        if not isinstance(obj, dict):
            raise CheckpointError(f"{where} is {obj!r}, not an object of rules", hint=_HINT)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise CheckpointError(
                f"{where} has unknown rule(s) {', '.join(unknown)}", hint=f"the rules are {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for key, value in obj.items():
            if key == "keep_within":
                values[key] = None if value in (None, "") else parse_duration(value, f"{where}.keep_within")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CheckpointError(f"{where}.{key} is {value!r}; it must be a whole number >= 0", hint=_HINT)
            else:
                values[key] = value
        return cls(**values)

    def describe(self) -> str:
        parts = [
            f"{f.name} {getattr(self, f.name)}"
            for f in fields(self)
            if f.name != "keep_within" and getattr(self, f.name)
        ]
        if self.keep_within is not None:
            parts.insert(0, f"keep_within {_human_duration(self.keep_within)}")
        return ", ".join(parts) or "no rule (keeps nothing)"


def _human_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Policy:
    """Default rules, rules per tag (in order), and the storage cap."""

    rules: Rules = Rules()
    tags: tuple[tuple[str, Rules], ...] = ()
    max_total_bytes: int | None = None

    @classmethod
    def parse(cls, value: str | dict[str, Any]) -> Policy:
        """From the JSON of ``[checkpoint] retention`` (or its dict); errors name the offending value."""
        if isinstance(value, str):
            try:
                obj = json.loads(value) if value.strip() else {}
            except ValueError as exc:
                raise CheckpointError(f"retention policy {value!r} is not JSON ({exc})", hint=_HINT) from None
        else:
            obj = dict(value)
        if not isinstance(obj, dict):
            raise CheckpointError(f"retention policy {value!r} is not a JSON object", hint=_HINT)
        tags = obj.pop("tags", None) or {}
        cap = obj.pop("max_total_bytes", None)
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0):
            raise CheckpointError(f"retention max_total_bytes is {cap!r}; it must be a number of bytes > 0", hint=_HINT)
        if not isinstance(tags, dict):
            raise CheckpointError(f"retention tags is {tags!r}, not an object {{tag: rules}}", hint=_HINT)
        return cls(
            Rules.from_dict(obj),
            tuple((str(t), Rules.from_dict(r, f"retention tags.{t}")) for t, r in tags.items()),
            cap,
        )

    def group_of(self, tags: Iterable[str]) -> str:
        """The first tag of the policy the checkpoint carries, or ``""`` (the default rules)."""
        have = set(tags)
        for tag, _ in self.tags:
            if tag in have:
                return tag
        return ""

    def rules_of(self, group: str) -> Rules:
        return dict(self.tags).get(group, self.rules) if group else self.rules


@dataclass(frozen=True)
class Candidate:
    """A checkpoint as retention sees it."""

    checkpoint_id: str
    created_at: datetime  #: aware, UTC
    tags: tuple[str, ...] = ()
    size: int = 0  #: archive plus data kept outside it (the search snapshot)
    protected: tuple[str, ...] = ()  #: why it must be kept whatever the rules (LKG, pinned, in use, ...)


@dataclass
class Decision:
    checkpoint_id: str
    created_at: datetime
    keep: bool
    group: str
    size: int
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "keep": self.keep,
            "group": self.group or "default",
            "size": self.size,
            "reasons": list(self.reasons),
        }


@dataclass
class Plan:
    decisions: list[Decision]  #: newest first
    kept_bytes: int
    warnings: list[str] = field(default_factory=list)

    @property
    def doomed(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": [d.to_dict() for d in self.decisions],
            "kept_bytes": self.kept_bytes,
            "delete": [d.checkpoint_id for d in self.doomed],
            "warnings": list(self.warnings),
        }


def _apply(rules: Rules, members: list[Candidate], now: datetime, out: dict[str, Decision]) -> None:
    """Mark what ``rules`` keep among ``members`` (one group, newest first)."""
    within = now - timedelta(seconds=rules.keep_within) if rules.keep_within is not None else None
    wanted = [(b, getattr(rules, f"keep_{b}")) for b in BUCKETS if getattr(rules, f"keep_{b}")]
    last: dict[str, str] = {}
    left = dict(wanted)
    for n, c in enumerate(members):
        reasons = out[c.checkpoint_id].reasons
        if n < rules.keep_last:
            reasons.append(f"keep_last {rules.keep_last} (#{n + 1})")
        if within is not None and c.created_at >= within:
            reasons.append(f"keep_within {_human_duration(rules.keep_within or 0)}")
        for bucket, _ in wanted:
            if left[bucket] <= 0:
                continue
            key = bucket_key(c.created_at, bucket)
            if key != last.get(bucket):
                last[bucket] = key
                left[bucket] -= 1
                reasons.append(f"keep_{bucket} ({key})")


def plan(candidates: Iterable[Candidate], policy: Policy, *, now: datetime) -> Plan:
    """Decide, for every candidate, keep or delete, with the reasons (see the module docstring)."""
    ordered = sorted(candidates, key=lambda c: (c.created_at, c.checkpoint_id), reverse=True)
    out = {
        c.checkpoint_id: Decision(c.checkpoint_id, c.created_at, False, policy.group_of(c.tags), c.size)
        for c in ordered
    }
    groups: dict[str, list[Candidate]] = {}
    for c in ordered:
        groups.setdefault(out[c.checkpoint_id].group, []).append(c)
    for group, members in groups.items():
        _apply(policy.rules_of(group), members, now, out)
    for c in ordered:
        d = out[c.checkpoint_id]
        d.reasons[:0] = [f"protected: {p}" for p in c.protected]
        d.keep = bool(d.reasons)
        if not d.keep:
            d.reasons.append(
                f"no rule of {('tag ' + repr(d.group)) if d.group else 'the default rules'} keeps it "
                f"({policy.rules_of(d.group).describe()})"
            )
    decisions = [out[c.checkpoint_id] for c in ordered]
    kept = sum(d.size for d in decisions if d.keep)
    warnings = []
    if policy.max_total_bytes is not None and kept > policy.max_total_bytes:
        protected = {c.checkpoint_id for c in ordered if c.protected}
        for d in reversed(decisions):  # oldest first
            if kept <= policy.max_total_bytes:
                break
            if d.keep and d.checkpoint_id not in protected:
                was = "; ".join(d.reasons)
                d.keep = False
                d.reasons.append(
                    f"over max_total_bytes {policy.max_total_bytes}: the oldest unprotected go first "
                    f"(the rules kept it: {was})"
                )
                kept -= d.size
        if kept > policy.max_total_bytes:
            warnings.append(
                f"the protected checkpoints alone take {kept} bytes, more than max_total_bytes "
                f"{policy.max_total_bytes}: raise the cap or unpin checkpoints"
            )
    return Plan(decisions, kept, warnings)
