"""Each kind of corruption is detected, named, and all problems are collected."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from airflow_checkpoint_provider.core.archive import ArchiveWriter
from airflow_checkpoint_provider.core.manifest import Manifest, canonical_json, sha256_hex
from airflow_checkpoint_provider.core.verify import ProblemKind, verify_archive
from tests.unit.core.helpers import ARTIFACTS, archive_path, flip_byte, make_checkpoint, member_data_offsets


def test_clean_checkpoint_verifies_every_member(store):
    m = make_checkpoint(store)
    result = store.verify(m.checkpoint_id, deep=True)
    assert result.ok, result.problems
    assert sorted(result.verified) == sorted(a.member for a in m.artifacts)
    assert result.bytes_read == sum(a.size for a in m.artifacts)


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_byte_in_artifact_is_a_checksum_mismatch(store, name, where):
    m = make_checkpoint(store)
    member = m.artifact(name).member
    path = archive_path(store, m.checkpoint_id)
    offset, size = member_data_offsets(path)[member]
    flip_byte(path, offset + {"first": 0, "middle": size // 2, "last": size - 1}[where])
    result = store.verify(m.checkpoint_id)
    assert [(p.kind, p.subject) for p in result.problems] == [(ProblemKind.CHECKSUM_MISMATCH, member)]
    assert not result.ok
    assert set(result.verified) == {a.member for a in m.artifacts} - {member}


def test_flipped_byte_in_embedded_manifest(store):
    m = make_checkpoint(store)
    path = archive_path(store, m.checkpoint_id)
    offset, size = member_data_offsets(path)["manifest.json"]
    # flip inside a sha256 value so the JSON still parses and only the checksum can tell
    raw = open(path, "rb").read()[offset : offset + size]
    flip_byte(path, offset + raw.index(m.artifacts[0].sha256.encode()) + 5)
    result = store.verify(m.checkpoint_id)
    assert ProblemKind.BAD_MANIFEST in result.kinds()
    assert any("checksum mismatch" in p.detail for p in result.problems)
    # the store's copy of the manifest still lets every artifact be checked
    assert len(result.verified) == len(m.artifacts)


def test_flipped_byte_in_store_manifest_copy(store):
    m = make_checkpoint(store)
    sidecar = os.path.join(store.root, "checkpoints", f"{m.checkpoint_id}.manifest.json")
    text = open(sidecar, "rb").read()
    flip_byte(sidecar, text.index(b'"tags"') + 12)
    result = store.verify(m.checkpoint_id)
    assert [(p.kind, p.subject) for p in result.problems] == [
        (ProblemKind.BAD_MANIFEST, f"checkpoints/{m.checkpoint_id}.manifest.json")
    ]


def test_truncated_archive(store):
    m = make_checkpoint(store)
    path = archive_path(store, m.checkpoint_id)
    offsets = member_data_offsets(path)
    last = m.artifacts[-1].member
    with open(path, "r+b") as f:
        f.truncate(offsets[last][0] + 10)
    result = store.verify(m.checkpoint_id)
    assert [(p.kind, p.subject) for p in result.problems] == [(ProblemKind.TRUNCATED, last)]
    assert "truncated inside member data of member" in result.problems[0].detail


def test_archive_cut_between_members(store):
    m = make_checkpoint(store)
    path = archive_path(store, m.checkpoint_id)
    first, last = m.artifacts[0].member, m.artifacts[-1].member
    offset, size = member_data_offsets(path)[first]
    with open(path, "r+b") as f:
        f.truncate(offset + size + (-size % 512))  # right after the first artifact
    kinds = {(p.kind, p.subject) for p in store.verify(m.checkpoint_id).problems}
    assert (ProblemKind.TRUNCATED, f"checkpoints/{m.checkpoint_id}.tar") in kinds
    assert (ProblemKind.MISSING_MEMBER, last) in kinds


def _rewrite(path: str, manifest_bytes: bytes, members: list[tuple[str, bytes]]) -> None:
    with open(path, "wb") as f:
        w = ArchiveWriter(f)
        w.add_bytes("manifest.json", manifest_bytes)
        for name, data in members:
            w.add_bytes(name, data)
        w.close()


def _members(path: str) -> list[tuple[str, bytes]]:
    import tarfile

    with tarfile.open(path) as tf:
        return [(n, tf.extractfile(n).read()) for n in tf.getnames()]


def test_missing_member(store):
    m = make_checkpoint(store)
    path = archive_path(store, m.checkpoint_id)
    members = _members(path)
    dropped = m.artifacts[1].member
    _rewrite(path, members[0][1], [x for x in members[1:] if x[0] != dropped])
    result = store.verify(m.checkpoint_id)
    assert [(p.kind, p.subject) for p in result.problems] == [(ProblemKind.MISSING_MEMBER, dropped)]


def test_extra_member(store):
    m = make_checkpoint(store)
    path = archive_path(store, m.checkpoint_id)
    members = _members(path)
    _rewrite(path, members[0][1], members[1:] + [("artifacts/extra/payload.bin", b"surprise")])
    result = store.verify(m.checkpoint_id)
    assert [(p.kind, p.subject) for p in result.problems] == [
        (ProblemKind.UNEXPECTED_MEMBER, "artifacts/extra/payload.bin")
    ]


def test_size_mismatch(store):
    m = make_checkpoint(store)
    path = archive_path(store, m.checkpoint_id)
    members = _members(path)
    target = m.artifacts[0].member
    _rewrite(path, members[0][1], [(n, d + b"pad" if n == target else d) for n, d in members[1:]])
    result = store.verify(m.checkpoint_id)
    assert [(p.kind, p.subject) for p in result.problems] == [(ProblemKind.SIZE_MISMATCH, target)]


def test_unknown_format_version_in_archive(tmp_path, store):
    m = make_checkpoint(store)
    body = m.to_dict()
    body.pop("manifest_sha256")
    body["format_version"] = 2
    body["manifest_sha256"] = sha256_hex(canonical_json(body))
    path = archive_path(store, m.checkpoint_id)
    copy = tmp_path / "copy.tar"
    members = _members(path)
    _rewrite(str(copy), json.dumps(body).encode(), members[1:])
    with open(copy, "rb") as f:
        result = verify_archive(f, checkpoint_id=m.checkpoint_id, source="copy.tar")
    assert ProblemKind.UNKNOWN_FORMAT in result.kinds()
    assert any("format_version 2" in p.detail for p in result.problems)


def test_several_problems_are_all_reported(store):
    m = make_checkpoint(store)
    path = archive_path(store, m.checkpoint_id)
    members = _members(path)
    a0, a1, a2 = (a.member for a in m.artifacts)
    tampered = [(a0, b"corrupted"), (a2, dict(members)[a2]), ("artifacts/evil", b"x")]  # a1 missing
    _rewrite(path, members[0][1], tampered)
    kinds = {(p.kind, p.subject) for p in store.verify(m.checkpoint_id).problems}
    assert kinds == {
        (ProblemKind.SIZE_MISMATCH, a0),
        (ProblemKind.MISSING_MEMBER, a1),
        (ProblemKind.UNEXPECTED_MEMBER, "artifacts/evil"),
    }


def test_deep_verify_catches_a_lying_raw_size(store, tmp_path):
    m = make_checkpoint(store)
    body = m.to_dict()
    body["artifacts"][0]["raw_size"] += 1
    body.pop("manifest_sha256")
    body["manifest_sha256"] = sha256_hex(canonical_json(body))
    liar = Manifest.from_dict(body)
    with open(archive_path(store, m.checkpoint_id), "rb") as f:
        result = verify_archive(f, checkpoint_id=m.checkpoint_id, expected=liar, deep=True)
    assert (ProblemKind.DATA_ERROR, m.artifacts[0].member) in {(p.kind, p.subject) for p in result.problems}


def test_standalone_archive_copy_verifies_with_its_embedded_manifest(store, tmp_path):
    m = make_checkpoint(store)
    copy = tmp_path / "elsewhere.tar"
    shutil.copy(archive_path(store, m.checkpoint_id), copy)
    with open(copy, "rb") as f:
        result = verify_archive(f, checkpoint_id=m.checkpoint_id)
    assert result.ok and result.manifest == m
