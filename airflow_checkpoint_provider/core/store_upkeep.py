"""Upkeep of a store: removing what crashed writers left, and the audit trail of restores."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from airflow_checkpoint_provider.core.envelope import KEYS_SUFFIX
from airflow_checkpoint_provider.core.errors import (
    FormatError,
)
from airflow_checkpoint_provider.core.fs import TMP_MARK
from airflow_checkpoint_provider.core.lkg import LKG_ALIASES, LKG_FORMAT, LkgPointer  # noqa: F401 - re-exported
from airflow_checkpoint_provider.core.manifest import (
    format_ts,
    parse_ts,
    utcnow,
)
from airflow_checkpoint_provider.core.safejson import load_json
from airflow_checkpoint_provider.core.staging import staging_owners

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.fs import StoreFS

log = logging.getLogger("airflow_checkpoint_provider.core.store")


AUDIT_FORMAT = "airflow-checkpoint-audit"
#: seconds without a new part after which an object store's upload counts as abandoned
UPLOAD_IDLE = 600.0


def _audit_name(now: str) -> str:
    import secrets

    return f"{parse_ts(now).strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(3)}.json"


class _UpkeepMixin:
    if TYPE_CHECKING:  # provided by Store
        fs: StoreFS

        def lock(self) -> AbstractContextManager[None]: ...

    """Upkeep of a store: removing what crashed writers left, and the audit trail of restores. Mixed into :class:`Store`."""

    def cleanup(
        self,
        *,
        stale_after: float = 24 * 3600,
        dry_run: bool = False,
        is_dead: Callable[[dict[str, Any]], bool | None] | None = None,
    ) -> list[str]:
        """Remove leftovers of crashed writers: temporary files, archives (and key records) without a manifest, the
        staging areas of runs that ended without sealing, any staging area older than
        ``stale_after``, and (object storage) uploads idle for ``min(stale_after, 600)`` seconds. Returns what was removed (with ``dry_run``: what would be).

        A staging area belongs to a dead run when every writer that claimed it
        (:meth:`Staging.claim`) is dead: ``is_dead(owner)`` (Airflow's view of the owner's run) says
        so, or, for a writer outside Airflow, its process on this host no longer runs."""
        from airflow_checkpoint_provider.core.lease import owner_gone

        def dead(owner: dict[str, Any]) -> bool:
            if owner.get("dag_id"):
                return is_dead is not None and is_dead(owner) is True
            return owner_gone(owner)

        now = time.time()
        with self.lock():
            doomed = []
            for entry in self.fs.listdir("checkpoints"):
                rel = f"checkpoints/{entry}"
                suffixes = (".tar", KEYS_SUFFIX) if not entry.startswith(".") else ()  # .lock- files are no orphans
                stem = next((rel[: -len(sfx)] for sfx in suffixes if entry.endswith(sfx)), None)
                orphan = stem is not None and not self.fs.exists(stem + ".manifest.json")
                if orphan or (entry.startswith(TMP_MARK) and self._age(rel, now) >= min(stale_after, 60.0)):
                    doomed.append((rel, False))
            for entry in self.fs.listdir("staging"):
                rel = f"staging/{entry}"
                owners = staging_owners(self.fs, rel)
                if self._age(rel, now) >= stale_after or (owners and all(dead(o) for o in owners)):
                    doomed.append((rel, True))
            for rel, tree in [] if dry_run else doomed:
                if tree:
                    self.fs.remove_tree(rel)
                else:
                    self.fs.remove(rel)
            # an object store's uploads that a dead writer never completed (none on a local store)
            idle = [u for u in self.fs.pending_uploads() if now - u.active >= min(stale_after, UPLOAD_IDLE)]
            for upload in [] if dry_run else idle:
                log.info("Aborting the incomplete upload of %s", upload.rel)
                self.fs.abort_upload(upload)
        return [rel for rel, _ in doomed] + [f"{u.rel} (incomplete upload)" for u in idle]

    def _age(self, rel: str, now: float) -> float:
        mtime = self.fs.mtime(rel)
        return now - mtime if mtime is not None else 0.0

    def write_audit(self, record: dict[str, Any]) -> str:
        """Append one audit record (a new file, never rewritten). Returns its path in the store."""
        now = format_ts(utcnow())
        body = {"format": AUDIT_FORMAT, "format_version": 1, "recorded_at": now, **record}
        rel = f"audit/{_audit_name(now)}"
        self.fs.makedirs("audit")
        self.fs.write_bytes(rel, (json.dumps(body, indent=2, sort_keys=True, default=str) + "\n").encode())
        return rel

    def audit_log(self) -> list[dict[str, Any]]:
        """Every audit record, newest first."""
        out = []
        for entry in self.fs.listdir("audit"):
            if entry.startswith(TMP_MARK) or not entry.endswith(".json"):
                continue
            try:
                record = load_json(self.fs.read_bytes(f"audit/{entry}"), source=f"audit/{entry}")
            except FormatError as exc:
                log.warning("Skipping damaged audit record %s: %s", entry, exc.message)
                continue
            if isinstance(record, dict) and isinstance(record.get("recorded_at", ""), str):
                out.append(record)
        out.sort(key=lambda r: r.get("recorded_at", ""), reverse=True)
        return out
