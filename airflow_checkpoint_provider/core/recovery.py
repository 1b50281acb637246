"""Restore a checkpoint (or the LKG) into live stores: side by side, verify, then cut over.

The recipe, in order (each step only runs if the previous one succeeded):

1. resolve the id (``last-known-good`` too) and verify the whole archive; a damaged
   archive is refused, naming the broken artifact;
2. plan every component: compatibility problems (format, server versions) refuse the
   restore; conflicts (existing databases, busy keys, open indices) are listed; the drift
   since the checkpoint (schema, config: :mod:`.drift`) is listed as warnings, or as accepted
   notes with ``allow_drift``; a dry run stops here and changes nothing;
3. take a safety checkpoint of the current state of what will be replaced (unless off);
4. load every component side by side and verify it against the manifest's fingerprints;
   if any fails, drop all side-by-side copies: nothing was changed;
5. cut over every component; if one fails it restores its own original, and the
   components already cut over are rolled back, newest first;
6. check health against the manifest's fingerprints.

Steps 3 to 6 run under a lease on every target server (:mod:`.lease`: no capture of them can
become last-known-good meanwhile, and no second restore can start), and every component
journals its destructive steps (:mod:`.journal`), so that a restore killed at any instant is
finished or undone by the next one (:mod:`.replay`).

Each component is a :class:`ComponentRestore`, implemented per engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    VerificationFailedError,
)
from airflow_checkpoint_provider.core.expire import use_key
from airflow_checkpoint_provider.core.journal import (
    ComponentJournal,
    Journal,
    new_restore_id,
)
from airflow_checkpoint_provider.core.lease import (
    DEFAULT_TTL,
    Lease,
    LeaseRecord,
    target_key,
    this_process,
)
from airflow_checkpoint_provider.core.manifest import (
    Artifact,
    Manifest,
    format_ts,
    utcnow,
)
from airflow_checkpoint_provider.core.restore import (
    HealthCheck,
    PlanItem,
    RestoreOutcome,
    RestorePlan,
)
from airflow_checkpoint_provider.core.rollbacks import RollbackPolicy, expire
from airflow_checkpoint_provider.core.staging import Staging, staging_key
from airflow_checkpoint_provider.core.store import Store

log = logging.getLogger(__name__)

MODES = ("side_by_side", "in_place")


class RestoreRefusedError(CheckpointError):
    """The plan found problems (incompatible versions, unknown components): nothing was changed.

    ``plan`` is the refused plan (None when the request itself was refused)."""

    def __init__(self, message: str, *, hint: str | None = None, plan: RestorePlan | None = None) -> None:
        super().__init__(message, hint=hint)
        self.plan = plan


class RestoreFailedError(CheckpointError):
    """Loading, verifying or cutting over failed; the message says what state things are in."""


class ComponentRestore(Protocol):
    """What the orchestration needs from one engine's restore of one checkpoint."""

    component: str
    target: Any  #: the engine target; ``target.public()`` names the server (the lease key, the journal)
    journal: ComponentJournal  #: set by the orchestration before ``prepare``; the engine journals its steps

    def plan(self) -> tuple[list[PlanItem], list[str]]:
        """What would change and the conflicts; second item: problems that forbid the restore."""

    def safety_capture(self, staging: Staging) -> list[Artifact]:
        """Capture the current state of exactly what would be replaced."""

    def prepare(self) -> None:
        """Load side by side and verify; on failure remove the copies and raise."""

    def cutover(self) -> RestoreOutcome:
        """Swap the verified copy in, keeping a rollback copy; on failure restore the original and raise."""

    def rollback(self) -> None:
        """Undo a completed cut-over (put the rollback copy back)."""

    def abort(self) -> None:
        """Drop side-by-side copies left by :meth:`prepare` (idempotent)."""

    # optional: ``drift() -> [str]`` (core/drift.py: schema drift of the live targets against the
    # checkpoint) and ``use_drill_names()`` (a drill names its copies ``<name>__drill_<id>``)

    def health(self, tolerance: float) -> list[HealthCheck]:
        """Check the restored state against the checkpoint's fingerprints."""


