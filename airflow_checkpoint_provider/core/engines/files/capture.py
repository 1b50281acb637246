"""Capture a directory tree: a streamed tar and its listing (a sha256 per file), in constant memory.

Two artifacts per tree, written in one walk (:func:`~._tree.walk`, tree order):

* ``files/<name>-<hash>.tar`` (kind ``files/tar``): a POSIX pax tar of the entries, zstd
  compressed, readable by any ``tar``; its fingerprints are the file count, the total bytes and
  the Merkle root of the tree;
* ``files/<name>-<hash>.list`` (kind ``files/list``): one JSON line per entry in the same order:
  path, type, mode, mtime in nanoseconds, and a file's size and sha256 or a link's target.

**Consistency.** ``detect`` (the default without a hook) copies each file into a spool (memory up
to :data:`SPOOL_MEMORY`, then a temporary file in ``spool_dir``), comparing its device, inode,
size, mtime, ctime and mode before and after the read, through the open descriptor and through the
path; a file that changed is read again, at most ``retries`` times, and then the capture fails
naming it. ``quiesce`` calls a hook (``"package.module:function"``, given by the DAG author or the
``[checkpoint] files_quiesce_hook`` option, never by a run's conf) with ``action="quiesce"``
before the walk and ``action="resume"`` after it (also when the capture fails), and streams the
files straight into the tar; a file that changes anyway fails the capture, since the hook did not
stop its writer. ``auto`` is ``quiesce`` when a hook is given, else ``detect``.

Entries that cannot be checkpointed (devices, FIFOs, sockets, hard links, links that leave the
tree, names that are not UTF-8, ...) are all listed in one error, each with the reason.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any, BinaryIO

from airflow_checkpoint_provider.core.engines.files._target import FilesTarget
from airflow_checkpoint_provider.core.engines.files._tree import (
    DIR,
    FILE,
    SYMLINK,
    Entry,
    Tally,
    identity,
    walk,
)
from airflow_checkpoint_provider.core.errors import CaptureError, CheckpointError, NotFoundError
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.staging import ArtifactSink, Staging
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE, DEFAULT_ZSTD_LEVEL, copy_exact

log = logging.getLogger(__name__)

STORE = "files"
KIND_TREE = "files/tar"
KIND_LIST = "files/list"
#: the version of the tree and listing format (docs/FORMAT.md); restores refuse others
TREE_FORMAT = 1
CONSISTENCY = ("auto", "detect", "quiesce")
#: bytes of a file held in memory while it is checked for changes; larger files spill to disk
SPOOL_MEMORY = 8 * 1024 * 1024
#: the most problems one failed capture lists
MAX_PROBLEMS = 100
_TAR_TYPES = {DIR: tarfile.DIRTYPE, FILE: tarfile.REGTYPE, SYMLINK: tarfile.SYMTYPE}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def artifact_names(path: str) -> tuple[str, str]:
    """``(tar, listing)`` artifact names of the tree at ``path``: its base name and a hash of the path."""
    base = _UNSAFE.sub("_", os.path.basename(path)).lstrip("._-")[:60] or "tree"
    stem = f"files/{base}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    return f"{stem}.tar", f"{stem}.list"


def capture(
    target: FilesTarget,
    staging: Staging,
    *,
    consistency: str = "auto",
    quiesce_hook: str | Callable[..., Any] | None = None,
    retries: int = 3,
    retry_wait: float = 0.1,
    spool_dir: str | None = None,
    compression_level: int = DEFAULT_ZSTD_LEVEL,
    **options: Any,
) -> list[Artifact]:
    """Stream the tree at ``target.path`` into ``staging``; returns the tar and listing artifacts."""
    root = target.path
    check_directory(root, action="capturing")
    mode = _mode(consistency, quiesce_hook)
    if not isinstance(retries, int) or retries < 0:
        raise CheckpointError(f"retries={retries!r} is not a count", hint="use 0 or more (default 3)")
    tree_name, list_name = artifact_names(root)
    sink_args: dict[str, Any] = {
        "store": STORE,
        "engine": STORE,
        "engine_version": str(TREE_FORMAT),
        "level": compression_level,
    }
    problems: list[str] = []
    copier = _Copier(root, spool=mode == "detect", retries=retries, wait=retry_wait, spool_dir=spool_dir)
    fence = _quiesced(quiesce_hook, root) if mode == "quiesce" else nullcontext()
    with (
        fence,
        staging.artifact(list_name, kind=KIND_LIST, **sink_args) as listing,
        staging.artifact(tree_name, kind=KIND_TREE, **sink_args) as tree,
    ):
        tar, tally = TarStream(tree), Tally()
        for entry, full, _st in walk(root, problems, limit=MAX_PROBLEMS):
            if problems:
                continue  # copy nothing more: walk on to report every problem at once
            if entry.type == FILE:
                copied = copier.copy(tar, entry, full)
                if copied is None:
                    continue  # removed while the tree was read: not part of this checkpoint
                entry = copied
            else:
                tar.add(entry)
            listing.write(entry.to_line())
            tally.add(entry)
        if problems:
            raise _refused(root, problems)
        tar.close()
        top = os.lstat(root)
        meta = {
            "path": root,
            "format": TREE_FORMAT,
            "consistency": mode,
            "retried": copier.retried,
            "root": {"mode": stat.S_IMODE(top.st_mode), "mtime_ns": top.st_mtime_ns},
        }
        tree.fingerprints, tree.meta = tally.fingerprints(), {**meta, "list": list_name}
        listing.fingerprints = {"entries": tally.files + tally.dirs + tally.symlinks}
        listing.meta = {"path": root, "format": TREE_FORMAT, "tree": tree_name}
    assert tree.artifact is not None and listing.artifact is not None
    fp = tree.fingerprints  # the sink's own copy: the artifact's may be sealed (encryption at rest)
    log.info(
        "Captured %s: %s files, %s directories, %s links, %s bytes (%s; %s files read again)",
        root,
        fp["files"],
        fp["dirs"],
        fp["symlinks"],
        fp["bytes"],
        mode,
        copier.retried,
    )
    return [tree.artifact, listing.artifact]


def check_directory(path: str, *, action: str) -> os.stat_result:
    """``path`` is a real directory (not a link to one); else an error that says what it is."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise NotFoundError(
            f"directory {path} does not exist ({action})",
            hint="create it, or fix the connection's path; every worker that runs the task must see it",
        ) from None
    except OSError as exc:
        raise CaptureError(
            f"directory {path} cannot be read ({action}): {exc.strerror or exc}",
            hint="give the worker's user read access to it",
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise CaptureError(
            f"{path} is a symbolic link (to {os.readlink(path)!r}), not a directory",
            hint="name the real directory in the connection: a restore renames the directory, "
            "which would replace the link, not what it points to",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise CaptureError(f"{path} is not a directory", hint="name a directory in the connection's path")
    return st


def _mode(consistency: str, hook: Any) -> str:
    if consistency not in CONSISTENCY:
        raise CheckpointError(
            f"unknown consistency {consistency!r} for a files capture", hint=f"use one of {', '.join(CONSISTENCY)}"
        )
    if consistency == "quiesce" and not hook:
        raise CheckpointError(
            "consistency 'quiesce' needs a quiesce hook, and none is configured",
            hint="pass quiesce_hook='package.module:function' to the operator or set "
            "[checkpoint] files_quiesce_hook; or use consistency 'detect'",
        )
    if consistency == "auto":
        return "quiesce" if hook else "detect"
    return consistency


def _refused(root: str, problems: list[str]) -> CaptureError:
    shown = problems[:20]
    more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    return CaptureError(
        f"{root}: {len(problems)} entr{'y' if len(problems) == 1 else 'ies'} cannot be "
        f"checkpointed: " + "; ".join(shown) + more,
        hint="remove or move them out of the tree (a checkpoint holds only directories, regular "
        "files and relative symbolic links inside the tree); nothing was captured",
    )


def load_hook(hook: str | Callable[..., Any]) -> Callable[..., Any]:
    """The quiesce hook: a callable, or the ``"package.module:function"`` that names one."""
    if callable(hook):
        return hook
    module, sep, attr = str(hook).partition(":")
    if not sep or not module or not attr:
        raise CheckpointError(
            f"quiesce hook {hook!r} is not 'package.module:function'",
            hint="name an importable function, e.g. 'myapp.maintenance:uploads_quiesce'",
        )
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(
            f"quiesce hook {hook!r} cannot be imported: {exc}",
            hint="install the module on every worker, or fix the hook's path",
        ) from None
    if not callable(fn):
        raise CheckpointError(f"quiesce hook {hook!r} is not callable", hint="name a function")
    return fn  # type: ignore[no-any-return]


@contextmanager
def _quiesced(hook: Any, path: str) -> Iterator[None]:
    """``hook(action="quiesce", path=...)`` now, ``hook(action="resume", path=...)`` afterwards, always."""
    fn = load_hook(hook)
    try:
        fn(action="quiesce", path=path)
        log.info("Quiesced the writers of %s", path)
        yield
    finally:
        try:
            fn(action="resume", path=path)
        except Exception as exc:
            raise CaptureError(
                f"the quiesce hook failed to resume the writers of {path}: {exc}",
                hint="the application may still be quiesced: resume it by hand; then retry",
            ) from exc
        log.info("Resumed the writers of %s", path)


class TarStream:
    """Writes a pax tar of tree entries into a sink, streaming each file's bytes."""

    def __init__(self, sink: ArtifactSink | BinaryIO) -> None:
        self._sink = sink

    def add(self, entry: Entry, src: BinaryIO | None = None) -> str:
        """Write one entry (and ``entry.size`` bytes of ``src`` for a file); returns their sha256."""
        ti = tarfile.TarInfo(entry.path)
        ti.type = _TAR_TYPES[entry.type]
        ti.mode, ti.linkname, ti.uname, ti.gname = entry.mode, entry.target, "", ""
        ti.size = entry.size if entry.type == FILE else 0
        seconds, nanos = divmod(entry.mtime_ns, 10**9)
        ti.mtime = seconds
        if nanos and seconds >= 0:
            ti.pax_headers = {"mtime": f"{seconds}.{nanos:09d}"}
        self._sink.write(ti.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict"))
        if entry.type != FILE:
            return ""
        assert src is not None
        copied, digest = copy_exact(src, self._sink, entry.size)
        if copied != entry.size:
            raise CaptureError(
                f"{entry.path!r} ended after {copied} of its {entry.size} bytes while it was read",
                hint="its writer truncated it during the capture; quiesce the writers and retry",
            )
        self._sink.write(b"\0" * (-entry.size % tarfile.BLOCKSIZE))
        return digest

    def close(self) -> None:
        self._sink.write(b"\0" * (2 * tarfile.BLOCKSIZE))


class _Copier:
    """Reads files into the tar, detecting changes (see the module docstring)."""

    def __init__(self, root: str, *, spool: bool, retries: int, wait: float, spool_dir: str | None) -> None:
        self.root, self.spool, self.retries, self.wait, self.spool_dir = root, spool, retries, wait, spool_dir
        self.retried = 0

    def copy(self, tar: TarStream, entry: Entry, full: str) -> Entry | None:
        """The file's entry with its sha256, once it is in the tar; None if it was removed meanwhile."""
        for attempt in range(self.retries + 1 if self.spool else 1):
            if attempt:
                self.retried += 1
                time.sleep(self.wait * attempt)
            try:
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise CaptureError(
                    f"{self.root}: {entry.path!r} cannot be read: {exc.strerror or exc}",
                    hint="give the worker's user read access to every file of the tree",
                ) from None
            try:
                done = self._once(tar, entry, full, fd)
            finally:
                os.close(fd)
            if done is not None:
                return done
        how = (
            f"it changed while it was read, {self.retries + 1} times"
            if self.spool
            else "it changed while the writers were quiesced: the hook did not stop its writer"
        )
        raise CaptureError(
            f"{self.root}: {entry.path!r}: {how} (size, mtime, ctime, inode or mode differ before and after the read)",
            hint="quiesce its writers (consistency 'quiesce' with a quiesce hook), or raise retries"
            if self.spool
            else "make the hook stop every writer of the tree, or use consistency 'detect'",
        )

    def _once(self, tar: TarStream, entry: Entry, full: str, fd: int) -> Entry | None:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode) or before.st_nlink > 1:
            return None  # replaced meanwhile: read it again (or, quiesced, fail)
        src = os.fdopen(fd, "rb", buffering=0, closefd=False)
        final = replace(entry, size=before.st_size, mode=stat.S_IMODE(before.st_mode), mtime_ns=before.st_mtime_ns)
        if not self.spool:
            digest = tar.add(final, src)
            return replace(final, sha256=digest) if self._same(before, fd, full) and not src.read(1) else None
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, dir=self.spool_dir) as spool:
            sha, size = hashlib.sha256(), 0
            # at most one byte past the size it had: a file that keeps growing is not read forever
            while size <= before.st_size and (piece := src.read(min(CHUNK_SIZE, before.st_size + 1 - size))):
                sha.update(piece)
                spool.write(piece)
                size += len(piece)
            if size != before.st_size or not self._same(before, fd, full):
                return None
            spool.seek(0)
            tar.add(final, spool)  # type: ignore[arg-type]  # a SpooledTemporaryFile reads like a binary file
            return replace(final, sha256=sha.hexdigest())

    @staticmethod
    def _same(before: os.stat_result, fd: int, full: str) -> bool:
        try:
            again = os.lstat(full)
        except FileNotFoundError:
            return False
        return identity(before) == identity(os.fstat(fd)) == identity(again)


__all__ = [
    "CONSISTENCY",
    "KIND_LIST",
    "KIND_TREE",
    "STORE",
    "TREE_FORMAT",
    "TarStream",
    "artifact_names",
    "capture",
    "check_directory",
    "load_hook",
]
