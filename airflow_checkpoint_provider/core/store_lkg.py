"""The last-known-good pointer of a store: read it (checking its binding to the manifest), its history, and move it only to a checkpoint that verified."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    FormatError,
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
from airflow_checkpoint_provider.core.verify import (
    VerifyResult,
)

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.fs import StoreFS
    from airflow_checkpoint_provider.core.store import CheckpointInfo

log = logging.getLogger("airflow_checkpoint_provider.core.store")


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
            return (f"the last-known-good pointer binds checkpoint {cid} to manifest_sha256 "
                    f"{pointer.manifest_sha256}, but its manifest is now {manifest.manifest_sha256}: the checkpoint "
                    "was replaced after it was verified")
        return None


    def _lkg_fallback_hint(self, pointer: LkgPointer) -> str:
        """Names the LKG history's previous entry that still matches its checkpoint."""
        for entry in self.lkg_history():
            if entry.checkpoint_id != pointer.checkpoint_id and self._binding_problem(entry) is None:
                return (f"do not restore it; the LKG history's previous verified entry is {entry.checkpoint_id} "
                        f"(marked {entry.set_at}): check it with `airflow-checkpoint verify {entry.checkpoint_id}` "
                        f"and move the LKG back with `airflow-checkpoint lkg set {entry.checkpoint_id}`")
        return ("do not restore it; no earlier entry of the LKG history still matches its checkpoint: find a good "
                "one with `airflow-checkpoint verify --all` and mark it with `airflow-checkpoint lkg set <id>`")


    def mark_lkg(self, checkpoint_id: str, *, result: VerifyResult | None = None, reason: str = "") -> LkgPointer:
        """Point the LKG at a checkpoint, but only if it verifies.

        ``result`` may carry a verification just made by the caller (the bundle step verifies
        right after sealing); it is accepted only if it is a clean result for this very
        manifest. Otherwise the archive is verified here.
        """
        info = self.get(checkpoint_id)
        cid = info.checkpoint_id
        sha = info.manifest.manifest_sha256
        if result is None or not result.ok or result.checkpoint_id != cid or result.manifest is None or \
                result.manifest.manifest_sha256 != sha:
            result = self.verify(cid)  # outside the lock: verification reads the whole archive
        if not result.ok:
            raise VerificationFailedError(result)
        with self.lock():
            # the checkpoint must still be the one that was verified
            current = self.get(cid).manifest.manifest_sha256
            if current != sha:
                raise StoreError(f"checkpoint {cid} changed while it was being verified",
                                 hint="verify it again and retry")
            previous = self.lkg()
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
            self.fs.write_bytes("refs/lkg.json", data)  # the move happens here, atomically
            self.fs.write_bytes(f"refs/lkg-history/{stamp}-{cid}.json", data)
        log.info("Last-known-good is now %s (was %s)", cid, pointer.previous)
        return pointer

