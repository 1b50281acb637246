"""``--json`` on every command: one JSON document on stdout; errors as JSON with message and hint."""

from __future__ import annotations

import json

import pytest

from airflow_checkpoint_provider.cli import EXIT_OK, EXIT_STORE, EXIT_USAGE
from tests.unit.core.helpers import make_checkpoint
from tests.unit.test_cli import run, store  # noqa: F401 - the fixture is used by name


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["show", "last-known-good"],
        ["verify", "--all"],
        ["lkg"],
        ["lkg", "history"],
        ["audit"],
        ["status"],
        ["expire"],
        ["cleanup", "--dry-run", "--store-only"],
        ["recover-interrupted", "--dry-run"],
        ["delete", "ckpt-nope"],
        ["workflow", "list"],
    ],
)
def test_every_command_prints_one_json_document_with_json(store, capsys, argv):
    a = make_checkpoint(store, run="a")
    assert run(capsys, "--root", store.root, "lkg", "set", a.checkpoint_id)[0] == EXIT_OK
    code, out, _ = run(capsys, "--root", store.root, *argv, "--json")
    doc = json.loads(out)  # exactly one document: json.loads refuses trailing text
    if code != EXIT_OK:
        assert {"error", "exit_code"} <= set(doc) and doc["exit_code"] == code
        assert doc["error"]["message"] and "hint" in doc["error"]


def test_an_error_under_json_is_a_json_document_with_message_and_hint(store, tmp_path, capsys):
    code, out, err = run(capsys, "--root", str(tmp_path / "missing"), "list", "--json")
    doc = json.loads(out)
    assert code == EXIT_STORE == doc["exit_code"]
    assert doc["error"]["type"] == "StoreNotFoundError" and "no checkpoint store at" in doc["error"]["message"]
    assert doc["error"]["hint"] and err == ""
    code, out, _ = run(capsys, "--root", store.root, "show", "ckpt-nope", "--json")
    assert code == EXIT_USAGE and "ckpt-nope" in json.loads(out)["error"]["message"]


def test_a_text_command_under_json_gives_its_lines_in_one_document(store, capsys):
    a = make_checkpoint(store, run="a")
    b = make_checkpoint(store, run="b")
    code, out, _ = run(capsys, "--root", store.root, "delete", a.checkpoint_id, "--no-servers", "--json")
    doc = json.loads(out)
    assert code == EXIT_OK == doc["exit_code"] and doc["output"][0] == f"deleted {a.checkpoint_id}"
    assert [c.checkpoint_id for c in store.list()] == [b.checkpoint_id]


def test_lkg_set_under_json_prints_the_pointer(store, capsys):
    a = make_checkpoint(store, run="a")
    code, out, _ = run(capsys, "--root", store.root, "lkg", "set", a.checkpoint_id, "--json")
    doc = json.loads(out)
    assert code == EXIT_OK and doc["checkpoint_id"] == a.checkpoint_id and doc["previous"] is None
