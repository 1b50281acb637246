"""Where a workflow resumes, and whether it may: the recipe run once, under the workflow's lock.

1. ``force_restart``: discard every saved state; start from the first step.
2. ``resume_from=S``: discard the newest state of step S and every newer one; the candidate is
   S's parent (the state S was computed from), or the initial state if S was the first step.
3. Take the newest candidate whose header, size, sha256 and payload all check out; a damaged
   one is set aside (``damaged/``) and the one before it is tried. Saved states that are all
   damaged refuse the resume (:class:`NoIntactStateError`).
4. Config drift: the config digest must equal the resume point's, unless
   ``allow_config_drift``; the error names the changed keys (never their values).
5. ``restore_data``: restore the data checkpoint taken with the resume point (side by side,
   through the data checkpointer) before anything runs.
6. The validator (if any): the live fingerprints of every step in the resume point's lineage
   (as far as the history reaches) must equal the saved ones; a mismatch refuses the resume,
   naming the steps, the keys and both values, and how to restore and re-run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_checkpoint_provider.core.workflow.codec import (
    canonical,
    changed_keys,
    encode_json,
    step_key,
)
from airflow_checkpoint_provider.core.workflow.errors import (
    ConfigDriftError,
    DataMismatchError,
    NoIntactStateError,
    ResumeRefusedError,
    StateDamagedError,
    UnknownStepError,
)
from airflow_checkpoint_provider.core.workflow.records import (
    Entry,
    Session,
    StateHeader,
)

log = logging.getLogger(__name__)

#: ``validate(step)`` returns the live fingerprints of the data that ``step`` wrote
Validator = Callable[[Any], Mapping[str, Any]]


class DataCheckpoints(Protocol):
    """Takes and restores data checkpoints for a workflow's steps (the engines, in the Airflow layer)."""

    def capture(self, workflow_id: str, step: int | str) -> str:
        """Checkpoint the data now; return the sealed, verified checkpoint id."""

    def restore(self, checkpoint_id: str) -> dict[str, Any]:
        """Restore that checkpoint side by side and cut over; return a short report."""


@dataclass(frozen=True)
class ResumeOptions:
    force_restart: bool = False
    allow_config_drift: bool = False
    resume_from: int | str | None = None
    restore_data: bool = False

    def __post_init__(self) -> None:
        if self.force_restart and self.resume_from is not None:
            raise ResumeRefusedError(
                f"force_restart and resume_from={self.resume_from!r} contradict each other",
                hint="force_restart starts from the first step; resume_from re-runs from a chosen one: pick one",
            )


@dataclass
class Resumed:
    """What the recipe decided."""

    header: StateHeader | None = None  #: the resume point; None: start from the initial state
    state: Any = None
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    discarded: int = 0
    drift: list[str] = field(default_factory=list)
    restored: dict[str, Any] | None = None
    validated: list[int | str] = field(default_factory=list)


