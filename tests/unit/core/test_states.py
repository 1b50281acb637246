"""Checkpoint states and verification levels over a real store on disk (sample artifacts, no servers)."""

from __future__ import annotations

import os

import pytest

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.errors import LkgBindingError, LkgRequirementError
from airflow_checkpoint_provider.core.levels import choose, sweep, verify_at
from airflow_checkpoint_provider.core.states import StateRecord, derive
from tests.unit.core.helpers import archive_path, flip_byte, make_checkpoint, member_data_offsets


@pytest.fixture
def store(tmp_path):
    return Store.open(tmp_path / "store", create=True)


def _flip_artifact(store, manifest, index=1):
    path = archive_path(store, manifest.checkpoint_id)
    offset, size = member_data_offsets(path)[manifest.artifacts[index].member]
    flip_byte(path, offset + size // 2)


def test_a_new_checkpoint_is_sealed_until_a_verification_is_recorded(store):
    m = make_checkpoint(store)
    assert store.state_of(store.get(m.checkpoint_id)).label == "sealed"
    verify_at(store, m.checkpoint_id, "basic")
    assert store.state_of(store.get(m.checkpoint_id)).label == "verified:basic"
    verify_at(store, m.checkpoint_id, "standard")
    assert store.state_of(store.get(m.checkpoint_id)).label == "verified:standard"
    verify_at(store, m.checkpoint_id, "basic")  # a lower level later does not lower the state
    assert store.state_of(store.get(m.checkpoint_id)).label == "verified:standard"


def test_a_flipped_byte_in_an_artifact_passes_basic_and_is_caught_by_standard(store):
    m = make_checkpoint(store)
    _flip_artifact(store, m)
    basic, rec = verify_at(store, m.checkpoint_id, "basic")
    assert basic.ok and rec.outcome == "ok"  # sizes do not change when a byte flips
    standard, rec = verify_at(store, m.checkpoint_id, "standard")
    assert not standard.ok and rec.outcome == "corrupt"
    assert [p.kind.value for p in standard.problems] == ["checksum_mismatch"]
    state = store.state_of(store.get(m.checkpoint_id))
    assert state.state == "corrupt" and m.artifacts[1].member in state.reason


def test_basic_catches_a_truncated_archive_without_reading_the_artifacts(store):
    m = make_checkpoint(store)
    path = archive_path(store, m.checkpoint_id)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 5000)
    result, rec = verify_at(store, m.checkpoint_id, "basic")
    assert rec.outcome == "corrupt" and result.bytes_read == 0
    assert {"truncated"} <= {p.kind.value for p in result.problems}


def test_corrupt_is_sticky_a_later_pass_does_not_clear_it(store):
    m = make_checkpoint(store)
    _flip_artifact(store, m)
    verify_at(store, m.checkpoint_id, "standard")
    _flip_artifact(store, m)  # flipped back: the bytes are right again
    result, _ = verify_at(store, m.checkpoint_id, "standard")
    assert result.ok
    assert store.state_of(store.get(m.checkpoint_id)).state == "corrupt"


def test_a_record_with_a_changed_byte_fails_its_checksum_and_is_skipped(store):
    m = make_checkpoint(store)
    verify_at(store, m.checkpoint_id, "standard")
    folder = os.path.join(store.root, "states", m.checkpoint_id)
    [name] = os.listdir(folder)
    path = os.path.join(folder, name)
    text = open(path).read().replace('"outcome": "ok"', '"outcome": "corrupt"')
    open(path, "w").write(text)
    assert store.state_records(m.checkpoint_id) == []
    with pytest.raises(Exception, match="fails its checksum"):
        StateRecord.from_bytes(text.encode(), name)


def test_records_of_a_replaced_manifest_do_not_count_for_the_new_one(store):
    m = make_checkpoint(store)
    info = store.get(m.checkpoint_id)
    store.record_state(info, kind="verify", outcome="ok", level="deep")
    records = store.state_records(m.checkpoint_id)
    assert derive(records, info.manifest.manifest_sha256).label == "verified:deep"
    assert derive(records, "0" * 64).label == "sealed"


def test_a_failed_drill_makes_it_drill_failed_and_a_later_passed_drill_drilled(store):
    m = make_checkpoint(store)
    info = store.get(m.checkpoint_id)
    verify_at(store, m.checkpoint_id, "standard")
    store.record_state(
        info,
        kind="drill",
        outcome="failed",
        problems=[{"kind": "drill", "subject": "postgres", "detail": "table t missing"}],
    )
    assert store.state_of(info).state == "drill_failed" and "table t missing" in store.state_of(info).reason
    store.record_state(info, kind="drill", outcome="ok")
    assert store.state_of(info).label == "drilled"


def test_lkg_requires_drilled_refuses_a_checkpoint_only_verified(store):
    m = make_checkpoint(store)
    with pytest.raises(LkgRequirementError, match="lkg_requires is drilled"):
        store.mark_lkg(m.checkpoint_id, requires="drilled")
    assert store.lkg() is None
    store.record_state(store.get(m.checkpoint_id), kind="drill", outcome="ok")
    assert store.mark_lkg(m.checkpoint_id, requires="drilled").checkpoint_id == m.checkpoint_id


def test_an_unknown_lkg_requirement_is_refused_naming_the_value(store):
    m = make_checkpoint(store)
    with pytest.raises(Exception, match="lkg_requires is 'tested'"):
        store.mark_lkg(m.checkpoint_id, requires="tested")


