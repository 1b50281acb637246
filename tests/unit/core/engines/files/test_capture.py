"""Files capture on the real local filesystem: refused entries, change detection, the quiesce hook.

A file is changed in the middle of its read by a seam in the copy loop (the spool's ``write`` or
``copy_exact``), which makes a real write to the real file at a known moment: the change
detection under test then sees a real change of size, mtime and ctime.
"""

from __future__ import annotations

import importlib
import os
import socket
import stat
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from airflow_checkpoint_provider.core import staging_key
from airflow_checkpoint_provider.core.engines.files import FilesTarget, capture
from airflow_checkpoint_provider.core.errors import CaptureError, CheckpointError, NotFoundError
from tests.unit.core.engines.files.helpers import checkpoint

#: the capture module (the package's ``capture`` is the function of the same name)
C = importlib.import_module("airflow_checkpoint_provider.core.engines.files.capture")
CALLS: list[tuple[str, str]] = []


def recording_hook(*, action: str, path: str) -> None:
    """A quiesce hook importable by its path (``tests...test_capture:recording_hook``)."""
    CALLS.append((action, path))


HOOK = f"{__name__}:recording_hook"


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    (path / "ok.txt").write_bytes(b"fine")
    return path


def _capture(store, root: Path, **options):
    staging = store.staging(staging_key("cap", str(root), str(len(os.listdir(store.fs.local_path("staging"))))))
    return staging, capture(FilesTarget(str(root)), staging, **options)


def test_every_entry_that_cannot_be_checkpointed_is_named_with_its_reason(store, root, tmp_path):
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    (tmp_path / "outside.txt").write_bytes(b"x")
    os.link(root / "ok.txt", root / "hardlink")
    os.symlink("/etc/passwd", root / "absolute")
    os.symlink("../outside.txt", root / "escapes")
    (root / "sub").mkdir()
    os.symlink("../../outside.txt", root / "sub" / "escapes-too")
    os.close(os.open(os.fsencode(root) + b"/bad-\xff-name", os.O_CREAT | os.O_WRONLY, 0o600))
    (root / "back\\slash").write_bytes(b"x")
    if os.geteuid() == 0:
        os.mknod(root / "device", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    staging = store.staging(staging_key("hostile"))
    with pytest.raises(CaptureError) as err:
        capture(FilesTarget(str(root)), staging)
    text = err.value.message
    for name, why in [
        ("fifo", "is a FIFO"),
        ("sock", "is a socket"),
        ("hardlink", "is a hard link (2 names)"),
        ("ok.txt", "is a hard link (2 names)"),
        ("absolute", "absolute path '/etc/passwd'"),
        ("escapes", "points outside the tree"),
        ("sub/escapes-too", "points outside the tree"),
        ("back\\\\slash", "backslash"),
        ("bad-\\udcff-name", "not valid UTF-8"),
    ] + ([("device", "is a character device")] if os.geteuid() == 0 else []):
        assert f"'{name}' {why}" in text or (f"'{name}'" in text and why in text), (name, why, text)
    assert "nothing was captured" in err.value.hint
    assert staging.artifacts() == []  # no artifact was committed
    sock.close()


@pytest.mark.parametrize("make", ["missing", "file", "symlink"])
def test_a_root_that_is_not_a_real_directory_is_refused(store, tmp_path, make):
    root = tmp_path / "root"
    if make == "file":
        root.write_bytes(b"x")
    elif make == "symlink":
        (tmp_path / "real").mkdir()
        os.symlink(tmp_path / "real", root)
    error = NotFoundError if make == "missing" else CaptureError
    with pytest.raises(
        error, match={"missing": "does not exist", "file": "is not a directory", "symlink": "is a symbolic link"}[make]
    ):
        _capture(store, root)


def _change_during_spooling(monkeypatch, path: Path, times: int | None) -> list[int]:
    """Append to ``path`` while its first bytes are being spooled, in the first ``times`` reads of
    it (None: in every read); returns the reads seen."""
    reads: list[int] = []
    real = tempfile.SpooledTemporaryFile.write

    def write(self, data):
        if not getattr(self, "_seen", False):  # the first chunk of one read of the file
            self._seen = True
            reads.append(len(data))
            if times is None or len(reads) <= times:
                with open(path, "ab") as f:
                    f.write(b"+")
        return real(self, data)

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "write", write)
    return reads


