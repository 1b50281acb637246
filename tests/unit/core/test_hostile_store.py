"""Fixture stores corrupted or forged on purpose, as somebody with write access to the store could.

Each forgery re-computes every checksum it touches, so that only the defence under test can
catch it; each test first shows that the forgery is otherwise consistent where that matters.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from airflow_checkpoint_provider.core import recovery
from airflow_checkpoint_provider.core.errors import CheckpointError, LkgBindingError, VerificationFailedError
from airflow_checkpoint_provider.core.verify import ProblemKind
from tests.unit.core.helpers import (
    archive_members,
    archive_path,
    forge_fields,
    make_checkpoint,
    manifest_bytes,
    resealed,
    write_forged,
)


def sidecar_path(store, cid: str) -> str:
    return os.path.join(store.root, "checkpoints", f"{cid}.manifest.json")


def replace_with_other_checkpoint(store, victim, donor) -> None:
    """Put the donor's data under the victim's id: manifest re-identified and re-checksummed, both copies."""
    body = donor.to_dict()
    body["checkpoint_id"] = victim.checkpoint_id
    forged = manifest_bytes(resealed(body))
    write_forged(store, victim.checkpoint_id, forged, archive_members(archive_path(store, donor.checkpoint_id))[1:])


# ---- the LKG pointer's binding -----------------------------------------------------------------------


def test_lkg_replaced_by_another_checkpoint_reidentified_and_rechecksummed_is_refused(store):
    earlier = make_checkpoint(store, run="earlier")
    lkg = make_checkpoint(store, run="lkg")
    other = make_checkpoint(store, run="other", tags=("other",))
    store.mark_lkg(earlier.checkpoint_id)
    store.mark_lkg(lkg.checkpoint_id)
    replace_with_other_checkpoint(store, lkg, other)
    # the forgery is consistent: by id, the archive verifies and describes the other data
    assert store.verify(lkg.checkpoint_id).ok
    assert store.get(lkg.checkpoint_id).tags == ("other",)
    # as last-known-good, the pointer's manifest_sha256 no longer matches
    result = store.verify("last-known-good")
    assert not result.ok
    assert [(p.kind, p.subject) for p in result.problems] == [(ProblemKind.LKG_MISMATCH, "refs/lkg.json")]
    assert lkg.to_dict()["manifest_sha256"] in result.problems[0].detail
    assert f"previous verified entry is {earlier.checkpoint_id}" in result.problems[0].hint
    with pytest.raises(LkgBindingError, match="was replaced after it was verified") as err:
        store.resolve("last-known-good")
    assert f"previous verified entry is {earlier.checkpoint_id}" in err.value.hint
    with pytest.raises(LkgBindingError):
        store.get("last-known-good")


def test_restore_of_a_replaced_lkg_is_refused_before_planning(store):
    """The builder stands in for the engines (our own orchestration only): it must never be reached."""
    earlier = make_checkpoint(store, run="earlier")
    lkg = make_checkpoint(store, run="lkg")
    other = make_checkpoint(store, run="other")
    store.mark_lkg(earlier.checkpoint_id)
    store.mark_lkg(lkg.checkpoint_id)
    replace_with_other_checkpoint(store, lkg, other)
    built = []
    with pytest.raises(LkgBindingError) as err:
        recovery.restore(
            store, recovery.RestoreRequest("last-known-good", dry_run=True), lambda *a: built.append(a) or []
        )
    assert built == []
    assert earlier.checkpoint_id in err.value.hint


def test_replaced_lkg_whose_earlier_lkg_was_replaced_too_offers_no_entry(store):
    earlier = make_checkpoint(store, run="earlier")
    lkg = make_checkpoint(store, run="lkg")
    other = make_checkpoint(store, run="other")
    store.mark_lkg(earlier.checkpoint_id)
    store.mark_lkg(lkg.checkpoint_id)
    replace_with_other_checkpoint(store, lkg, other)
    replace_with_other_checkpoint(store, earlier, other)
    with pytest.raises(LkgBindingError) as err:
        store.resolve("last-known-good")
    assert "no earlier entry of the LKG history still matches" in err.value.hint


# ---- poisoned store copies of the manifest -----------------------------------------------------------


POISONS = {
    "integer_of_5000_digits": ("9" * 5000, "integer of 5000 digits"),
    "arrays_nested_100000_deep": ("[" * 100_000 + "]" * 100_000, "nested"),
}


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_poisoned_sidecar_is_reported_and_the_others_still_list_and_verify(store, poison):
    good_old = make_checkpoint(store, run="old")
    bad = make_checkpoint(store, run="bad")
    good_new = make_checkpoint(store, run="new")
    value, expected = POISONS[poison]
    text = open(sidecar_path(store, bad.checkpoint_id)).read()
    with open(sidecar_path(store, bad.checkpoint_id), "w") as f:
        f.write(text.replace("{", '{"poison": ' + value + ",", 1))
    assert [i.checkpoint_id for i in store.list()] == [good_new.checkpoint_id, good_old.checkpoint_id]
    infos, damaged = store.scan()
    assert [i.checkpoint_id for i in infos] == [good_new.checkpoint_id, good_old.checkpoint_id]
    assert [(d.checkpoint_id, expected in d.problem) for d in damaged] == [(bad.checkpoint_id, True)]
    results = {r.checkpoint_id: r for r in store.verify_all()}
    assert results[good_new.checkpoint_id].ok and results[good_old.checkpoint_id].ok
    assert [(p.kind, p.subject) for p in results[bad.checkpoint_id].problems] == [
        (ProblemKind.BAD_MANIFEST, f"checkpoints/{bad.checkpoint_id}.manifest.json")
    ]
    assert expected in results[bad.checkpoint_id].problems[0].detail


# ---- the store copy must be the embedded manifest, byte for byte ---------------------------------------


@pytest.mark.parametrize("where", ["top_level", "artifact_entry"])
def test_sidecar_with_an_extra_field_fails_verify_and_lkg_set(store, where):
    m = make_checkpoint(store)
    body = m.to_dict()
    (body if where == "top_level" else body["artifacts"][0])["approved_by"] = "mallory"
    with open(sidecar_path(store, m.checkpoint_id), "wb") as f:
        f.write(manifest_bytes(resealed(body)))
    assert store.get(m.checkpoint_id).checkpoint_id == m.checkpoint_id  # the copy alone is well-formed
    result = store.verify(m.checkpoint_id)
    assert [(p.kind, p.subject) for p in result.problems] == [(ProblemKind.MANIFEST_MISMATCH, "manifest.json")]
    assert "approved_by" in result.problems[0].detail
    with pytest.raises(VerificationFailedError):
        store.mark_lkg(m.checkpoint_id)
    assert store.lkg() is None


def test_unknown_field_in_both_manifest_copies_is_kept_and_bound_verbatim(store):
    """A newer writer's optional field: ignored, but covered by the checksum and the LKG binding."""
    m = make_checkpoint(store)
    body = forge_fields(store, m, lambda b: b.update(retention_class="gold"))
    assert store.verify(m.checkpoint_id).ok
    assert store.mark_lkg(m.checkpoint_id).manifest_sha256 == body["manifest_sha256"]
    assert store.get(m.checkpoint_id).manifest.extra == {"retention_class": "gold"}
    assert store.verify("last-known-good").ok


