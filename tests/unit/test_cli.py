"""The break-glass CLI: outputs and exit codes over a real store on disk."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from airflow_checkpoint_provider.cli import EXIT_OK, EXIT_PROBLEMS, EXIT_STORE, EXIT_USAGE, main
from airflow_checkpoint_provider.core import Store
from tests.unit.core.helpers import (
    archive_members,
    archive_path,
    flip_byte,
    forge_fields,
    make_checkpoint,
    manifest_bytes,
    member_data_offsets,
    resealed,
    write_forged,
)


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
    code, out, _ = run(capsys, "--root", store.root, "show", b.checkpoint_id, "--manifest")
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
    # the verifications above recorded it corrupt: it never becomes the LKG
    assert (
        code == EXIT_PROBLEMS
        and f"checkpoint {a.checkpoint_id} cannot become the last-known-good: it is corrupt" in err
    )
    assert store.lkg() is None


def test_unknown_id_and_missing_store(store, tmp_path, capsys):
    code, _, err = run(capsys, "--root", store.root, "verify", "ckpt-nope")
    assert code == EXIT_USAGE and "no checkpoint 'ckpt-nope'" in err
    code, _, err = run(capsys, "--root", str(tmp_path / "missing"), "list")
    assert code == EXIT_STORE and "no checkpoint store at" in err and "HINT" in err


def test_audit_lists_restores_newest_first(store, capsys):
    store.write_audit(
        {
            "status": "failed",
            "requested_checkpoint": "ckpt-a",
            "components": ["redis"],
            "dag_id": "restore_checkpoint",
            "run_id": "r1",
            "error": "boom\nmore",
        }
    )
    store.write_audit(
        {
            "status": "restored",
            "checkpoint_id": "ckpt-b",
            "components": ["postgres", "redis"],
            "dag_id": "recovery_lkg",
            "run_id": "r2",
            "health": {"ok": True},
        }
    )
    code, out, _ = run(capsys, "--root", store.root, "audit")
    lines = out.splitlines()
    assert code == EXIT_OK
    assert "restored" in lines[0] and "ckpt-b" in lines[0] and "healthy" in lines[0] and "recovery_lkg/r2" in lines[0]
    assert "failed" in lines[1] and "ckpt-a" in lines[1] and lines[2].strip() == "error: boom"


def _sidecar(store, cid):
    return os.path.join(store.root, "checkpoints", f"{cid}.manifest.json")


def test_list_escapes_what_it_prints_so_no_line_can_be_forged(store, capsys):
    lkg = make_checkpoint(store, run="lkg")
    tagged = make_checkpoint(store, run="tagged")
    store.mark_lkg(lkg.checkpoint_id)
    # a tag holding a newline and a fake row, consistently re-checksummed in both copies
    forge_fields(store, tagged, lambda b: b.update(tags=["ok\nckpt-forged-by-tag  2026-01-01 [LKG]"]))
    # a file name holding a newline and a fake row
    checkpoints = os.path.join(store.root, "checkpoints")
    renamed = "ckpt-x\nckpt-forged-by-name [LKG]"
    shutil.copy(archive_path(store, lkg.checkpoint_id), os.path.join(checkpoints, f"{renamed}.tar"))
    shutil.copy(_sidecar(store, lkg.checkpoint_id), os.path.join(checkpoints, f"{renamed}.manifest.json"))
    code, out, err = run(capsys, "--root", store.root, "list")
    lines = out.splitlines()
    assert not [line for line in lines if line.startswith("ckpt-forged")], out
    assert code == EXIT_PROBLEMS
    assert [line.split()[0] for line in lines if line.endswith("[LKG]")] == [lkg.checkpoint_id]
    assert f"{tagged.checkpoint_id} " in out and "DAMAGED: " in out and "field 'tags'[0]" in out
    assert "ckpt-x\\nckpt-forged-by-name [LKG]" in out and "invalid checkpoint id" in out
    assert not [line for line in err.splitlines() if line.startswith("ckpt-forged")], err


def test_list_and_verify_all_report_a_poisoned_sidecar_and_go_on(store, capsys):
    good = make_checkpoint(store, run="good")
    bad = make_checkpoint(store, run="bad")
    text = open(_sidecar(store, bad.checkpoint_id)).read()
    with open(_sidecar(store, bad.checkpoint_id), "w") as f:
        f.write(text.replace("{", '{"poison": ' + "9" * 5000 + ",", 1))
    code, out, err = run(capsys, "--root", store.root, "list")
    assert code == EXIT_PROBLEMS and out.splitlines()[1].startswith(good.checkpoint_id)
    assert f"{bad.checkpoint_id} " in out and "integer of 5000 digits" in out and bad.checkpoint_id in err
    code, out, _ = run(capsys, "--root", store.root, "verify", "--all")
    assert code == EXIT_PROBLEMS
    assert f"{good.checkpoint_id}: OK" in out and f"{bad.checkpoint_id}: 1 problem(s)" in out
    assert f"bad_manifest: checkpoints/{bad.checkpoint_id}.manifest.json" in out


def test_verify_last_known_good_of_a_replaced_checkpoint_exits_1_naming_the_previous_entry(store, capsys):
    earlier = make_checkpoint(store, run="earlier")
    lkg = make_checkpoint(store, run="lkg")
    other = make_checkpoint(store, run="other")
    store.mark_lkg(earlier.checkpoint_id)
    store.mark_lkg(lkg.checkpoint_id)
    body = other.to_dict()
    body["checkpoint_id"] = lkg.checkpoint_id
    write_forged(
        store,
        lkg.checkpoint_id,
        manifest_bytes(resealed(body)),
        archive_members(archive_path(store, other.checkpoint_id))[1:],
    )
    assert run(capsys, "--root", store.root, "verify", lkg.checkpoint_id)[0] == EXIT_OK
    code, out, err = run(capsys, "--root", store.root, "verify", "last-known-good")
    assert code == EXIT_PROBLEMS and "lkg_mismatch: refs/lkg.json" in out
    assert f"HINT: do not restore it; the LKG history's previous verified entry is {earlier.checkpoint_id}" in out
    # the replaced checkpoint is recorded corrupt, and the LKG falls back to the previous verified one
    assert f"it fell back to {earlier.checkpoint_id}" in err
    assert store.lkg().checkpoint_id == earlier.checkpoint_id and "fallback: " in store.lkg().reason
    assert store.state_of(store.get(lkg.checkpoint_id)).state == "corrupt"


def test_expire_is_a_dry_run_that_names_the_rule_keeping_each_checkpoint(store, capsys):
    ms = [make_checkpoint(store, run=f"e{i}") for i in range(4)]
    store.mark_lkg(ms[0].checkpoint_id)
    policy = '{"keep_last": 2}'
    code, out, _ = run(capsys, "--root", store.root, "expire", "--policy", policy, "--no-servers")
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith(("keep", "delete"))}
    assert code == EXIT_OK and "keep_last 2 (#1)" in lines[ms[3].checkpoint_id]
    assert "protected: last-known-good" in lines[ms[0].checkpoint_id]
    assert (
        lines[ms[1].checkpoint_id].startswith("delete")
        and "no rule of the default rules keeps it" in lines[ms[1].checkpoint_id]
    )
    assert "1 checkpoint(s) would be deleted (dry run: add --execute)" in out
    assert len(store.list()) == 4
    code, out, err = run(capsys, "--root", store.root, "expire", "--policy", policy, "--execute", "--no-servers")
    assert code == EXIT_PROBLEMS and "pending (a later run retries): " in err  # the search part waits
    assert {i.checkpoint_id for i in store.list()} == {ms[0].checkpoint_id, ms[2].checkpoint_id, ms[3].checkpoint_id}


def test_list_shows_the_state_and_show_the_history(store, capsys):
    a = make_checkpoint(store)
    assert run(capsys, "--root", store.root, "verify", a.checkpoint_id, "--level", "basic")[0] == EXIT_OK
    code, out, _ = run(capsys, "--root", store.root, "list")
    assert out.splitlines()[0].split()[4] == "STATE" and "verified:basic" in out.splitlines()[1]
    code, out, _ = run(capsys, "--root", store.root, "show", a.checkpoint_id)
    assert code == EXIT_OK and "state:      verified:basic" in out and "verify basic: ok in" in out
    code, out, _ = run(capsys, "--root", store.root, "show", a.checkpoint_id, "--json")
    assert json.loads(out)["history"][0]["level"] == "basic"


def test_an_unknown_level_is_refused_by_the_parser(store, capsys):
    with pytest.raises(SystemExit) as err:
        main(["--root", store.root, "verify", "--all", "--level", "paranoid"])
    assert err.value.code == EXIT_USAGE and "invalid choice: 'paranoid'" in capsys.readouterr().err
