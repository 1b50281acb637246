"""Verification levels, their records, and the sweep the ``checkpoint_verify`` DAG runs.

``basic``
    the store's copy of the manifest and the embedded one parse, pass their self-checksums and
    agree; every artifact is a member of the archive with the manifest's size, nothing else is;
    the archive ends where its last member does. Only the tar headers are read (seeking).
``standard``
    the sha256 of every artifact (:meth:`Store.verify`), reading the whole archive once.
``deep``
    standard, plus every zstd artifact decompressed to its raw size in the same pass, plus each
    engine's ``deep_check`` (:class:`~.engines.contract.DeepCheck`) through the registry:
    ``pg_restore --list`` of each dump, the full RDB walk with its CRC64, the search snapshot in
    its repository, each directory tree extracted against its listing.

Each verification appends a state record (:mod:`.states`): ``ok``, ``corrupt`` (problems found)
or ``error`` (a part could not be checked, e.g. the search cluster did not answer: not damage).
A checkpoint found corrupt while it is the LKG makes the LKG fall back
(:meth:`Store.fallback_lkg`).
"""

from __future__ import annotations

import logging
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.archive import BLOCK, member_name_problem
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.lkg import LKG_ALIASES
from airflow_checkpoint_provider.core.manifest import MANIFEST_MEMBER, MAX_MANIFEST_BYTES, Manifest
from airflow_checkpoint_provider.core.results import ProblemKind, VerifyResult
from airflow_checkpoint_provider.core.states import CORRUPT, VERIFIED, StateRecord, check_level, level_rank
from airflow_checkpoint_provider.core.store import CheckpointInfo, Store

log = logging.getLogger(__name__)


def _pad(size: int) -> int:
    return (BLOCK - size % BLOCK) % BLOCK


def verify_basic(store: Store, info: CheckpointInfo) -> VerifyResult:
    """The ``basic`` level (see the module docstring): manifests and the tar headers, no artifact data."""
    cid, rel = info.checkpoint_id, info.archive
    result = VerifyResult(checkpoint_id=cid, manifest=info.manifest, level="basic")
    total = store.fs.size(rel)
    members: dict[str, int] = {}
    pos, ended = 0, False
    with store.fs.open_read(rel) as f:
        while pos + BLOCK <= total:
            f.seek(pos)
            block = f.read(BLOCK)
            if block == b"\0" * BLOCK:
                ended = f.read(BLOCK) == b"\0" * BLOCK
                pos += 2 * BLOCK
                break
            try:
                ti = tarfile.TarInfo.frombuf(block, encoding="utf-8", errors="strict")
            except (tarfile.HeaderError, UnicodeDecodeError) as exc:
                result.add(ProblemKind.DAMAGED_HEADER, rel, f"damaged member header at byte {pos} ({exc})")
                return result
            problem = member_name_problem(ti.name, ti.type) or ("appears twice" if ti.name in members else None)
            if problem:
                result.add(ProblemKind.UNSAFE_MEMBER, ti.name, problem)
            elif not members and ti.name != MANIFEST_MEMBER:
                result.add(ProblemKind.BAD_MANIFEST, ti.name, f"first member is not {MANIFEST_MEMBER}")
            elif ti.name == MANIFEST_MEMBER:
                _check_embedded(result, f.read(min(ti.size, MAX_MANIFEST_BYTES + 1)), info, rel)
            members[ti.name] = ti.size
            pos += BLOCK + ti.size + _pad(ti.size)
    if not ended:
        result.add(ProblemKind.TRUNCATED, rel, f"the archive ends at byte {total} before its end-of-archive marker")
    for art in info.manifest.artifacts:
        size = members.pop(art.member, None)
        if size is None:
            result.add(ProblemKind.MISSING_MEMBER, art.member, "listed in the manifest but not in the archive")
        elif size != art.size:
            result.add(ProblemKind.SIZE_MISMATCH, art.member, f"{size} bytes, manifest says {art.size}")
        else:
            result.verified.append(art.member)
    for name in members:
        if name != MANIFEST_MEMBER:
            result.add(ProblemKind.UNEXPECTED_MEMBER, name, "not listed in the manifest")
    return result


def _check_embedded(result: VerifyResult, data: bytes, info: CheckpointInfo, rel: str) -> None:
    if len(data) > MAX_MANIFEST_BYTES:
        result.add(ProblemKind.BAD_MANIFEST, MANIFEST_MEMBER, f"more than {MAX_MANIFEST_BYTES} bytes")
        return
    try:
        embedded = Manifest.from_bytes(data, source=f"{rel}:{MANIFEST_MEMBER}")
    except CheckpointError as exc:
        result.add(ProblemKind.BAD_MANIFEST, MANIFEST_MEMBER, exc.message)
        return
    if embedded.canonical() != info.manifest.canonical():
        result.add(
            ProblemKind.MANIFEST_MISMATCH, MANIFEST_MEMBER, "the embedded manifest differs from the store's copy"
        )