@dataclass
class RestoreRequest:
    checkpoint_id: str
    components: tuple[str, ...] = field(default_factory=lambda: registry.names())
    mode: str = "side_by_side"
    safety_checkpoint: bool = True
    dry_run: bool = False
    tolerance: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    #: Airflow connection id per component, recorded in the journal so that a replay can reconnect
    conn_ids: dict[str, str] = field(default_factory=dict)
    #: Airflow's view of a lease owner (see :meth:`LeaseRecord.live`); None: heartbeat and pid only
    is_alive: Callable[[LeaseRecord], bool | None] | None = None
    lease_ttl: float = DEFAULT_TTL
    #: which rollback copies to keep after a healthy restore (``[checkpoint] rollback_keep``)
    rollback_keep: str = "all"
    #: a restore drill (core/drill.py): load side by side and verify, then drop the copies; never cut over
    drill: bool = False
    #: record the drift since the checkpoint as accepted (core/drift.py); never overrides a compatibility problem
    allow_drift: bool = False
    #: the deployment configured now (``{"config_files", "env", "packages"}``), compared with the manifest's
    deployment: dict[str, Any] | None = None

    def validate(self) -> None:
        unknown = set(self.components) - set(registry.names())
        if unknown:
            raise RestoreRefusedError(
                f"unknown component(s) {sorted(unknown)}", hint=f"choose among {', '.join(registry.names())}"
            )
        if self.mode not in MODES:
            raise RestoreRefusedError(f"unknown restore mode {self.mode!r}", hint=f"use one of {', '.join(MODES)}")


@dataclass
class RestoreReport:
    checkpoint_id: str
    plan: RestorePlan
    dry_run: bool
    safety_checkpoint_id: str | None = None
    outcomes: list[RestoreOutcome] = field(default_factory=list)
    health: list[HealthCheck] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""
    restore_id: str = ""
    expired_rollbacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(h.ok for h in self.health)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "dry_run": self.dry_run,
            "plan": self.plan.to_dict(),
            "safety_checkpoint_id": self.safety_checkpoint_id,
            "outcomes": [o.to_dict() for o in self.outcomes],
            "health": {"ok": self.healthy, "checks": [h.to_dict() for h in self.health]},
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "restore_id": self.restore_id,
            "expired_rollbacks": self.expired_rollbacks,
        }


#: builds the component restores for a manifest; the operator layer supplies targets and options
Builder = Callable[[Store, Manifest, RestoreRequest], list[ComponentRestore]]


