"""zstd bombs: a 35 KB member that inflates to more than 1 GiB must cost neither memory nor time.

The forged checkpoints keep every size and sha256 consistent (the stored bytes are what the
manifest says), so only the bound on the decompressed bytes can catch them.
"""

from __future__ import annotations

import pytest

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.engines.search.component import SearchRestore
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import IntegrityError
from airflow_checkpoint_provider.core.manifest import MAX_METADATA_BYTES
from airflow_checkpoint_provider.core.verify import ProblemKind
from tests.unit.core.helpers import (
    archive_path,
    flip_byte,
    make_checkpoint,
    member_data_offsets,
    plant_member,
    run_bomb_child,
    zstd_bomb,
)

NAME = "search/snapshot.json"
MEMBER = "artifacts/search/snapshot.json.zst"
MAX_RSS_MB = 300


def _plant(store: Store, run: str, bomb: bytes, raw_size: int | None) -> str:
    """A checkpoint whose search artifact is the bomb; ``raw_size=None`` keeps the original (a lie)."""
    cid = make_checkpoint(store, run=run).checkpoint_id
    plant_member(store, cid, NAME, bomb, raw_size)
    return cid


@pytest.fixture(scope="module")
def bombed(tmp_path_factory):
    store = Store.open(tmp_path_factory.mktemp("bombs") / "store", create=True)
    bomb, inflated = zstd_bomb()
    assert len(bomb) < 64 * 1024 and inflated > 1 << 30
    ids = {"lying": _plant(store, "lying", bomb, None), "honest": _plant(store, "honest", bomb, inflated)}
    for cid in ids.values():
        assert store.verify(cid).ok  # sizes and checksums hold: only the decompressed bound can tell
    return store, ids, inflated


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("lying", f"artifact {NAME} decompresses to more than its raw_size"),
        ("honest", f"may have at most {MAX_METADATA_BYTES}"),
    ],
)
def test_zstd_bomb_in_search_snapshot_fails_a_dry_run_plan_with_bounded_memory(bombed, case, expected):
    store, ids, _ = bombed
    out = run_bomb_child(store, ids[case], "plan")
    assert out["error"] == "IntegrityError" and expected in out["message"], out
    assert out["max_rss_mb"] < MAX_RSS_MB, out


def test_zstd_bomb_fails_deep_verify_with_bounded_memory(bombed):
    store, ids, _ = bombed
    out = run_bomb_child(store, ids["lying"], "verify-deep")
    assert out["error"] is None, out
    assert [(p["kind"], p["subject"]) for p in out["problems"]] == [(ProblemKind.DATA_ERROR.value, MEMBER)]
    assert "decompresses to more than its raw_size" in out["problems"][0]["detail"]
    assert out["max_rss_mb"] < MAX_RSS_MB, out


def test_zstd_bomb_read_as_a_stream_stops_at_its_raw_size(bombed):
    store, ids, _ = bombed
    read = 0
    with pytest.raises(IntegrityError, match=f"artifact {NAME} decompresses to more than its raw_size"):
        with store.open_artifact(ids["lying"], NAME) as f:
            while piece := f.read(1 << 20):
                read += len(piece)
    assert read < 1 << 20


def test_metadata_artifact_above_the_cap_is_refused_before_reading(bombed):
    store, ids, inflated = bombed
    with pytest.raises(IntegrityError, match=f"is {inflated} bytes decompressed"):
        store.read_artifact(ids["honest"], NAME)


def test_search_restore_reads_its_document_only_when_the_plan_needs_it(store):
    m = make_checkpoint(store)
    path = archive_path(store, m.checkpoint_id)
    offset, _ = member_data_offsets(path)[MEMBER]
    flip_byte(path, offset + 5)
    part = SearchRestore(SearchTarget("http://127.0.0.1:9"), store, m.checkpoint_id, m.artifact(NAME))
    with pytest.raises(IntegrityError, match=NAME):
        part.plan()
