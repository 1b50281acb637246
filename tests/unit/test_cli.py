"""The break-glass CLI: outputs and exit codes over a real store on disk."""

from __future__ import annotations

import json

import pytest

from airflow_checkpoint_provider.cli import EXIT_OK, EXIT_PROBLEMS, EXIT_STORE, EXIT_USAGE, main
from airflow_checkpoint_provider.core import Store
from tests.unit.core.helpers import archive_path, flip_byte, make_checkpoint, member_data_offsets


@pytest.fixture
def store(tmp_path):
    return Store.open(tmp_path / "store", create=True)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_verify_and_lkg(store, capsys):
    a = make_checkpoint(store, run="a", tags=("pre-migration",))
    b = make_checkpoint(store, run="b")
    assert run(capsys, "--root", store.root, "lkg", "set", a.checkpoint_id)[0] == EXIT_OK
    code, out, _ = run(capsys, "--root", store.root, "list")
    lines = out.splitlines()
    assert code == EXIT_OK and lines[1].startswith(b.checkpoint_id) and lines[2].startswith(a.checkpoint_id)
    assert "[LKG]" in lines[2] and "[LKG]" not in lines[1]
    code, out, _ = run(capsys, "--root", store.root, "list", "--tag", "pre-migration", "--json")
    assert [c["checkpoint_id"] for c in json.loads(out)] == [a.checkpoint_id]
    code, out, _ = run(capsys, "--root", store.root, "verify", "last-known-good")
    assert code == EXIT_OK and out.startswith(f"{a.checkpoint_id}: OK (3 artifacts")
    code, out, _ = run(capsys, "--root", store.root, "show", b.checkpoint_id)
    assert json.loads(out)["checkpoint_id"] == b.checkpoint_id


def test_verify_reports_problems_with_exit_1(store, capsys):
    a = make_checkpoint(store)
    path = archive_path(store, a.checkpoint_id)
    offset, size = member_data_offsets(path)[a.artifacts[1].member]
    flip_byte(path, offset + 1)
    code, out, _ = run(capsys, "--root", store.root, "verify", "--all")
    assert code == EXIT_PROBLEMS
    assert f"checksum_mismatch: {a.artifacts[1].member}" in out and "HINT:" in out
    code, out, _ = run(capsys, "--root", store.root, "verify", a.checkpoint_id, "--json")
    assert json.loads(out)[0]["problems"][0]["kind"] == "checksum_mismatch"
    code, _, err = run(capsys, "--root", store.root, "lkg", "set", a.checkpoint_id)
    assert code == EXIT_PROBLEMS and "failed verification" in err
    assert store.lkg() is None


def test_unknown_id_and_missing_store(store, tmp_path, capsys):
    code, _, err = run(capsys, "--root", store.root, "verify", "ckpt-nope")
    assert code == EXIT_USAGE and "no checkpoint 'ckpt-nope'" in err
    code, _, err = run(capsys, "--root", str(tmp_path / "missing"), "list")
    assert code == EXIT_STORE and "no checkpoint store at" in err and "HINT" in err


def test_audit_lists_restores_newest_first(store, capsys):
    store.write_audit({"status": "failed", "requested_checkpoint": "ckpt-a", "components": ["redis"],
                       "dag_id": "restore_checkpoint", "run_id": "r1", "error": "boom\nmore"})
    store.write_audit({"status": "restored", "checkpoint_id": "ckpt-b", "components": ["postgres", "redis"],
                       "dag_id": "recovery_lkg", "run_id": "r2", "health": {"ok": True}})
    code, out, _ = run(capsys, "--root", store.root, "audit")
    lines = out.splitlines()
    assert code == EXIT_OK
    assert "restored" in lines[0] and "ckpt-b" in lines[0] and "healthy" in lines[0] and "recovery_lkg/r2" in lines[0]
    assert "failed" in lines[1] and "ckpt-a" in lines[1] and lines[2].strip() == "error: boom"