def _deep(
    store: Store, info: CheckpointInfo, result: VerifyResult, targets: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Each engine's deep check of its artifacts; problems go into ``result``."""
    evidence: dict[str, Any] = {}
    unchecked: list[str] = []
    external = 0
    for name, engine in registry.engines().items():
        arts = engine.artifacts_of(info.manifest.artifacts)
        if not arts or engine.deep_check is None:
            continue
        started = time.monotonic()
        check = engine.deep_check(store, info.checkpoint_id, arts, targets.get(name))
        for subject, detail in check.problems:
            result.add(
                ProblemKind.DATA_ERROR,
                subject,
                detail,
                hint="the artifact does not parse as what it claims to be: restore another checkpoint",
            )
        unchecked += [f"{name}: {u}" for u in check.unchecked]
        external += int(check.evidence.pop("external_bytes", 0) or 0)
        evidence[name] = {**check.evidence, "duration_ms": int((time.monotonic() - started) * 1000)}
    if external:
        evidence["external_bytes"] = external
    return evidence, unchecked


def verify_at(
    store: Store,
    checkpoint_id: str,
    level: str,
    *,
    targets: dict[str, Any] | None = None,
    by: dict[str, Any] | None = None,
) -> tuple[VerifyResult, StateRecord]:
    """Verify one checkpoint (or ``last-known-good``) at ``level`` and record the outcome (see the module
    docstring). ``targets``: engine name -> target, for the deep checks that need a server."""
    check_level(level)
    pointer = store.lkg() if checkpoint_id in LKG_ALIASES else None
    info = store.get(pointer.checkpoint_id if pointer is not None else checkpoint_id)
    started = time.monotonic()
    evidence: dict[str, Any] = {}
    unchecked: list[str] = []
    if level == "basic":
        result = verify_basic(store, info)
        problem = store._binding_problem(pointer, info.manifest) if pointer is not None else None
        if problem:
            result.add(ProblemKind.LKG_MISMATCH, "refs/lkg.json", problem)
    else:
        # the alias itself, so that the LKG pointer's binding to the manifest is checked too
        result = store.verify(checkpoint_id if pointer is not None else info.checkpoint_id, deep=level == "deep")
        result.level = level
        if level == "deep" and result.ok:
            evidence, unchecked = _deep(store, info, result, targets or {})
    if unchecked and not result.problems:
        result.level = "standard"  # what was proven; the next sweep at deep tries again
    duration = int((time.monotonic() - started) * 1000)
    record = store.record_verify(info, result, duration, by=by, evidence=evidence, unchecked=unchecked)
    return result, record


@dataclass
class SweepReport:
    """What one run of the verification sweep did."""

    level: str
    verified: list[dict[str, Any]] = field(default_factory=list)  #: per checkpoint: id, outcome, why chosen
    corrupt: list[str] = field(default_factory=list)  #: found damaged in this run
    unchecked: list[str] = field(default_factory=list)
    damaged_entries: list[str] = field(default_factory=list)  #: unreadable manifests (listed as DAMAGED)
    lkg_fallback: dict[str, Any] | None = None  #: {"from", "to", "reason"} when the LKG moved

    @property
    def failed(self) -> bool:
        return bool(self.corrupt or self.damaged_entries or self.lkg_fallback)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "verified": self.verified,
            "corrupt": self.corrupt,
            "unchecked": self.unchecked,
            "damaged_entries": self.damaged_entries,
            "lkg_fallback": self.lkg_fallback,
            "failed": self.failed,
        }


def choose(store: Store, infos: list[CheckpointInfo], level: str, sample: int) -> list[tuple[CheckpointInfo, str]]:
    """What a sweep verifies: every checkpoint not yet verified at ``level`` (newest first), then a
    rolling sample of ``sample`` others, those verified longest ago first. Corrupt ones are skipped."""
    pending, others = [], []
    for info in infos:
        state = store.state_of(info)
        if state.state == CORRUPT:
            continue
        if level_rank(state.level) < level_rank(level):
            pending.append((info, f"not yet verified at {level}"))
        else:
            others.append((state.last_verified_at or "", info))
    others.sort(key=lambda pair: pair[0])
    return pending + [(info, f"rolling sample (last verified {when})") for when, info in others[: max(sample, 0)]]


def sweep(
    store: Store,
    level: str,
    *,
    sample: int = 3,
    targets: dict[str, Any] | None = None,
    requires: str = VERIFIED,
    by: dict[str, Any] | None = None,
    only: str | None = None,
) -> SweepReport:
    """Verify what :func:`choose` picks (or just the checkpoint ``only``, an id or ``last-known-good``);
    if the LKG is (or was already) corrupt, fall back."""
    check_level(level)
    report = SweepReport(level=level)
    if only:
        picked = [(store.get(only), "requested")]
    else:
        infos, damaged = store.scan(cached=False)
        report.damaged_entries = [f"{d.checkpoint_id}: {d.problem}" for d in damaged]
        picked = choose(store, infos, level, sample)
    for info, why in picked:
        result, record = verify_at(store, info.checkpoint_id, level, targets=targets, by=by)
        report.verified.append(
            {
                "checkpoint_id": info.checkpoint_id,
                "outcome": record.outcome,
                "why": why,
                "level": level,
                "problems": [str(p) for p in result.problems],
            }
        )
        if record.outcome == "corrupt":
            report.corrupt.append(info.checkpoint_id)
            log.error("Checkpoint %s is corrupt: %s", info.checkpoint_id, "; ".join(map(str, result.problems)))
        report.unchecked += [f"{info.checkpoint_id}: {u}" for u in record.evidence.get("unchecked", [])]
    pointer = store.lkg()
    problem = store.lkg_problem(pointer) if pointer is not None else None
    if pointer is not None and problem:
        new = store.fallback_lkg(problem, requires=requires, by=by)
        report.lkg_fallback = {
            "from": pointer.checkpoint_id,
            "to": new.checkpoint_id if new else None,
            "reason": problem,
        }
    return report