def test_mark_lkg_records_its_own_verification(store):
    m = make_checkpoint(store)
    store.mark_lkg(m.checkpoint_id)
    [record] = store.state_records(m.checkpoint_id)
    assert record.kind == "verify" and record.level == "standard" and record.outcome == "ok"


def test_a_corrupt_checkpoint_never_becomes_lkg_even_after_its_bytes_are_right_again(store):
    m = make_checkpoint(store)
    _flip_artifact(store, m)
    verify_at(store, m.checkpoint_id, "standard")
    _flip_artifact(store, m)
    with pytest.raises(LkgRequirementError, match="it is corrupt"):
        store.mark_lkg(m.checkpoint_id)


def test_a_corrupt_lkg_is_never_resolved_for_a_restore(store):
    good = make_checkpoint(store, run="good")
    lkg = make_checkpoint(store, run="lkg")
    store.mark_lkg(good.checkpoint_id)
    store.mark_lkg(lkg.checkpoint_id)
    _flip_artifact(store, lkg)
    verify_at(store, lkg.checkpoint_id, "standard")
    with pytest.raises(LkgBindingError, match=f"checkpoint {lkg.checkpoint_id} is corrupt") as err:
        store.resolve("last-known-good")
    assert good.checkpoint_id in err.value.hint


def test_sweep_marks_the_damaged_lkg_corrupt_and_falls_back_to_the_newest_verified(store):
    oldest = make_checkpoint(store, run="oldest")
    middle = make_checkpoint(store, run="middle")
    lkg = make_checkpoint(store, run="lkg")
    for m in (oldest, middle, lkg):
        store.mark_lkg(m.checkpoint_id)
    _flip_artifact(store, lkg, index=0)
    report = sweep(store, "standard", sample=10)
    assert report.corrupt == [lkg.checkpoint_id] and report.failed
    assert report.lkg_fallback["from"] == lkg.checkpoint_id and report.lkg_fallback["to"] == middle.checkpoint_id
    pointer = store.lkg()
    assert pointer.checkpoint_id == middle.checkpoint_id and pointer.reason.startswith("fallback: ")
    assert lkg.checkpoint_id in pointer.reason and pointer.previous == lkg.checkpoint_id
    assert store.lkg_history()[0].checkpoint_id == middle.checkpoint_id


def test_fallback_skips_a_candidate_that_no_longer_verifies(store):
    older = make_checkpoint(store, run="older")
    newer = make_checkpoint(store, run="newer")
    lkg = make_checkpoint(store, run="lkg")
    for m in (older, newer, lkg):
        store.mark_lkg(m.checkpoint_id)
    _flip_artifact(store, lkg)
    _flip_artifact(store, newer)  # damaged too, but its records still say verified
    verify_at(store, lkg.checkpoint_id, "standard")
    pointer = store.fallback_lkg("test")
    assert pointer.checkpoint_id == older.checkpoint_id
    assert store.state_of(store.get(newer.checkpoint_id)).state == "corrupt"


def test_with_no_candidate_left_the_pointer_is_removed(store):
    only = make_checkpoint(store)
    store.mark_lkg(only.checkpoint_id)
    _flip_artifact(store, only)
    report = sweep(store, "standard")
    assert report.lkg_fallback == {"from": only.checkpoint_id, "to": None, "reason": report.lkg_fallback["reason"]}
    assert store.lkg() is None


def test_the_sweep_takes_every_unverified_one_then_the_longest_unverified_sample(store):
    a = make_checkpoint(store, run="a")
    b = make_checkpoint(store, run="b")
    c = make_checkpoint(store, run="c")
    verify_at(store, a.checkpoint_id, "standard")
    verify_at(store, b.checkpoint_id, "standard")
    verify_at(store, a.checkpoint_id, "standard")  # a verified after b: b is due first
    picked = choose(store, store.list(), "standard", 1)
    assert [(i.checkpoint_id, why.split(" (")[0]) for i, why in picked] == [
        (c.checkpoint_id, "not yet verified at standard"),
        (b.checkpoint_id, "rolling sample"),
    ]
    picked = choose(store, store.list(), "deep", 0)
    assert {i.checkpoint_id for i, _ in picked} == {a.checkpoint_id, b.checkpoint_id, c.checkpoint_id}


def test_a_sweep_of_one_checkpoint_verifies_only_it_and_records_it_as_requested(store):
    a = make_checkpoint(store, run="a")
    b = make_checkpoint(store, run="b")
    _flip_artifact(store, b)  # damaged, but not asked for: left alone
    report = sweep(store, "standard", sample=10, only=a.checkpoint_id)
    assert [(r["checkpoint_id"], r["why"], r["outcome"]) for r in report.verified] == [
        (a.checkpoint_id, "requested", "ok")
    ]
    assert not report.failed and store.state_of(store.get(b.checkpoint_id)).state == "sealed"
    store.mark_lkg(a.checkpoint_id)
    report = sweep(store, "basic", only="last-known-good")
    assert [r["checkpoint_id"] for r in report.verified] == [a.checkpoint_id]
    report = sweep(store, "standard", only=b.checkpoint_id)
    assert report.corrupt == [b.checkpoint_id] and store.lkg().checkpoint_id == a.checkpoint_id


def test_deep_with_the_sample_artifacts_decompresses_and_runs_the_engine_checks(store):
    m = make_checkpoint(store)
    result, record = verify_at(store, m.checkpoint_id, "deep")
    # the sample artifacts are no real dump/RDB: the engines' parsers refuse them by name
    subjects = {p.subject for p in result.problems}
    assert record.outcome == "corrupt" and "artifacts/redis/dump.rdb.zst" in subjects
    assert "artifacts/postgres/app.dump.zst" in subjects