# ---- every field's type and range ----------------------------------------------------------------------


def _artifact(index, key, value):
    return lambda b: b["artifacts"][index].__setitem__(key, value)


BAD_FIELDS = {
    "raw_size_is_a_string": (_artifact(0, "raw_size", "lots"), "field 'raw_size' is the string 'lots'"),
    "raw_size_is_10_to_the_400": (_artifact(0, "raw_size", 10**400), "integer of 401 digits"),
    "raw_size_is_negative": (_artifact(0, "raw_size", -5), "field 'raw_size' is the integer -5"),
    "raw_size_is_null_for_zstd": (_artifact(0, "raw_size", None), "field 'raw_size' is null"),
    "size_is_a_boolean": (_artifact(1, "size", True), "field 'size' is true"),
    "pinned_is_the_string_false": (lambda b: b.update(pinned="false"), "field 'pinned' is the string 'false'"),
    "tag_holds_a_newline": (lambda b: b.update(tags=["ok\nckpt-fake [LKG]"]), "field 'tags'[0] is the string"),
    "tags_is_a_string": (lambda b: b.update(tags="scheduled"), "field 'tags' is the string 'scheduled'"),
    "created_at_is_sloppy": (lambda b: b.update(created_at="2026-1-2T3:4:5.6Z"), "field 'created_at'"),
    "capture_start_is_an_integer": (_artifact(2, "capture_start", 1700000000), "field 'capture_start'"),
    "provenance_is_an_array": (lambda b: b.update(provenance=["x"]), "field 'provenance' is an array"),
    "derived_stores_section_lies": (
        lambda b: b["stores"]["redis"].update(engine="memcached"),
        "field stores.redis.engine is the string 'memcached'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_manifest_field_of_wrong_type_or_range_is_refused_naming_it(store, case):
    edit, expected = BAD_FIELDS[case]
    good = make_checkpoint(store, run="good")
    bad = make_checkpoint(store, run="bad")
    forge_fields(store, bad, edit)
    assert [i.checkpoint_id for i in store.list()] == [good.checkpoint_id]
    result = store.verify(bad.checkpoint_id)
    assert not result.ok
    refused = {p.subject: p.detail for p in result.problems if p.kind == ProblemKind.BAD_MANIFEST}
    assert sorted(refused) == [f"checkpoints/{bad.checkpoint_id}.manifest.json", "manifest.json"]
    assert all(expected in detail for detail in refused.values()), refused
    infos, damaged = store.scan()
    assert [i.checkpoint_id for i in infos] == [good.checkpoint_id]
    assert len(damaged) == 1 and expected in damaged[0].problem, damaged
    with pytest.raises(CheckpointError, match="field|digits"):
        store.mark_lkg(bad.checkpoint_id)
    assert store.lkg() is None


# ---- the id must be the one the file names say ---------------------------------------------------------


def test_verify_refuses_a_checkpoint_copied_under_another_id(store):
    m = make_checkpoint(store)
    other = "ckpt-20200101T000000Z-000000"
    root = os.path.join(store.root, "checkpoints")
    shutil.copy(archive_path(store, m.checkpoint_id), os.path.join(root, f"{other}.tar"))
    shutil.copy(sidecar_path(store, m.checkpoint_id), sidecar_path(store, other))
    result = store.verify(other)
    assert not result.ok
    assert {(p.kind, p.subject) for p in result.problems} == {
        (ProblemKind.ID_MISMATCH, f"checkpoints/{other}.manifest.json"),
        (ProblemKind.ID_MISMATCH, "manifest.json"),
    }
    assert all(m.checkpoint_id in p.detail for p in result.problems)
    assert store.verify(m.checkpoint_id).ok
    with pytest.raises(CheckpointError, match="describes checkpoint"):
        store.mark_lkg(other)


def test_pointer_whose_fields_have_wrong_types_is_refused(store):
    m = make_checkpoint(store)
    store.mark_lkg(m.checkpoint_id)
    for rel in ["refs/lkg.json", *[f"refs/lkg-history/{e}" for e in os.listdir(f"{store.root}/refs/lkg-history")]]:
        path = os.path.join(store.root, rel)
        body = json.load(open(path))
        body.pop("pointer_sha256")
        body["set_at"] = 1700000000
        from airflow_checkpoint_provider.core.manifest import canonical_json, sha256_hex

        body["pointer_sha256"] = sha256_hex(canonical_json(body))
        with open(path, "w") as f:
            json.dump(body, f)
    with pytest.raises(CheckpointError, match="field 'set_at' is the integer 1700000000"):
        store.lkg()
