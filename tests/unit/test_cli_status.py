"""``airflow-checkpoint status`` over a real store on disk."""

from __future__ import annotations

import json

from airflow_checkpoint_provider.cli import EXIT_OK, EXIT_PROBLEMS
from tests.unit.core.helpers import make_checkpoint
from tests.unit.test_cli import run, store  # noqa: F401 - the fixture is used by name


def test_status_without_lkg_says_so_and_exits_1(store, capsys):
    make_checkpoint(store, run="a")
    code, out, _ = run(capsys, "--root", store.root, "status")
    assert code == EXIT_PROBLEMS and "LKG:          none" in out and "last verify:  never" in out


def test_status_reports_lkg_last_verify_drill_storage_and_failures(store, capsys):
    a = make_checkpoint(store, run="a")
    b = make_checkpoint(store, run="b")
    assert run(capsys, "--root", store.root, "verify", a.checkpoint_id)[0] == EXIT_OK
    assert run(capsys, "--root", store.root, "lkg", "set", a.checkpoint_id)[0] == EXIT_OK
    store.record_state(store.get(b.checkpoint_id), kind="drill", outcome="failed", problems=[{"detail": "pg boom"}])
    store.write_audit(
        {"status": "refused", "requested_checkpoint": "ckpt-x", "error": "plan has 1 problem\nPROBLEM: y"}
    )
    code, out, _ = run(capsys, "--root", store.root, "status", "--json")
    doc = json.loads(out)
    assert code == EXIT_OK
    assert doc["lkg"]["checkpoint_id"] == a.checkpoint_id and doc["lkg"]["age_seconds"] >= 0
    assert doc["last_verify"]["checkpoint_id"] == a.checkpoint_id and doc["last_verify"]["outcome"] == "ok"
    assert doc["last_drill"]["outcome"] == "failed" and doc["last_drill"]["problem"] == "pg boom"
    sizes = store.get(a.checkpoint_id).size + store.get(b.checkpoint_id).size
    assert doc["storage"]["archive_bytes"] == sizes and doc["checkpoints"] == 2
    failures = {(f["what"], f["outcome"], f["checkpoint_id"]) for f in doc["last_failures"]}
    assert failures == {("drill", "failed", b.checkpoint_id), ("restore", "refused", "ckpt-x")}
    code, out, _ = run(capsys, "--root", store.root, "status")
    assert f"LKG:          {a.checkpoint_id}, taken" in out and "drill failed" in out and "pg boom" in out
