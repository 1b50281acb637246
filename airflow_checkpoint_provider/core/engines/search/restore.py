"""Search restore: restore the snapshot side by side, verify it, then cut over, journaled.

Public API::

    plan_restore(client, artifact, doc=None, *, checkpoint_id, indices=None, swap="auto",
                 include_global_state=False, repository_settings=None, restore_templates=None) -> RestorePlan
    restore(client, artifact, doc=None, *, checkpoint_id, indices=None, swap="auto",
            include_global_state=False, wait_timeout=3600, log=None, repository_settings=None,
            poll_interval=1.0, restore_templates=None, journal=None) -> RestoreOutcome
    prepare_restore(client, artifact, doc=None, **same) -> Prepared    # plan, register, load, verify
    cut_over(prepared) -> RestoreOutcome;  roll_back(prepared) -> {target: state};  abort(prepared)
    recover(target, entry) -> [str]                                     # replay of an interrupted one
    compatibility_problems(snapshot_flavor, snapshot_version, cluster_flavor, cluster_version) -> [str]
    collect_aliases(client, indices) -> {alias: {index: properties}}

``artifact`` is the checkpoint's ``search/snapshot.json`` :class:`~...manifest.Artifact` (its
``meta`` names the repository and snapshot, its ``fingerprints`` hold the expected documents per
index); ``doc`` is the artifact's JSON document. Either may be omitted when the other carries what
is needed; when both are given the artifact's fingerprints (covered by the manifest) win.

The steps, what each one leaves if it fails, and how a replay finishes or undoes them are in
:mod:`._plan` (what becomes of each index, data stream and template), :mod:`._cutover` (load,
verify, forward pass) and :mod:`._replay` (backward pass, :func:`recover`). In short:

- every index ``X`` is restored side by side as ``X__restoring_<short id>`` and verified
  (``_count``, mapping hash) while ``X`` keeps serving; a mismatch drops the copies;
- an existing concrete ``X`` is write-blocked, cloned to ``X__rollback_<short id>_<stamp>``, closed
  and restored over from the snapshot, so it has exactly the original's settings and mappings;
  an alias ``X`` is switched atomically to the verified copy; a data stream is kept in a rollback
  snapshot, deleted and restored as a data stream;
- missing templates of the captured indices are created first (``restore_templates``);
- the checkpoint's aliases are reinstated in one atomic request;
- every destructive step is journaled (``journal``: a :class:`~...journal.ComponentJournal`), and a
  failure anywhere runs the backward pass, so the cluster serves what it served before.

**Compatibility.** The snapshot must exist in the repository, be SUCCESS and carry the recorded
uuid. A repository missing on the target cluster is registered from ``repository_settings`` (and
verified) before anything else. Product and version rules: :func:`compatibility_problems`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from airflow_checkpoint_provider.core.engines.search._client import SearchClient
from airflow_checkpoint_provider.core.engines.search._compat import (
    compatibility_problems,
    parse_version,
)
from airflow_checkpoint_provider.core.engines.search._cutover import (
    RestoreVerificationError,
    drop_copies,
    forward,
    load,
)
from airflow_checkpoint_provider.core.engines.search._names import (
    MAX_INDEX_NAME_BYTES,
    ROLLBACK_MARK,
    ROLLBACK_RE,
    STAGING_MARK,
    STAGING_RE,
    rollback_name,
    short_id,
    staging_name,
)
from airflow_checkpoint_provider.core.engines.search._ops import (
    ALIAS_PROPERTIES,
    SERVER_ASSIGNED_SETTINGS,
    ClusterView,
    cluster_view,
    collect_aliases,
    wait_for_primaries,
)
from airflow_checkpoint_provider.core.engines.search._plan import (
    COMPONENT,
    SWAP_MODES,
    Planned,
    make_plan,
)
from airflow_checkpoint_provider.core.engines.search._replay import backward, recover
from airflow_checkpoint_provider.core.engines.search._source import (
    SnapshotSource,
    snapshot_source,
)
from airflow_checkpoint_provider.core.engines.search._steps import STEPS, Ctx
from airflow_checkpoint_provider.core.errors import EngineError
from airflow_checkpoint_provider.core.journal import ComponentJournal, NullJournal
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.restore import RestoreOutcome, RestorePlan

__all__ = [
    "ALIAS_PROPERTIES",
    "COMPONENT",
    "MAX_INDEX_NAME_BYTES",
    "ROLLBACK_MARK",
    "ROLLBACK_RE",
    "SERVER_ASSIGNED_SETTINGS",
    "STAGING_MARK",
    "STAGING_RE",
    "STEPS",
    "SWAP_MODES",
    "ClusterView",
    "CutOverError",
    "Prepared",
    "RestoreRefusedError",
    "RestoreVerificationError",
    "SnapshotSource",
    "abort",
    "cluster_view",
    "collect_aliases",
    "compatibility_problems",
    "cut_over",
    "parse_version",
    "plan_restore",
    "prepare_restore",
    "recover",
    "restore",
    "roll_back",
    "rollback_name",
    "short_id",
    "snapshot_source",
    "staging_name",
    "wait_for_primaries",
]

_log = logging.getLogger(__name__)


class RestoreRefusedError(EngineError):
    """The restore plan has problems (incompatible snapshot, missing repository, closed target ...)."""

    def __init__(self, message: str, *, hint: str | None = None, plan: RestorePlan | None = None) -> None:
        super().__init__(message, hint=hint)
        self.plan = plan


class CutOverError(EngineError):
    """The cut-over failed. ``rolled_back`` tells whether every step was undone; ``state`` is per index."""

    def __init__(
        self, message: str, *, hint: str | None = None, rolled_back: bool = False, state: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.rolled_back = rolled_back
        self.state = state or {}


def _say(log: Any) -> Callable[[str], None]:
    if isinstance(log, logging.Logger | logging.LoggerAdapter):
        return log.info
    if callable(log):
        return cast(Callable[[str], None], log)
    return _log.info


def plan_restore(
    client: SearchClient,
    artifact: Artifact | None,
    doc: dict[str, Any] | None = None,
    *,
    checkpoint_id: str,
    indices: list[str] | str | None = None,
    swap: str = "auto",
    include_global_state: bool = False,
    repository_settings: dict[str, Any] | None = None,
    restore_templates: bool | None = None,
    mark: str = STAGING_MARK,
) -> RestorePlan:
    """What :func:`restore` would do, and why it would refuse (``plan.problems``). Changes nothing.

    One :class:`PlanItem` per index or data stream (``action`` replace / create / switch-alias /
    create-alias / replace-alias / replace-stream / create-stream; ``staging_name`` the side-by-side
    copy; ``conflicts``: the open index that will be replaced and its document count now (``_count``,
    top-level documents, as the checkpoint counts them), leftovers ``*__restoring_*`` of earlier
    restores, aliases that point elsewhere), one per template to create, overwrite or keep (with
    the difference), plus one for the global state when requested. ``problems``: the snapshot is
    missing, not SUCCESS or another one (uuid); the repository is not registered and no settings
    are given, or its location is outside ``path.repo``; the product or version cannot read it; a
    target is closed or red; a name would exceed 255 bytes; ``swap='alias'`` on a concrete index.
    """
    return make_plan(
        client,
        snapshot_source(artifact, doc),
        checkpoint_id=checkpoint_id,
        indices=indices,
        swap=swap,
        include_global_state=include_global_state,
        repository_settings=repository_settings,
        restore_templates=restore_templates,
        mark=mark,
    ).plan


@dataclass
class Prepared:
    """A restore whose copies are loaded and verified: ready to :func:`cut_over` (or :func:`abort`)."""

    planned: Planned
    ctx: Ctx
    started: float
    cut: bool = False

    @property
    def plan(self) -> RestorePlan:
        return self.planned.plan


def prepare_restore(
    client: SearchClient,
    artifact: Artifact | None,
    doc: dict[str, Any] | None = None,
    *,
    checkpoint_id: str,
    indices: list[str] | str | None = None,
    swap: str = "auto",
    include_global_state: bool = False,
    wait_timeout: float = 3600,
    log: Any = None,
    repository_settings: dict[str, Any] | None = None,
    poll_interval: float = 1.0,
    restore_templates: bool | None = None,
    journal: ComponentJournal | None = None,
    mark: str = STAGING_MARK,
) -> Prepared | None:
    """Plan (refusing on problems), register a missing repository, load the copies and verify them.

    Returns None when there is nothing to restore. Raises :class:`RestoreRefusedError` (nothing
    done), :class:`RestoreVerificationError` (copies dropped, nothing serving touched), or the
    repository registration's error (which names the server's reason, e.g. ``path.repo``).
    """
    say = _say(log)
    started = time.monotonic()
    source = snapshot_source(artifact, doc)
    replan = functools.partial(
        make_plan,
        client,
        source,
        checkpoint_id=checkpoint_id,
        indices=indices,
        swap=swap,
        include_global_state=include_global_state,
        repository_settings=repository_settings,
        restore_templates=restore_templates,
        mark=mark,
    )
    planned = replan()
    if planned.plan.problems:
        raise RestoreRefusedError(
            f"search cluster {client.where}: refusing to restore checkpoint {checkpoint_id}:\n"
            + "\n".join(f"  - {p}" for p in planned.plan.problems),
            hint="fix the problems listed (plan_restore shows the same list without changing anything)",
            plan=planned.plan,
        )
    if planned.register_repository:
        say(f"registering snapshot repository {source.repository} on {client.where}")
        client.ensure_repository(source.repository, repository_settings)
        planned = replan()  # the same plan, now that the repository exists
        if planned.plan.problems:
            raise RestoreRefusedError(
                f"search cluster {client.where}: refusing to restore checkpoint {checkpoint_id} (repository "
                f"{source.repository} registered):\n" + "\n".join(f"  - {p}" for p in planned.plan.problems),
                hint="fix the problems listed",
                plan=planned.plan,
            )
    if not planned.items and not any(t["action"] in ("create", "overwrite") for t in planned.templates):
        return None
    for leftover in planned.leftovers:
        say(f"note: {leftover} is left over by an earlier restore (left alone)")
    ctx = Ctx(
        client,
        planned.record(),
        journal or NullJournal(COMPONENT),
        say=say,
        timeout=wait_timeout,
        poll_interval=poll_interval,
        checkpoint_id=checkpoint_id,
    )
    load(ctx, planned, include_global_state=include_global_state)
    return Prepared(planned=planned, ctx=ctx, started=started)


def _failure(ctx: Ctx, checkpoint_id: str, exc: BaseException, failed_at: str, doing: str) -> CutOverError:
    """Run the backward pass after a failed cut-over; the error says what state remains."""
    reason = exc.message if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
    lines = [
        f"search cluster {ctx.client.where}: restore of checkpoint {checkpoint_id} failed during the cut-over "
        f"({failed_at}: {doing}): {reason}"
    ]
    try:
        backward(ctx)
    except Exception as undo_exc:
        lines.append(
            "ROLLBACK INCOMPLETE: " + (undo_exc.message if isinstance(undo_exc, EngineError) else str(undo_exc))
        )
        lines += [f"  - {k}: {v}" for k, v in sorted(ctx.state.items())]
        copies = [it["staging"] for it in ctx.items if it["staging"]]
        lines.append(f"side-by-side copies that may remain: {', '.join(copies)}")
        return CutOverError(
            "\n".join(lines),
            hint="the journal of this restore still holds every step: replay it "
            "(airflow-checkpoint recover-interrupted, or recover(target, entry)) once the cause is "
            "fixed; nothing else should write to these indices meanwhile",
            rolled_back=False,
            state=dict(ctx.state),
        )
    ctx.journal.phase("rolled_back")
    lines.append("rolled back completely:")
    lines += [f"  - {k}: {v}" for k, v in sorted(ctx.state.items())]
    lines.append(
        "the side-by-side copies were deleted; the rollback copies taken were dropped (the originals serve again)"
    )
    return CutOverError(
        "\n".join(lines),
        hint="the cluster serves what it served before the restore; fix the cause and retry",
        rolled_back=True,
        state=dict(ctx.state),
    )


def cut_over(prepared: Prepared) -> RestoreOutcome:
    """Run the forward pass (phases ``cutting_over`` -> ``cut_over``); on failure the backward pass.

    Raises :class:`CutOverError` (``rolled_back`` True when everything was undone).
    """
    ctx, planned = prepared.ctx, prepared.planned
    cid = planned.plan.checkpoint_id
    ctx.journal.phase("cutting_over")
    try:
        counts = forward(ctx)
    except BaseException as exc:
        error = _failure(ctx, cid, exc, ctx.current, ctx.doing)
        if not isinstance(exc, Exception):
            _log.error("%s", error)
            raise
        raise error from exc
    ctx.journal.phase("cut_over")
    prepared.cut = True
    src = planned.source
    rollback = [it["rollback"] for it in planned.items if it["rollback"]] + sorted(
        {h for it in planned.items if it["action"] in ("switch-alias", "replace-alias") for h in it["holders"]}
    )
    details = {
        "cluster": ctx.client.where,
        "engine": planned.info["flavor"],
        "engine_version": planned.info["version"],
        "repository": src.repository,
        "snapshot": src.snapshot,
        "uuid": src.uuid,
        "short_id": planned.short,
        "indices": {
            it["target"]: {
                "action": it["action"],
                "kind": it["kind"],
                "serving_index": it["staging"] if it["action"] in ("switch-alias", "create-alias") else it["target"],
                "docs": counts.get(
                    it["staging"] if it["action"] in ("switch-alias", "create-alias") else it["target"],
                    sum(counts.get(b, 0) for b in it["expected"]) if it["kind"] == "stream" else None,
                ),
                "rollback": [it["rollback"]] if it["rollback"] else sorted(it["holders"]),
                "previous_aliases": sorted(it.get("old_aliases") or {}),
            }
            for it in planned.items
        },
        "aliases_reinstated": planned.alias_names,
        "templates": {t["name"]: t["action"] for t in planned.templates},
        "leftovers": planned.leftovers,
        "seconds": round(time.monotonic() - prepared.started, 3),
    }
    restored = [it["target"] for it in planned.items]
    ctx.say(
        f"restore of checkpoint {cid} done: {', '.join(restored)}; rollback copies: {', '.join(rollback) or 'none'}"
    )
    return RestoreOutcome(component=COMPONENT, restored=restored, rollback=rollback, details=details)


def roll_back(prepared: Prepared) -> dict[str, str]:
    """Undo a completed cut-over (the orchestration does this when a later component fails)."""
    backward(prepared.ctx)
    prepared.ctx.journal.phase("rolled_back")
    return dict(prepared.ctx.state)


def abort(prepared: Prepared | None, client: SearchClient | None = None, say: Any = None) -> list[str]:
    """Drop the side-by-side copies of a prepared (not cut over) restore; returns those that remain."""
    if prepared is None:
        return []
    kept = drop_copies(client or prepared.ctx.client, prepared.planned.copies(), _say(say))
    prepared.ctx.journal.phase("aborted")
    return kept


def restore(
    client: SearchClient,
    artifact: Artifact | None,
    doc: dict[str, Any] | None = None,
    *,
    checkpoint_id: str,
    indices: list[str] | str | None = None,
    swap: str = "auto",
    include_global_state: bool = False,
    wait_timeout: float = 3600,
    log: Any = None,
    repository_settings: dict[str, Any] | None = None,
    poll_interval: float = 1.0,
    restore_templates: bool | None = None,
    journal: ComponentJournal | None = None,
) -> RestoreOutcome:
    """Restore the checkpoint's snapshot side by side, verify it, then cut over (module docstring).

    Raises :class:`RestoreRefusedError` when the plan has problems (nothing done),
    :class:`RestoreVerificationError` when the restored copies differ from the fingerprints (copies
    deleted, originals untouched), :class:`CutOverError` when the cut-over failed (rolled back as
    far as possible; the message says what state each index is in). ``log`` is a logger or a
    callable taking one string; it gets one line per step.
    """
    prepared = prepare_restore(
        client,
        artifact,
        doc,
        checkpoint_id=checkpoint_id,
        indices=indices,
        swap=swap,
        include_global_state=include_global_state,
        wait_timeout=wait_timeout,
        log=log,
        repository_settings=repository_settings,
        poll_interval=poll_interval,
        restore_templates=restore_templates,
        journal=journal,
    )
    if prepared is None:
        plan = plan_restore(client, artifact, doc, checkpoint_id=checkpoint_id, indices=indices, swap=swap)
        return RestoreOutcome(component=COMPONENT, details={"plan": plan.to_dict(), "note": "nothing to restore"})
    return cut_over(prepared)
