"""The typed-id confirmation of ``airflow-checkpoint restore``, on a real pseudo-terminal."""

from __future__ import annotations

import io
import os
import pty
import sys

import pytest

from airflow_checkpoint_provider.cli_restore import NotConfirmedError, confirm

CID = "ckpt-20260101T000000Z-abcdef"


@pytest.fixture
def terminal(monkeypatch):
    """Standard input is the slave side of a pty; returns a function typing a line on it."""
    master, slave = pty.openpty()
    stdin = os.fdopen(slave, "r")
    monkeypatch.setattr(sys, "stdin", stdin)
    yield lambda text: os.write(master, text.encode() + b"\n")
    stdin.close()
    os.close(master)


def test_typing_the_exact_id_confirms_with_stdout_left_clean(terminal, capsys):
    terminal(CID)
    confirm(CID, "restore plan for " + CID)
    out, err = capsys.readouterr()
    assert out == "" and "restore plan for " + CID in err and f"Type the checkpoint id ({CID})" in err


def test_a_mistyped_id_cancels_the_restore(terminal):
    terminal(CID[:-1])
    with pytest.raises(NotConfirmedError, match="is not 'ckpt-20260101T000000Z-abcdef': restore cancelled"):
        confirm(CID, "plan")


def test_last_known_good_typed_instead_of_the_id_cancels(terminal):
    terminal("last-known-good")
    with pytest.raises(NotConfirmedError, match="restore cancelled"):
        confirm(CID, "plan")


def test_no_terminal_and_no_yes_is_refused_before_asking(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(CID + "\n"))
    with pytest.raises(NotConfirmedError, match="standard input is not a terminal") as info:
        confirm(CID, "plan")
    assert "--yes" in info.value.hint