def resume(
    session: Session,
    *,
    workflow_id: str,
    digest: dict[str, str],
    options: ResumeOptions,
    validate: Validator | None = None,
    data: DataCheckpoints | None = None,
    depth: int | None = None,
) -> Resumed:
    """Run the recipe of the module docstring; raises a :class:`ResumeRefusedError` to refuse."""
    out = Resumed()
    entries: Iterator[Entry] = (e for e in session.entries() if not e.damaged)
    # 1. + 2. what may be resumed
    if options.force_restart:
        seqs = [e.seq for e in entries]
        session.discard(seqs)
        out.discarded = len(seqs)
        log.info(
            "Workflow %r: force_restart discarded %d saved state(s); starting from the first step",
            workflow_id,
            len(seqs),
        )
        return out
    if options.resume_from is not None:
        entries, start_fresh = _rewind(session, workflow_id, options.resume_from, entries, out)
        if start_fresh:
            return _restore_and_validate(out, [], workflow_id, options, validate, data, depth)
    # 3. the newest intact state
    older: list[Entry] = []
    for entry in entries:
        if out.header is None:
            _try(session, workflow_id, entry, out)
        else:
            older.append(entry)
            if depth is not None and len(older) >= depth or validate is None:
                break
    if out.header is None:
        if out.fallbacks:
            raise NoIntactStateError(
                f"workflow {workflow_id!r}: every saved state is damaged "
                f"({'; '.join(f['problem'] for f in out.fallbacks[:3])})",
                hint="start over with force_restart=True (or `airflow-checkpoint workflow reset`); the damaged "
                "states were set aside under damaged/ for inspection",
            )
        log.info("Workflow %r: no saved state; starting from the first step", workflow_id)
        return _restore_and_validate(out, [], workflow_id, options, validate, data, depth)
    # 4. config drift
    changed = changed_keys(out.header.config_digest, digest)
    if changed:
        if not options.allow_config_drift:
            raise ConfigDriftError(
                f"workflow {workflow_id!r}: the config changed since step {out.header.step!r} was saved "
                f"(seq {out.header.seq}, {out.header.saved_at}): changed keys: {', '.join(changed)}",
                hint="to start over with the new config, run with force_restart=True; to resume anyway, "
                "allow_config_drift=True; or run again with the config the state was saved with",
                changed=changed,
            )
        log.warning(
            "Workflow %r: resuming despite config drift (allow_config_drift); changed keys: %s",
            workflow_id,
            ", ".join(changed),
        )
        out.drift = changed
    log.info(
        "Workflow %r: resuming after step %r (state %d saved %s)",
        workflow_id,
        out.header.step,
        out.header.seq,
        out.header.saved_at,
    )
    lineage = _lineage(out.header, older)
    return _restore_and_validate(out, lineage, workflow_id, options, validate, data, depth)


def _rewind(
    session: Session, workflow_id: str, step: int | str, entries: Iterator[Entry], out: Resumed
) -> tuple[Iterator[Entry], bool]:
    """Discard the newest state of ``step`` and everything newer; returns the older entries and
    whether the workflow now starts from its initial state."""
    newer: list[Entry] = []
    for entry in entries:
        if entry.header is not None and step_key(entry.header.step) == step_key(step):
            seqs = [e.seq for e in newer] + [entry.seq]
            session.discard(seqs)
            out.discarded = len(seqs)
            log.info(
                "Workflow %r: resume_from=%r discarded %d state(s) (step %r and later)",
                workflow_id,
                step,
                len(seqs),
                step,
            )
            if entry.header.parent is None:
                return iter(()), True
            parent = entry.header.parent
            return (e for e in entries if e.seq <= parent), False
        newer.append(entry)
    if not newer:
        log.info(
            "Workflow %r: resume_from=%r, and nothing is saved yet: starting from the first step", workflow_id, step
        )
        return iter(()), True
    saved = [e.header.step for e in newer if e.header is not None]
    raise UnknownStepError(
        f"workflow {workflow_id!r}: resume_from={step!r}, but no saved state of that step is in the history "
        f"(saved steps, newest first: {', '.join(map(repr, saved[:20]))}{' ...' if len(saved) > 20 else ''})",
        hint="pick one of the saved steps (note 2025 and '2025' are different steps), or force_restart=True; "
        "`airflow-checkpoint workflow history <id>` lists them",
    )


def _try(session: Session, workflow_id: str, entry: Entry, out: Resumed) -> None:
    """Load and check ``entry``; set it aside and note the fallback if it is damaged."""
    problem = entry.problem
    if entry.header is not None:
        try:
            record = session.load(entry.seq)
            out.state = record.state()  # checks size and sha256, then decodes
            out.header = record.header
            return
        except StateDamagedError as exc:
            problem = exc.message
    step = entry.header.step if entry.header else None
    log.warning(
        "Workflow %r: state %d (step %r) is damaged: %s; falling back to the previous one",
        workflow_id,
        entry.seq,
        step,
        problem,
    )
    out.fallbacks.append({"seq": entry.seq, "step": step, "problem": problem})
    session.set_aside(entry.seq, problem or "damaged")