def restore(store: Store, request: RestoreRequest, build: Builder) -> RestoreReport:
    """Run the recipe of the module docstring. Raises on refusal or failure; see the messages."""
    request.validate()
    started = format_ts(utcnow())
    # 1. resolve and verify
    cid = store.resolve(request.checkpoint_id)
    store.get(cid)
    result = store.verify(cid)
    if not result.ok:
        raise VerificationFailedError(result)
    assert result.manifest is not None
    manifest = store.opened(result.manifest, required=True)  # encrypted fingerprints: the master key decrypts them
    # 2. plan
    parts = build(store, manifest, request)
    if request.drill:  # a drill's copies are named <name>__drill_<id> where the engine names copies
        for part in parts:
            if hasattr(part, "use_drill_names"):
                part.use_drill_names()
    plan = RestorePlan(checkpoint_id=cid)
    for part in parts:
        items, problems = part.plan()
        plan.items += items
        plan.problems += problems
    missing = [c for c in request.components if c not in {p.component for p in parts}]
    if missing and not parts:
        plan.problems.append(f"checkpoint {cid} holds none of the requested components {list(request.components)}")
    if not plan.ok:  # dry runs too: a plan that cannot run is a failure, not a green preview
        raise RestoreRefusedError(
            f"restore of {cid} refused: the plan has {len(plan.problems)} problem(s)\n"
            + "\n".join(f"PROBLEM: {p}" for p in plan.problems),
            hint="nothing was changed; resolve the problems or pick another checkpoint",
            plan=plan,
        )
    if not request.drill:  # a drill's copies replace nothing: there is nothing to undo
        plan.drift = _drift(parts, manifest, request)
        plan.drift_accepted = bool(plan.drift) and request.allow_drift
    report = RestoreReport(checkpoint_id=cid, plan=plan, dry_run=request.dry_run, started_at=started)
    log.info("%s", plan)
    if request.dry_run:
        log.info("Dry run: nothing was changed")
        report.finished_at = format_ts(utcnow())
        return report
    if not plan.ok:
        raise RestoreRefusedError(
            str(plan), hint="nothing was changed; resolve the problems or pick another checkpoint"
        )
    restore_id = new_restore_id()
    keys = [target_key(p.component, p.target.public()) for p in parts]
    lease = Lease(
        store.fs,
        store.lock,
        restore_id,
        [*keys, use_key(cid, restore_id)],
        owner=request.provenance,
        ttl=request.lease_ttl,
    )  # the use key keeps retention off the checkpoint while it is read
    lease.acquire(is_alive=request.is_alive)
    try:
        journal = Journal.begin(
            store.fs,
            checkpoint_id=cid,
            kind="drill" if request.drill else "restore",  # a drill's replay only ever drops its copies
            owner={**lease.owner, "keys": keys},
            restore_id=restore_id,
        )
        for part in parts:
            public = {**part.target.public(), "conn_id": request.conn_ids.get(part.component)}
            part.journal = journal.component(part.component, public)
        _run(store, parts, cid, request, report, journal)
        journal.close()
    finally:
        lease.release()
    report.restore_id = restore_id
    report.finished_at = format_ts(utcnow())
    return report


def _drift(parts: list[ComponentRestore], manifest: Manifest, request: RestoreRequest) -> list[str]:
    """Every component's schema drift, then the config drift (core/drift.py)."""
    from airflow_checkpoint_provider.core.drift import config_changes

    lines: list[str] = []
    for part in parts:
        compare = getattr(part, "drift", None)
        if compare is None:
            continue
        try:
            lines += [f"{part.component}: {line}" for line in compare()]
        except Exception as exc:
            log.warning("Comparing the live %s with the checkpoint failed: %s", part.component, exc)
            lines.append(f"{part.component}: the live state could not be compared ({exc}); drift unknown")
    lines += config_changes(manifest.config_keys, request.deployment)
    return lines


