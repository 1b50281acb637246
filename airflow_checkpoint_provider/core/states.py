"""Lifecycle states of a checkpoint: records kept beside the immutable archive, and what they add up to.

A sealed archive never changes. What is learnt about it later (a verification at some level,
a restore drill) is appended as a *state record*: one small self-checksummed JSON document per
event, ``states/<checkpoint id>/<timestamp>-<kind>-<random>.json``, written atomically and never
rewritten. Each record is bound to the ``manifest_sha256`` it was made for, so a checkpoint
replaced under the same id inherits nothing.

The state a checkpoint is in follows from its records (:func:`derive`)::

    sealed                      no record yet (the archive and its manifest exist)
    verified (basic|standard|deep)  the best level that passed
    drilled                     a restore drill passed (and nothing found it damaged since)
    corrupt                     a verification found it damaged: sticky, it is never LKG again
    drill_failed                the newest drill failed

``[checkpoint] lkg_requires`` names the state the LKG pointer needs: ``verified`` (at least
``standard``) or ``drilled`` (:func:`meets`).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.errors import CheckpointError, FormatError
from airflow_checkpoint_provider.core.manifest import (
    SHA256_RE,
    canonical_json,
    is_timestamp,
    parse_ts,
    sha256_hex,
    validate_checkpoint_id,
)
from airflow_checkpoint_provider.core.safejson import describe, load_json

STATE_FORMAT = "airflow-checkpoint-state"
STATE_DIR = "states"
MAX_RECORD_BYTES = 1024 * 1024

LEVELS = ("basic", "standard", "deep")
KINDS = ("verify", "drill")
OUTCOMES = ("ok", "corrupt", "failed", "error")  #: ``error``: the check could not run (a server down)

SEALED, VERIFIED, DRILLED, CORRUPT, DRILL_FAILED = "sealed", "verified", "drilled", "corrupt", "drill_failed"
REQUIREMENTS = (VERIFIED, DRILLED)
#: the least verification level that counts as ``verified`` for the LKG
LKG_MIN_LEVEL = "standard"


def level_rank(level: str | None) -> int:
    """0 for none, 1 basic, 2 standard, 3 deep."""
    return LEVELS.index(level) + 1 if level in LEVELS else 0


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise CheckpointError(
            f"verification level {level!r} is not one of {', '.join(LEVELS)}",
            hint="basic: sizes and manifests; standard: sha256 of every artifact; deep: also "
            "decompress and parse every artifact",
        )
    return level


def check_requirement(value: str) -> str:
    if value not in REQUIREMENTS:
        raise CheckpointError(
            f"[checkpoint] lkg_requires is {value!r}; it must be one of {', '.join(REQUIREMENTS)}",
            hint="verified (the default): a passed standard or deep verification; drilled: a passed restore drill",
        )
    return value


def integers(obj: Any) -> Any:
    """``obj`` with every float turned into integer milliseconds' worth of text: records hold no floats."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, dict):
        return {str(k): integers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [integers(v) for v in obj]
    return str(obj)


@dataclass(frozen=True)
class StateRecord:
    """One verification or drill of one exact manifest."""

    checkpoint_id: str
    manifest_sha256: str
    kind: str  #: ``verify`` or ``drill``
    outcome: str  #: ``ok``, ``corrupt`` (verify), ``failed`` (drill), ``error`` (could not check)
    recorded_at: str
    level: str | None = None  #: verification level; None for drills
    duration_ms: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    by: dict[str, Any] = field(default_factory=dict)  #: dag/run/task ids or the CLI

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "format_version": 1,
            "checkpoint_id": self.checkpoint_id,
            "manifest_sha256": self.manifest_sha256,
            "kind": self.kind,
            "outcome": self.outcome,
            "recorded_at": self.recorded_at,
            "level": self.level,
            "duration_ms": self.duration_ms,
            "problems": integers(self.problems),
            "evidence": integers(self.evidence),
            "by": integers(self.by),
        }

    def to_bytes(self) -> bytes:
        body = self.to_dict()
        body["record_sha256"] = sha256_hex(canonical_json(body))
        return (json.dumps(body, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()

    @property
    def passed(self) -> bool:
        return self.outcome == "ok"

    def file_name(self) -> str:
        stamp = parse_ts(self.recorded_at).strftime("%Y%m%dT%H%M%S%fZ")
        return f"{stamp}-{self.kind}-{secrets.token_hex(3)}.json"

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> StateRecord:
        """Parse and check a record: size, format, its checksum, then every field."""
        if len(data) > MAX_RECORD_BYTES:
            raise FormatError(f"{source} is {len(data)} bytes, more than the {MAX_RECORD_BYTES} a record may have")
        obj = load_json(data, source=source)
        if (
            not isinstance(obj, dict)
            or obj.get("format") != STATE_FORMAT
            or obj.get("format_version") != 1
            or isinstance(obj.get("format_version"), bool)
        ):
            raise FormatError(f"{source} is not a state record of version 1")
        body = {k: v for k, v in obj.items() if k != "record_sha256"}
        if sha256_hex(canonical_json(body)) != obj.get("record_sha256"):
            raise FormatError(f"{source} fails its checksum")
        names = list(cls.__dataclass_fields__)
        missing = [k for k in names if k not in obj]
        if missing:
            raise FormatError(f"{source} lacks field(s) {missing}")
        record = cls(**{k: obj[k] for k in names})
        record._validate(source)
        return record

    def _validate(self, source: str) -> None:
        def bad(name: str, must: str) -> FormatError:
            return FormatError(f"{source}: field {name!r} is {describe(getattr(self, name))}; it must be {must}")

        try:
            validate_checkpoint_id(self.checkpoint_id)
        except FormatError as exc:
            raise FormatError(f"{source}: {exc.message}") from None
        if not isinstance(self.manifest_sha256, str) or not SHA256_RE.fullmatch(self.manifest_sha256):
            raise bad("manifest_sha256", "64 lowercase hex digits")
        if self.kind not in KINDS:
            raise bad("kind", f"one of {KINDS}")
        if self.outcome not in OUTCOMES:
            raise bad("outcome", f"one of {OUTCOMES}")
        if not is_timestamp(self.recorded_at):
            raise bad("recorded_at", "an RFC 3339 UTC timestamp")
        if self.kind == "verify" and self.level not in LEVELS:
            raise bad("level", f"one of {LEVELS} for a verification")
        if not isinstance(self.duration_ms, int) or isinstance(self.duration_ms, bool) or self.duration_ms < 0:
            raise bad("duration_ms", "a non-negative integer")
        if not isinstance(self.problems, list) or not all(isinstance(p, dict) for p in self.problems):
            raise bad("problems", "a list of objects")
        for name in ("evidence", "by"):
            if not isinstance(getattr(self, name), dict):
                raise bad(name, "an object")


@dataclass(frozen=True)
class CheckpointState:
    """What a checkpoint's records add up to (see the module docstring)."""

    state: str
    level: str | None = None  #: the best verification level that passed
    last_verified_at: str | None = None  #: newest passed verification (any level)
    drilled_at: str | None = None
    reason: str = ""  #: why corrupt / drill_failed: the first problem
    snapshot_bytes: int | None = None  #: size of data kept outside the archive, from the newest record naming it

    @property
    def label(self) -> str:
        """``verified:standard``, ``drilled``, ``corrupt``, ..."""
        return f"{self.state}:{self.level}" if self.state == VERIFIED and self.level else self.state

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "label": self.label,
            "level": self.level,
            "last_verified_at": self.last_verified_at,
            "drilled_at": self.drilled_at,
            "reason": self.reason,
            "snapshot_bytes": self.snapshot_bytes,
        }


def _reason(record: StateRecord) -> str:
    if record.problems:
        first = record.problems[0]
        return f"{first.get('kind', '')}: {first.get('subject', '')}: {first.get('detail', '')}".strip(": ")
    return f"{record.kind} {record.outcome}"


def derive(records: list[StateRecord], manifest_sha256: str) -> CheckpointState:
    """The state of a checkpoint from its records (any order); records of another manifest are ignored."""
    mine = sorted((r for r in records if r.manifest_sha256 == manifest_sha256), key=lambda r: r.recorded_at)
    level, verified_at, drilled_at, snapshot = None, None, None, None
    corrupt: StateRecord | None = None
    last_drill: StateRecord | None = None
    for r in mine:
        if isinstance(r.evidence.get("external_bytes"), int):
            snapshot = r.evidence["external_bytes"]
        if r.kind == "verify":
            if r.outcome == "corrupt" and corrupt is None:
                corrupt = r
            elif r.passed:
                verified_at = r.recorded_at
                if level_rank(r.level) > level_rank(level):
                    level = r.level
        elif r.outcome in ("ok", "failed"):
            last_drill = r
            if r.passed:
                drilled_at = r.recorded_at
    if corrupt is not None:
        return CheckpointState(CORRUPT, level, verified_at, drilled_at, _reason(corrupt), snapshot)
    if last_drill is not None and not last_drill.passed:
        return CheckpointState(DRILL_FAILED, level, verified_at, drilled_at, _reason(last_drill), snapshot)
    if last_drill is not None:
        return CheckpointState(DRILLED, level, verified_at, drilled_at, "", snapshot)
    if level is not None:
        return CheckpointState(VERIFIED, level, verified_at, None, "", snapshot)
    return CheckpointState(SEALED, None, None, None, "", snapshot)


def meets(state: CheckpointState, requires: str) -> bool:
    """Whether a checkpoint in ``state`` may become the LKG under ``[checkpoint] lkg_requires``."""
    if state.state in (CORRUPT, DRILL_FAILED):
        return False
    if requires == DRILLED:
        return state.state == DRILLED and level_rank(state.level) >= level_rank(LKG_MIN_LEVEL)
    return level_rank(state.level) >= level_rank(LKG_MIN_LEVEL)


def unmet(state: CheckpointState, requires: str) -> str:
    """Why ``state`` does not meet ``requires`` (empty when it does)."""
    if meets(state, requires):
        return ""
    if state.state in (CORRUPT, DRILL_FAILED):
        return f"it is {state.state} ({state.reason})"
    if requires == DRILLED and state.state != DRILLED:
        return f"[checkpoint] lkg_requires is drilled and it is {state.label} (no restore drill passed)"
    return f"it is {state.label}; the LKG needs a passed verification at level {LKG_MIN_LEVEL} or deep"
