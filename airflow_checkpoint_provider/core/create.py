"""Seal the captured artifacts of one run into a verified checkpoint, and maybe mark it LKG.

The BundleOperator of the checkpoint DAGs and ``airflow-checkpoint create`` both end a capture
here, so a checkpoint taken from the command line is sealed and verified exactly as one taken
by a DAG:

1. seal exactly the expected artifacts (each must still be staged with the reported sha256);
2. verify the sealed archive (every size and checksum) and record it beside the archive;
3. with ``mark_lkg``, move the last-known-good pointer, only after step 2 passed, and only if no
   restore held a captured server during the capture window.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from airflow_checkpoint_provider.core.errors import LkgRequirementError, VerificationFailedError
from airflow_checkpoint_provider.core.manifest import Artifact, Manifest, config_hash
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.core.verify import VerifyResult
from airflow_checkpoint_provider.core.workflow.codec import config_digest

log = logging.getLogger(__name__)


@dataclass
class Sealed:
    """What :func:`seal_and_verify` made: the manifest, its verification, and the LKG decision."""

    manifest: Manifest
    result: VerifyResult
    lkg: bool = False
    lkg_refused: str | None = None


def seal_and_verify(
    store: Store,
    staging: Staging,
    *,
    expected: list[Artifact],
    config: dict[str, Any],
    tags: list[str],
    pinned: bool,
    provenance: dict[str, Any],
    by: dict[str, Any],
    mark_lkg: bool,
    requires: Any,
    reason: str,
    target_keys: list[str],
) -> Sealed:
    """Steps 1 to 3 of the module docstring. Raises VerificationFailedError if the archive is bad."""
    # 1. seal
    manifest = store.seal(
        staging,
        expected=expected,
        tags=tags,
        pinned=pinned,
        config_hash=config_hash(config),
        config_keys=config_digest(config),
        provenance=provenance,
    )
    cid = manifest.checkpoint_id
    consistency = manifest.consistency()
    log.info(
        "Checkpoint %s holds %d artifacts of %d compressed bytes; capture window %s .. %s, skew between stores %d ms",
        cid,
        len(manifest.artifacts),
        manifest.total_size,
        consistency["window_start"],
        consistency["window_end"],
        consistency["skew_ms"],
    )
    # 2. verify, and record it beside the archive (the checkpoint is now verified:standard)
    started = time.monotonic()
    result = store.verify(cid)
    store.record_verify(store.get(cid), result, int((time.monotonic() - started) * 1000), by=by)
    if not result.ok:
        raise VerificationFailedError(result)
    log.info("Verified %s: %d artifacts", cid, len(result.verified))
    sealed = Sealed(manifest=manifest, result=result)
    if not mark_lkg:
        return sealed
    # 3. LKG, unless a restore of a captured server overlapped the capture window
    sealed.lkg_refused = restored_meanwhile(store, target_keys, consistency)
    if sealed.lkg_refused is None:
        try:
            store.mark_lkg(cid, result=result, requires=requires, by=by, reason=reason)
        except LkgRequirementError as exc:
            sealed.lkg_refused = exc.message
        else:
            sealed.lkg = True
            log.info("Last-known-good is now %s", cid)
    if sealed.lkg_refused:
        log.warning("Not marking %s last-known-good: %s", cid, sealed.lkg_refused)
    return sealed


def restored_meanwhile(store: Store, keys: list[str], consistency: dict[str, Any]) -> str | None:
    """Why this checkpoint must not become LKG: a restore held a captured server during the capture."""
    from airflow_checkpoint_provider.core.lease import held_during

    start, end = consistency.get("window_start"), consistency.get("window_end")
    if not keys or not start or not end:
        return None
    held = held_during(store.fs, keys, start, end)
    if not held:
        return None
    rec = held[0]
    return (
        f"restore {rec.holder} held {rec.key} from {rec.acquired_at} to {rec.released_at or 'now'}, during the "
        f"capture window {start} .. {end}; the checkpoint is kept but may hold a half-restored state"
    )
