"""Deep verification of real checkpoints of every registered engine, and the LKG falling back, on the real servers.

For each engine's sample (tests/integration/engine_samples.py) two checkpoints are captured.
The newer one is then forged: its artifact's contents are broken and the manifest's size,
sha256 and raw size recomputed over the broken bytes, so that ``standard`` passes and the
forgery can even become the LKG. ``deep`` must catch it (pg_restore --list, the RDB walk with
its CRC64, the snapshot in its repository, the tree against its listing), mark it corrupt, and
make the LKG fall back to the older checkpoint.
"""

from __future__ import annotations

import json

import pytest
import zstandard

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.levels import sweep, verify_at
from tests.integration.engine_samples import SAMPLES
from tests.unit.core.helpers import plant_member

pytestmark = pytest.mark.integration


def _broken(kind: str, raw: bytes) -> bytes:
    """Contents that still decompress but are not what the artifact kind promises."""
    if kind.startswith("search/"):
        doc = json.loads(raw)
        doc["snapshot"]["uuid"] = "forged-uuid"
        doc["snapshot"]["indices"] = [*doc["snapshot"]["indices"], "an-index-never-snapshotted"]
        return json.dumps(doc).encode()
    if kind.startswith("pg_dump/"):
        return raw[:5] + bytes(range(256)) * 2 + raw[5 + 512 :]  # the header and TOC after the magic
    middle = len(raw) // 2
    return raw[:middle] + bytes([raw[middle] ^ 0xFF]) + raw[middle + 1 :]


def _forge(store: Store, cid: str, engine_name: str) -> str:
    """Break the engine's main artifact of checkpoint ``cid``, resealing the manifest over the broken bytes."""
    info = store.get(cid)
    engine = registry.get(engine_name)
    arts = engine.artifacts_of(info.manifest.artifacts)
    art = next(a for kind in engine.kinds for a in arts if a.kind == kind)  # the engine's main kind first
    with store.open_artifact(cid, art.name) as src:
        raw = src.read()
    broken = _broken(art.kind, raw)
    data = zstandard.ZstdCompressor(level=3).compress(broken) if art.compression == "zstd" else broken
    plant_member(store, cid, art.name, data, raw_size=len(broken))
    return art.member


@pytest.mark.parametrize("name", registry.names())
def test_a_forged_artifact_passes_standard_is_caught_by_deep_and_the_lkg_falls_back(name, request, tmp_path):
    engine = registry.get(name)
    sample = SAMPLES[name](request, tmp_path)
    store = Store.open(tmp_path / "store", create=True)
    targets = {name: sample.target}
    try:
        sample.seed()
        ids = []
        for run in ("good", "forged"):
            staging = store.staging(staging_key("lifecycle", f"{name}-{run}"))
            engine.capture(sample.target, staging, **sample.capture_options)
            ids.append(store.seal(staging).checkpoint_id)
        good, forged = ids
        result, record = verify_at(store, good, "deep", targets=targets)
        assert result.ok and record.outcome == "ok" and record.level == "deep", [str(p) for p in result.problems]
        assert record.evidence[name], "the engine's deep check left no evidence"
        store.mark_lkg(good)

        member = _forge(store, forged, name)
        assert verify_at(store, forged, "standard")[0].ok  # the forgery is self-consistent
        store.mark_lkg(forged)

        report = sweep(store, "deep", sample=0, targets=targets)
        assert report.corrupt == [forged]
        [row] = [r for r in report.verified if r["checkpoint_id"] == forged]
        assert any(p.startswith(f"data_error: {member}") for p in row["problems"]), row["problems"]
        assert store.state_of(store.get(forged)).state == "corrupt"
        assert report.lkg_fallback is not None and report.lkg_fallback["to"] == good
        assert store.lkg().checkpoint_id == good and store.lkg().reason.startswith("fallback: ")
        assert store.state_of(store.get(good)).label == "verified:deep"
    finally:
        sample.cleanup()


def test_deep_with_the_search_cluster_down_is_no_damage_and_stays_at_standard(request, tmp_path):
    sample = SAMPLES["search"](request, tmp_path)
    store = Store.open(tmp_path / "store", create=True)
    try:
        sample.seed()
        staging = store.staging(staging_key("lifecycle", "search-down"))
        registry.get("search").capture(sample.target, staging, **sample.capture_options)
        cid = store.seal(staging).checkpoint_id
        down = SearchTarget(url="http://127.0.0.1:9", timeout=2)
        result, record = verify_at(store, cid, "deep", targets={"search": down})
        assert result.ok and record.outcome == "ok" and record.level == "standard"
        assert any("127.0.0.1:9" in u for u in record.evidence["unchecked"]), record.evidence
        assert store.state_of(store.get(cid)).label == "verified:standard"
        # the snapshot's size, read from the status API once the cluster answers, counts in the listed size
        verify_at(store, cid, "deep", targets={"search": sample.target})
        state = store.state_of(store.get(cid))
        assert state.label == "verified:deep" and state.snapshot_bytes and state.snapshot_bytes > 1000
    finally:
        sample.cleanup()
