"""The last-known-good pointer of a store: read it (checking its binding to the manifest), its history, and move it only to a checkpoint that verified."""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConcurrentUpdateError,
    FormatError,
    LkgConflictError,
    LkgRequirementError,
    StoreError,
    VerificationFailedError,
)
from airflow_checkpoint_provider.core.fs import TMP_MARK
from airflow_checkpoint_provider.core.lkg import LKG_ALIASES, LKG_FORMAT, LkgPointer  # noqa: F401 - re-exported
from airflow_checkpoint_provider.core.manifest import (
    Manifest,
    format_ts,
    parse_ts,
    utcnow,
)
from airflow_checkpoint_provider.core.states import (
    CORRUPT,
    DRILL_FAILED,
    VERIFIED,
    CheckpointState,
    StateRecord,
    check_requirement,
    level_rank,
    meets,
    unmet,
)
from airflow_checkpoint_provider.core.verify import (
    ProblemKind,
    VerifyResult,
)

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.fs import StoreFS
    from airflow_checkpoint_provider.core.store import CheckpointInfo

log = logging.getLogger("airflow_checkpoint_provider.core.store")

LKG_REL = "refs/lkg.json"
_ANY = object()  #: mark_lkg's ``expect`` when the caller does not care what the LKG was


class _LkgMixin:
    if TYPE_CHECKING:  # provided by Store
        fs: StoreFS

        @property
        def root(self) -> str: ...
        def lock(self) -> AbstractContextManager[None]: ...
        def exists(self, checkpoint_id: str) -> bool: ...
        def _info(self, cid: str) -> CheckpointInfo: ...
        def get(self, checkpoint_id: str) -> CheckpointInfo: ...
        def verify(self, checkpoint_id: str, *, deep: bool = False) -> VerifyResult: ...
        def scan(self, *, tag: str | None = None) -> tuple[list[CheckpointInfo], list[Any]]: ...
        def state_of(self, info: CheckpointInfo) -> CheckpointState: ...
        def record_state(
            self,
            info: CheckpointInfo,
            *,
            kind: str,
            outcome: str,
            level: str | None = None,
            duration_ms: int = 0,
            problems: list[dict[str, Any]] | None = None,
            evidence: dict[str, Any] | None = None,
            by: dict[str, Any] | None = None,
        ) -> StateRecord: ...

    """The last-known-good pointer of a store: read it (checking its binding to the manifest), its history, and move it only to a checkpoint that verified. Mixed into :class:`Store`."""

    def lkg(self) -> LkgPointer | None:
        """The current LKG pointer, or None if none was ever set."""
        if not self.fs.exists("refs/lkg.json"):
            return None
        try:
            return LkgPointer.from_bytes(self.fs.read_bytes("refs/lkg.json"), "refs/lkg.json")
        except FormatError as exc:
            history = self.lkg_history()
            if not history:
                raise
            log.warning("%s; falling back to the newest LKG history record", exc.message)
            return history[0]

    def lkg_history(self) -> list[LkgPointer]:
        """Every LKG move, newest first."""
        out = []
        for entry in self.fs.listdir("refs/lkg-history"):
            if entry.startswith(TMP_MARK) or not entry.endswith(".json"):
                continue
            try:
                out.append(LkgPointer.from_bytes(self.fs.read_bytes(f"refs/lkg-history/{entry}"), entry))
            except FormatError as exc:
                log.warning("Skipping LKG history record %s: %s", entry, exc.message)
        out.sort(key=lambda p: p.set_at, reverse=True)
        return out

    def _current_lkg(self) -> LkgPointer:
        pointer = self.lkg()
        if pointer is None:
            raise CheckpointNotFoundError(
                f"no last-known-good checkpoint is set in {self.root}",
                hint="run checkpoint_scheduled (it marks the LKG after verification) or `airflow-checkpoint "
                "lkg set <id>`",
            )
        return pointer

    def _binding_problem(self, pointer: LkgPointer, manifest: Manifest | None = None) -> str | None:
        """Why ``pointer`` no longer names the manifest it was verified with, or None if it still does."""
        cid = pointer.checkpoint_id
        if manifest is None:
            if not self.exists(cid):
                return f"the last-known-good pointer names checkpoint {cid}, which is not in {self.root}"
            try:
                manifest = self._info(cid).manifest
            except CheckpointError as exc:
                return f"the last-known-good checkpoint {cid} cannot be read: {exc.message}"
        if manifest.manifest_sha256 != pointer.manifest_sha256:
            return (
                f"the last-known-good pointer binds checkpoint {cid} to manifest_sha256 "
                f"{pointer.manifest_sha256}, but its manifest is now {manifest.manifest_sha256}: the checkpoint "
                "was replaced after it was verified"
            )
        return None

    def _lkg_fallback_hint(self, pointer: LkgPointer) -> str:
        """Names the LKG history's previous entry that still matches its checkpoint."""
        for entry in self.lkg_history():
            if (
                entry.checkpoint_id != pointer.checkpoint_id
                and self._binding_problem(entry) is None
                and self.lkg_problem(entry) is None
            ):
                return (
                    f"do not restore it; the LKG history's previous verified entry is {entry.checkpoint_id} "
                    f"(marked {entry.set_at}): check it with `airflow-checkpoint verify {entry.checkpoint_id}` "
                    f"and move the LKG back with `airflow-checkpoint lkg set {entry.checkpoint_id}`"
                )
        return (
            "do not restore it; no earlier entry of the LKG history still matches its checkpoint: find a good "
            "one with `airflow-checkpoint verify --all` and mark it with `airflow-checkpoint lkg set <id>`"
        )

    def mark_lkg(
        self,
        checkpoint_id: str,
        *,
        result: VerifyResult | None = None,
        reason: str = "",
        requires: str = VERIFIED,
        by: dict[str, Any] | None = None,
        expect: LkgPointer | None | object = _ANY,
    ) -> LkgPointer:
        """Point the LKG at a checkpoint, but only if it verifies and is in the state ``requires`` names.

        The pointer is replaced by compare-and-swap on what was read (an ETag and ``If-Match`` on
        object storage), so a writer that lost its lock can never overwrite a newer move. ``expect``:
        the pointer the caller saw (None: no LKG yet); if another writer moved it since,
        :class:`LkgConflictError` is raised and nothing changes.

        ``result`` may carry a verification just made by the caller (the bundle step verifies
        right after sealing); it is accepted only if it is a clean result for this very
        manifest. Otherwise the archive is verified here. Either way the verification is recorded
        (:mod:`.states`) unless a record already shows it. ``requires`` is ``[checkpoint]
        lkg_requires``: ``verified`` or ``drilled``; a corrupt or drill_failed checkpoint never
        becomes the LKG (:class:`LkgRequirementError`).
        """
        check_requirement(requires)
        info = self.get(checkpoint_id)
        cid = info.checkpoint_id
        sha = info.manifest.manifest_sha256
        state = self.state_of(info)
        if state.state in (CORRUPT, DRILL_FAILED):
            raise LkgRequirementError(
                f"checkpoint {cid} cannot become the last-known-good: {unmet(state, requires)}",
                hint="pick another checkpoint (`airflow-checkpoint list` shows the STATE)",
            )
        if (
            result is None
            or not result.ok
            or result.checkpoint_id != cid
            or result.manifest is None
            or result.manifest.manifest_sha256 != sha
        ):
            started = time.monotonic()
            result = self.verify(cid)  # outside the lock: verification reads the whole archive
            self.record_verify(info, result, int((time.monotonic() - started) * 1000), by=by)
        elif level_rank(state.level) < level_rank(result.level):
            self.record_verify(info, result, 0, by=by)
        if not result.ok:
            raise VerificationFailedError(result)
        with self.lock():
            # the checkpoint must still be the one that was verified, and still in the required state
            current = self.get(cid)
            if current.manifest.manifest_sha256 != sha:
                raise StoreError(
                    f"checkpoint {cid} changed while it was being verified", hint="verify it again and retry"
                )
            problem = unmet(self.state_of(current), requires)
            if problem:
                raise LkgRequirementError(
                    f"checkpoint {cid} cannot become the last-known-good: {problem}",
                    hint="run `airflow-checkpoint verify --level standard` on it, or for "
                    "lkg_requires=drilled the checkpoint_restore_drill DAG, first",
                )
            seen = self.fs.read_tagged(LKG_REL)
            previous = self.lkg()
            if expect is not _ANY and expect != previous:
                raise LkgConflictError(
                    f"the last-known-good moved to {previous.checkpoint_id if previous else 'nothing'} "
                    f"(set {previous.set_at if previous else '-'}) while {cid} was being marked; it was not moved",
                    hint=f"check the new LKG with `airflow-checkpoint lkg show`; if {cid} should still be the LKG, "
                    f"run `airflow-checkpoint lkg set {cid}` again",
                )
            now = format_ts(utcnow())
            pointer = LkgPointer(
                checkpoint_id=cid,
                manifest_sha256=sha,
                set_at=now,
                previous=previous.checkpoint_id if previous else None,
                reason=reason,
                verified_at=now,
            )
            data = pointer.to_bytes()
            stamp = parse_ts(now).strftime("%Y%m%dT%H%M%S%fZ")
            try:  # the move happens here, atomically, only over what was read above
                self.fs.replace_if(LKG_REL, data, seen[1] if seen else None)
            except ConcurrentUpdateError:
                raise LkgConflictError(
                    f"another writer replaced {self.root}/{LKG_REL} while {cid} was being marked; it was not moved",
                    hint=f"check the new LKG with `airflow-checkpoint lkg show`; if {cid} should still be the LKG, "
                    f"run `airflow-checkpoint lkg set {cid}` again",
                ) from None
            self.fs.write_bytes(f"refs/lkg-history/{stamp}-{cid}.json", data)
        log.info("Last-known-good is now %s (was %s)", cid, pointer.previous)
        return pointer

    def record_verify(
        self,
        info: CheckpointInfo,
        result: VerifyResult,
        duration_ms: int,
        *,
        by: dict[str, Any] | None = None,
        evidence: dict[str, Any] | None = None,
        unchecked: list[str] | None = None,
    ) -> StateRecord:
        """Record a verification's outcome: ``ok``, ``corrupt`` (it found problems), or ``error`` when the
        archive could not be read at all (an unmounted store is no proof of damage). ``unchecked``:
        parts that could not be checked (a server that did not answer), kept as evidence."""
        unreadable = {ProblemKind.UNREADABLE}
        outcome = "ok" if not result.problems else ("error" if result.kinds() <= unreadable else "corrupt")
        return self.record_state(
            info,
            kind="verify",
            outcome=outcome,
            level=result.level,
            duration_ms=duration_ms,
            problems=[p.to_dict() for p in result.problems],
            evidence={
                "bytes_read": result.bytes_read,
                "verified": list(result.verified),
                **({"unchecked": unchecked} if unchecked else {}),
                **(evidence or {}),
            },
            by=by,
        )

    def lkg_problem(self, pointer: LkgPointer) -> str | None:
        """Why the LKG must not be restored (its checkpoint is corrupt or drill_failed), or None."""
        if not self.exists(pointer.checkpoint_id):
            return None  # the binding check reports it
        try:
            state = self.state_of(self._info(pointer.checkpoint_id))
        except CheckpointError:
            return None
        if state.state in (CORRUPT, DRILL_FAILED):
            return (
                f"the last-known-good checkpoint {pointer.checkpoint_id} is {state.state}: {state.reason}; it is "
                "never restored as the LKG"
            )
        return None

    def fallback_lkg(
        self, why: str, *, requires: str = VERIFIED, by: dict[str, Any] | None = None
    ) -> LkgPointer | None:
        """Move the LKG off a damaged checkpoint to the newest one that meets ``requires`` and verifies.

        Candidates are tried newest first; each is verified again (a failure is recorded and the
        next one is tried). The new pointer's ``reason`` records ``why``. With no candidate the
        pointer is removed (no LKG is better than a damaged one) and None is returned.
        """
        current = self.lkg()
        for info in self.scan()[0]:
            if current is not None and info.checkpoint_id == current.checkpoint_id:
                continue
            if not meets(self.state_of(info), requires):
                continue
            try:
                pointer = self.mark_lkg(info.checkpoint_id, reason=f"fallback: {why}", requires=requires, by=by)
            except (VerificationFailedError, LkgRequirementError) as exc:
                log.warning("Not falling back to %s: %s", info.checkpoint_id, exc.message.splitlines()[0])
                continue
            log.warning("Last-known-good fell back to %s: %s", pointer.checkpoint_id, why)
            return pointer
        with self.lock():
            if self.fs.exists("refs/lkg.json"):
                self.fs.remove("refs/lkg.json")
        log.error("No checkpoint can take over as last-known-good (%s); the pointer was removed", why)
        return None
