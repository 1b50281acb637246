"""State records of a store's checkpoints: append one, read a checkpoint's history, derive its state."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_checkpoint_provider.core.errors import FormatError
from airflow_checkpoint_provider.core.fs import TMP_MARK
from airflow_checkpoint_provider.core.listing import dir_key
from airflow_checkpoint_provider.core.manifest import format_ts, utcnow
from airflow_checkpoint_provider.core.states import STATE_DIR, CheckpointState, StateRecord, derive

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.fs import StoreFS
    from airflow_checkpoint_provider.core.listing import ListingCache
    from airflow_checkpoint_provider.core.store import CheckpointInfo

log = logging.getLogger("airflow_checkpoint_provider.core.store")


class _StatesMixin:
    """State records beside the archives (:mod:`.states`). Mixed into :class:`Store`."""

    if TYPE_CHECKING:  # provided by Store
        fs: StoreFS

        def get(self, checkpoint_id: str) -> CheckpointInfo: ...

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
    ) -> StateRecord:
        """Append one record for ``info``'s exact manifest (a new file, written atomically)."""
        record = StateRecord(
            checkpoint_id=info.checkpoint_id,
            manifest_sha256=info.manifest.manifest_sha256,
            kind=kind,
            outcome=outcome,
            recorded_at=format_ts(utcnow()),
            level=level,
            duration_ms=int(duration_ms),
            problems=list(problems or []),
            evidence=dict(evidence or {}),
            by=dict(by or {}),
        )
        data = record.to_bytes()  # validates: a record that could not be read back is never written
        StateRecord.from_bytes(data, "new record")
        folder = f"{STATE_DIR}/{info.checkpoint_id}"
        self.fs.makedirs(folder)
        self.fs.write_bytes(f"{folder}/{record.file_name()}", data)
        log.debug(
            "Recorded %s %s%s of %s", record.kind, record.outcome, f" at {level}" if level else "", info.checkpoint_id
        )
        return record

    def state_records(self, checkpoint_id: str) -> list[StateRecord]:
        """Every readable record of ``checkpoint_id``, oldest first (damaged ones are skipped with a warning)."""
        folder = f"{STATE_DIR}/{checkpoint_id}"
        out = []
        for entry in self.fs.listdir(folder):
            if entry.startswith(TMP_MARK) or not entry.endswith(".json"):
                continue
            try:
                record = StateRecord.from_bytes(self.fs.read_bytes(f"{folder}/{entry}"), f"{folder}/{entry}")
            except FormatError as exc:
                log.warning("Skipping state record %s/%s: %s", folder, entry, exc.message)
                continue
            if record.checkpoint_id == checkpoint_id:
                out.append(record)
        out.sort(key=lambda r: r.recorded_at)
        return out

    def state_of(self, info: CheckpointInfo) -> CheckpointState:
        """The state of a listed checkpoint, from its records for its current manifest (or, after a
        cached listing, as that listing found them if its records folder is unchanged)."""
        memo = self.__dict__.get("_listed_states", {}).get(info.checkpoint_id)
        sha = info.manifest.manifest_sha256
        if memo is not None and memo[1] == sha and memo[0] == dir_key(memo[2]):
            state: CheckpointState = memo[3]
            return state
        return derive(self.state_records(info.checkpoint_id), sha)

    def remember_state(self, info: CheckpointInfo, cache: ListingCache, folder: str) -> None:
        """During a cached listing: the state of ``info`` from the listing cache (or its records),
        kept for :meth:`state_of` while the records folder stays unchanged."""
        key, sha = dir_key(folder), info.manifest.manifest_sha256
        state = cache.state(info.checkpoint_id, sha, key, lambda: derive(self.state_records(info.checkpoint_id), sha))
        if key is not None:
            self.__dict__.setdefault("_listed_states", {})[info.checkpoint_id] = (key, sha, folder, state)

    def drop_states(self, checkpoint_id: str) -> None:
        """Remove a checkpoint's records (only when the checkpoint itself is deleted)."""
        self.fs.remove_tree(f"{STATE_DIR}/{checkpoint_id}")