def _lineage(point: StateHeader, older: list[Entry]) -> list[StateHeader]:
    """The resume point and its ancestors (parent links), newest first, as far as the history holds them."""
    by_seq = {e.seq: e.header for e in older if e.header is not None}
    chain = [point]
    while chain[-1].parent is not None and chain[-1].parent in by_seq:
        chain.append(by_seq[chain[-1].parent])
    return chain


def _restore_and_validate(
    out: Resumed,
    lineage: list[StateHeader],
    workflow_id: str,
    options: ResumeOptions,
    validate: Validator | None,
    data: DataCheckpoints | None,
    depth: int | None,
) -> Resumed:
    # 5. the data checkpoint of the resume point
    if options.restore_data:
        out.restored = _restore(out.header, workflow_id, data)
    # 6. the live data against the saved fingerprints
    if validate is not None and lineage:
        _validate(workflow_id, lineage[:depth] if depth else lineage, validate, out)
    return out


def _restore(point: StateHeader | None, workflow_id: str, data: DataCheckpoints | None) -> dict[str, Any]:
    if point is None:
        raise ResumeRefusedError(
            f"workflow {workflow_id!r}: restore_data was asked for, but the workflow starts from its initial "
            "state, so no step's data checkpoint comes before it",
            hint="resume_from the step after one that took a data checkpoint, or restore the data yourself",
        )
    if not point.data_checkpoint:
        raise ResumeRefusedError(
            f"workflow {workflow_id!r}: restore_data was asked for, but step {point.step!r} (state {point.seq}) "
            "was saved without a data checkpoint",
            hint="give the workflow data targets (data=...) so that each save takes one, or resume without "
            "restore_data",
        )
    if data is None:
        raise ResumeRefusedError(
            f"workflow {workflow_id!r}: restore_data was asked for, but no data targets were given",
            hint="pass data=... (which databases, Redis, indices) so the data checkpoint can be restored",
        )
    log.info(
        "Workflow %r: restoring data checkpoint %s of step %r before resuming",
        workflow_id,
        point.data_checkpoint,
        point.step,
    )
    report = data.restore(point.data_checkpoint)
    return {"checkpoint_id": point.data_checkpoint, "step": point.step, **report}


def _validate(workflow_id: str, lineage: list[StateHeader], validate: Validator, out: Resumed) -> None:
    problems = []  # collect them all, then report
    for i, header in enumerate(lineage):
        if not header.fingerprints:
            continue
        live = dict(validate(header.step) or {})
        encode_json(live, what=f"the validator's fingerprints of step {header.step!r}")
        diffs = [
            f"{k}: saved {canonical(v).decode()}, now {canonical(live.get(k)).decode()}"
            for k, v in sorted(header.fingerprints.items())
            if k in live and canonical(live[k]) != canonical(v) or k not in live
        ]
        if diffs:
            child = lineage[i - 1].step if i > 0 else None
            problems.append((header, child, diffs))
        out.validated.append(header.step)
    if not problems:
        return
    oldest, child, _ = problems[-1]
    if oldest.data_checkpoint and child is not None:
        how = (
            f"resume_from={child!r} with restore_data=True restores the data checkpoint of step {oldest.step!r} "
            f"({oldest.data_checkpoint}) and re-runs from {child!r}"
        )
    else:
        how = f"resume_from={oldest.step!r} re-runs from step {oldest.step!r}"
    raise DataMismatchError(
        f"workflow {workflow_id!r}: the live data no longer matches what the saved steps wrote: "
        + "; ".join(f"step {h.step!r}: {', '.join(d)}" for h, _, d in problems),
        hint=f"the data changed after those steps were saved; {how}, or force_restart=True starts over",
    )
