from __future__ import annotations

import json

import pytest

from airflow_checkpoint_provider.core.errors import ManifestError, UnsupportedFormatError
from airflow_checkpoint_provider.core.manifest import (
    Artifact,
    Manifest,
    canonical_json,
    new_checkpoint_id,
    sha256_hex,
    validate_checkpoint_id,
)

SHA = "ab" * 32


def _manifest(**kw) -> Manifest:
    arts = [
        Artifact(
            name="postgres/app.dump",
            store="postgres",
            kind="pg_dump/custom",
            size=10,
            sha256=SHA,
            raw_size=40,
            engine="postgresql",
            engine_version="15.18",
            capture_start="2026-11-22T10:00:00.000000Z",
            capture_end="2026-11-22T10:00:05.000000Z",
            fingerprints={"rows": {"public.t": 3}},
        ),
        Artifact(
            name="redis/dump.rdb",
            store="redis",
            kind="redis/rdb",
            size=20,
            sha256=SHA,
            raw_size=25,
            engine="redis",
            engine_version="7.0.15",
            capture_start="2026-11-22T10:00:01.500000Z",
            capture_end="2026-11-22T10:00:02.000000Z",
        ),
    ]
    defaults = {
        "checkpoint_id": "ckpt-20261122T100000Z-abcdef",
        "created_at": "2026-11-22T10:00:06.000000Z",
        "artifacts": arts,
        "tags": ["scheduled"],
        "provenance": {"dag_id": "d", "run_id": "r", "task_id": "t", "provider_version": "0.1.0"},
    }
    defaults.update(kw)
    return Manifest(**defaults)


def test_round_trip_preserves_every_field():
    m = _manifest(pinned=True, config_hash="sha256:" + "0" * 64)
    back = Manifest.from_bytes(m.to_bytes())
    assert back == m
    assert back.to_dict() == m.to_dict()


def test_store_intervals_and_skew_are_derived_from_artifacts():
    d = _manifest().to_dict()
    assert d["stores"]["postgres"]["capture_start"] == "2026-11-22T10:00:00.000000Z"
    assert d["stores"]["redis"]["capture_end"] == "2026-11-22T10:00:02.000000Z"
    assert d["consistency"] == {
        "window_start": "2026-11-22T10:00:00.000000Z",
        "window_end": "2026-11-22T10:00:05.000000Z",
        "skew_ms": 1500,
    }


def test_self_checksum_covers_canonical_body():
    d = _manifest().to_dict()
    claimed = d.pop("manifest_sha256")
    assert claimed == sha256_hex(canonical_json(d))


def test_edited_manifest_fails_its_checksum():
    d = _manifest().to_dict()
    d["artifacts"][0]["size"] = 11
    with pytest.raises(ManifestError, match="checksum mismatch"):
        Manifest.from_bytes(json.dumps(d).encode())


@pytest.mark.parametrize("version", [0, 2, 99, "1", None, True])
def test_unknown_format_version_is_refused_before_anything_else(version):
    d = _manifest().to_dict()
    d["format_version"] = version
    d["manifest_sha256"] = "garbage"  # the version check must come first
    with pytest.raises(UnsupportedFormatError, match=r"format_version .* understands version\(s\) \[1\]"):
        Manifest.from_bytes(json.dumps(d).encode())


def test_not_a_manifest():
    with pytest.raises(UnsupportedFormatError, match="expected 'airflow-checkpoint'"):
        Manifest.from_bytes(b'{"hello": 1}')
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.from_bytes(b"\x00\x01garbage")


def test_floats_are_refused_at_write_time():
    m = _manifest(provenance={"took": 1.5})
    with pytest.raises(ManifestError, match=r"\$\.provenance\.took is a float"):
        m.validate()


@pytest.mark.parametrize("bad", ["../etc", "/abs", "", "a b", "x" * 200, "ckpt/../x"])
def test_invalid_checkpoint_ids(bad):
    with pytest.raises(ManifestError, match="invalid checkpoint id"):
        validate_checkpoint_id(bad)


def test_new_ids_are_valid_sortable_and_unique():
    ids = {new_checkpoint_id() for _ in range(100)}
    assert len(ids) == 100
    for i in ids:
        assert validate_checkpoint_id(i) == i and i.startswith("ckpt-")


@pytest.mark.parametrize("name", ["../x", "a/../../b", "/abs", "a//b", "a/b/c/d/e/f", ""])
def test_invalid_artifact_names(name):
    art = Artifact(name=name, store="s", kind="k", size=1, sha256=SHA)
    with pytest.raises(ManifestError, match="invalid artifact name"):
        art.validate()


def test_duplicate_artifact_refused():
    m = _manifest()
    m.artifacts.append(m.artifacts[0])
    with pytest.raises(ManifestError, match="listed twice"):
        m.validate()


def test_the_example_in_format_md_is_a_valid_manifest():
    import pathlib
    import re

    doc = (pathlib.Path(__file__).resolve().parents[3] / "docs" / "FORMAT.md").read_text()
    section = doc.split("## Manifest example", 1)[1]
    example = re.search(r"```json\n(.*?)```", section, re.S).group(1)
    m = Manifest.from_bytes(example.encode())
    assert m.to_bytes().decode() == example  # the doc shows exactly what the writer writes