def test_a_file_that_changes_mid_read_is_read_again(store, root, monkeypatch):
    _change_during_spooling(monkeypatch, root / "ok.txt", times=2)
    manifest = checkpoint(store, FilesTarget(str(root)), retry_wait=0)
    tar = next(a for a in manifest.artifacts if a.kind == "files/tar")
    assert tar.meta["retried"] == 2 and tar.meta["consistency"] == "detect"
    with store.open_artifact(
        manifest.checkpoint_id, next(a.name for a in manifest.artifacts if a.kind == "files/list")
    ) as f:
        listing = f.read()
    assert b'"path":"ok.txt"' in listing and b'"size":6' in listing  # "fine" plus the two appended bytes


def test_a_file_that_keeps_changing_fails_the_capture_naming_it(store, root, monkeypatch):
    _change_during_spooling(monkeypatch, root / "ok.txt", times=None)
    with pytest.raises(CaptureError, match=r"'ok.txt': it changed while it was read, 3 times") as err:
        _capture(store, root, retries=2, retry_wait=0)
    assert "quiesce" in err.value.hint


def test_the_quiesce_hook_brackets_the_capture_and_files_are_streamed(store, root):
    CALLS.clear()
    staging, arts = _capture(store, root, consistency="auto", quiesce_hook=HOOK)
    assert CALLS == [("quiesce", str(root)), ("resume", str(root))]
    assert arts[0].meta["consistency"] == "quiesce"


def test_the_writers_are_resumed_when_the_capture_fails(store, root):
    CALLS.clear()
    os.mkfifo(root / "fifo")
    with pytest.raises(CaptureError, match="is a FIFO"):
        _capture(store, root, consistency="quiesce", quiesce_hook=HOOK)
    assert CALLS == [("quiesce", str(root)), ("resume", str(root))]


def test_a_file_that_changes_while_quiesced_fails_the_capture(store, root, monkeypatch):
    real = C.copy_exact

    def copy_then_write(src, dst, size, **kw):
        out = real(src, dst, size, **kw)
        with open(root / "ok.txt", "ab") as f:
            f.write(b"late writer")
        return out

    monkeypatch.setattr(C, "copy_exact", copy_then_write)
    with pytest.raises(CaptureError, match="changed while the writers were quiesced: the hook did not stop"):
        _capture(store, root, consistency="quiesce", quiesce_hook=recording_hook)


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"consistency": "quiesce"}, "needs a quiesce hook"),
        ({"consistency": "sometimes"}, "unknown consistency 'sometimes'"),
        ({"consistency": "quiesce", "quiesce_hook": "no_colon"}, "is not 'package.module:function'"),
        ({"consistency": "quiesce", "quiesce_hook": "no.such.module:fn"}, "cannot be imported"),
        ({"retries": -1}, "is not a count"),
    ],
)
def test_bad_consistency_options_are_refused_before_anything_is_read(store, root, options, why):
    with pytest.raises(CheckpointError, match=why):
        _capture(store, root, **options)


def test_a_failing_resume_fails_the_capture_and_says_the_application_may_be_quiesced(store, root):
    def hook(*, action, path):
        if action == "resume":
            raise RuntimeError("api down")

    with pytest.raises(CaptureError, match="failed to resume the writers") as err:
        _capture(store, root, consistency="quiesce", quiesce_hook=hook)
    assert "resume it by hand" in err.value.hint


def test_a_large_file_is_captured_in_bounded_memory(store, tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    with open(root / "huge.bin", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1024 * 1024))
    tracemalloc.start()
    try:
        _capture(store, root)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * 1024 * 1024, f"a 64 MiB file took {peak} bytes of memory to capture"