def _run(
    store: Store,
    parts: list[ComponentRestore],
    cid: str,
    request: RestoreRequest,
    report: RestoreReport,
    journal: Journal,
) -> None:
    """Steps 3 to 6, under the lease. On failure, the journal is closed only if every component
    undid itself; otherwise it stays for the replay (`airflow-checkpoint recover-interrupted`).
    A drill runs step 4 only, then drops the copies (nothing is replaced)."""
    # 3. safety checkpoint of what will be replaced
    if request.safety_checkpoint and not request.drill:
        report.safety_checkpoint_id = _safety_checkpoint(store, parts, cid, request)
    # 4. load side by side and verify everything before replacing anything
    prepared: list[ComponentRestore] = []
    part = parts[0]
    try:
        for part in parts:
            log.info("Loading %s side by side", part.component)
            part.prepare()
            prepared.append(part)
    except Exception as exc:
        left = _each(reversed(prepared + [part]), "abort")
        state = (
            "the side-by-side copies were removed"
            if not left
            else f"the side-by-side copies of {', '.join(left)} could not be removed (see the log): "
            "`airflow-checkpoint recover-interrupted` or the next restore removes them"
        )
        if not left:
            journal.close()
        raise RestoreFailedError(
            f"restore of {cid} failed while loading {part.component}: {exc}",
            hint=f"nothing was replaced: the current data is untouched; {state}",
        ) from exc
    if request.drill:  # the copies loaded and verified: that is the proof; production is never touched
        left = _each(reversed(prepared), "abort")
        if left:
            raise RestoreFailedError(
                f"drill of {cid}: the side-by-side copies of {', '.join(left)} could not be removed",
                hint="`airflow-checkpoint recover-interrupted` removes them",
            )
        return
    # 5. cut over, rolling back what was already cut over if one fails
    done: list[ComponentRestore] = []
    try:
        for part in parts:
            log.info("Cutting over %s", part.component)
            report.outcomes.append(part.cutover())
            done.append(part)
    except Exception as exc:
        rollback_errors = _each(reversed(done), "rollback")
        abort_errors = _each([p for p in parts if p not in done], "abort")
        state = (
            "the components cut over before it were rolled back"
            if done and not rollback_errors
            else "no other component had been cut over"
            if not rollback_errors
            else f"rolling back failed for {', '.join(rollback_errors)}: run `airflow-checkpoint "
            f"recover-interrupted`, or restore the safety checkpoint {report.safety_checkpoint_id}"
        )
        if abort_errors:
            state += (
                f"; the side-by-side copies of {', '.join(abort_errors)} could not be removed: "
                "`airflow-checkpoint recover-interrupted` removes them"
            )
        if not rollback_errors and not abort_errors:
            journal.close()
        raise RestoreFailedError(
            f"restore of {cid} failed while cutting over {part.component}: {exc}; {part.component} was put back; "
            f"{state}",
            hint="the current data is serving again; fix the cause and retry"
            if not rollback_errors
            else "see the message: some of the current data may need the replay",
        ) from exc
    # 6. health
    for part in parts:
        report.health += part.health(request.tolerance)
    # 7. expire rollback copies beyond the policy, still under the lease
    if report.healthy:
        _expire_rollbacks(store, parts, RollbackPolicy.parse(request.rollback_keep), report)


def _expire_rollbacks(
    store: Store, parts: list[ComponentRestore], policy: RollbackPolicy, report: RestoreReport
) -> None:
    for part in parts:
        try:
            dropped = expire(part.component, part.target, policy, store)
        except Exception as exc:
            log.warning("Expiring the rollback copies of %s failed: %s", part.component, exc)
            continue
        for copy in dropped:
            log.info(
                "Dropped the rollback copy %s of %s (%s old; rollback_keep)",
                copy.name,
                copy.of,
                f"{copy.age / 3600:.1f} h",
            )
        report.expired_rollbacks += [c.to_dict() for c in dropped]


def _each(parts: Any, method: str) -> list[str]:
    """Call ``method`` on each part, logging (not raising) failures; returns the components that failed."""
    failed = []
    for part in parts:
        try:
            getattr(part, method)()
        except Exception:
            log.exception("%s of %s failed", method, part.component)
            failed.append(part.component)
    return failed


def _safety_checkpoint(store: Store, parts: list[ComponentRestore], cid: str, request: RestoreRequest) -> str | None:
    """Checkpoint what the restore will replace; None when nothing would be replaced (all targets new)."""
    staging = store.staging(staging_key("safety", cid, format_ts(utcnow())))
    staging.claim({**request.provenance, **this_process()})
    try:
        captured = [a for part in parts for a in part.safety_capture(staging)]
        if not captured:
            staging.discard()
            log.info("No safety checkpoint needed: the restore replaces nothing that exists")
            return None
        manifest = store.seal(
            staging,
            tags=["safety", f"before-restore-of:{cid}"],
            provenance={**request.provenance, "reason": f"safety checkpoint before restoring {cid}"},
        )
    except Exception:
        staging.discard()
        raise
    log.info("Safety checkpoint %s holds the state before the restore", manifest.checkpoint_id)
    return manifest.checkpoint_id
