"""Extract a checkpointed tree into a new directory, checking each entry against the listing.

The tar and the listing are read side by side, streaming, both in tree order; every tar entry
must be the next listing entry (path, type, size, link target), and every file's bytes must hash
to the listing's sha256. An entry the archive rules refuse (absolute path, ``..``, a device,
FIFO or hard link, a link out of the tree, a duplicate, an entry below a link or a file) stops the
extraction with an error naming it. Files are created exclusively (``O_EXCL | O_NOFOLLOW``) in
directories this extraction made, and synced; modes and mtimes come from the listing, a
directory's once its contents are in place, the root's from the tree artifact.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Iterator
from typing import Any

from airflow_checkpoint_provider.core.archive import type_name
from airflow_checkpoint_provider.core.crashpoints import crashpoint
from airflow_checkpoint_provider.core.engines.files._tree import (
    DIR,
    FILE,
    SYMLINK,
    Entry,
    TreeOrder,
    entry_problem,
    read_listing,
)
from airflow_checkpoint_provider.core.errors import FormatError, IntegrityError, UnsafeArchiveError
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE, copy_exact

#: crash point after each file extracted (a kill there leaves a partial side-by-side copy)
EXTRACTED_FILE = "files.extract.file"
_KINDS = {tarfile.REGTYPE: FILE, tarfile.AREGTYPE: FILE, tarfile.DIRTYPE: DIR, tarfile.SYMTYPE: SYMLINK}
_HINT = "refusing this tree: it was not written by this provider or was tampered with; verify the checkpoint"


def extract(store: Store, checkpoint_id: str, tree: Artifact, listing: Artifact, dest: str) -> int:
    """Extract ``tree`` into the empty directory ``dest``; returns the number of entries."""
    where = f"{checkpoint_id}:{tree.name}"
    with store.open_artifact(checkpoint_id, listing.name) as lf, store.open_artifact(checkpoint_id, tree.name) as tf:
        listed = read_listing(lf, f"{checkpoint_id}:{listing.name}")
        out = _Writer(dest, where)
        want = next(listed, None)
        if want is None:
            _expect_empty(tf, where)
        else:
            tar = _open(tf, where)
            while (ti := _next(tar, where)) is not None:
                if want is None:
                    raise IntegrityError(f"{where}: entry {ti.name!r} is in the tar but not in the listing", hint=_HINT)
                out.add(ti, tar, want)
                want = next(listed, None)
            if want is not None:
                raise IntegrityError(f"{where}: the listing names {want.path!r}, which the tar lacks", hint=_HINT)
        while tf.read(CHUNK_SIZE):
            pass  # read to the end: the stored bytes' size and sha256 are checked there
        out.finish(tree.meta.get("root") or {})
        return out.count


def _open(stream: Any, where: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="strict")
    except (tarfile.TarError, UnicodeError, ValueError) as exc:
        raise _unreadable(where, exc) from None


def _next(tar: tarfile.TarFile, where: str) -> tarfile.TarInfo | None:
    """The next member, keeping none of the previous ones in memory."""
    try:
        ti = tar.next()
    except (tarfile.TarError, UnicodeError, ValueError) as exc:
        raise _unreadable(where, exc) from None
    tar.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every member it read; a stream needs none
    return ti


def _unreadable(where: str, exc: Exception) -> FormatError:
    if isinstance(exc, UnicodeDecodeError):
        raw = exc.object[max(exc.start - 40, 0) : exc.end + 40]
        return UnsafeArchiveError(
            f"{where}: a member's name or link target is not valid UTF-8 (near {raw!r})", hint=_HINT
        )
    return FormatError(f"{where} has a damaged member header ({exc})", hint=_HINT)


def _expect_empty(stream: Any, where: str) -> None:
    data = b""
    while piece := stream.read(CHUNK_SIZE):
        data = (data + piece)[: 2 * tarfile.BLOCKSIZE + 1]
    if data != b"\0" * (2 * tarfile.BLOCKSIZE):
        raise IntegrityError(f"{where}: the listing is empty but the tar holds entries", hint=_HINT)


class _Writer:
    """Creates the entries under ``dest``, in tree order."""

    def __init__(self, dest: str, where: str) -> None:
        self.dest, self.where = dest, where
        self.order = TreeOrder(where)
        self.open_dirs: dict[tuple[str, ...], Entry] = {}
        self.count = 0

    def add(self, ti: tarfile.TarInfo, tar: tarfile.TarFile, want: Entry) -> None:
        kind = _KINDS.get(ti.type) if ti.sparse is None else None
        if kind is None:
            what = "GNU sparse file" if ti.sparse is not None else type_name(ti.type)
            raise UnsafeArchiveError(
                f"{self.where}: entry {ti.name!r} is a {what}; a tree holds only directories, "
                "regular files and symbolic links inside it",
                hint=_HINT,
            )
        problem = entry_problem(ti.name, kind, ti.linkname if kind == SYMLINK else "")
        if problem:
            raise UnsafeArchiveError(f"{self.where}: entry {ti.name!r} {problem}", hint=_HINT)
        size = ti.size if kind == FILE else 0
        if (ti.name, kind, size, ti.linkname if kind == SYMLINK else "") != (
            want.path,
            want.type,
            want.size,
            want.target,
        ):
            raise IntegrityError(
                f"{self.where}: entry {ti.name!r} ({kind}, {size} bytes) is not what the listing "
                f"says comes next: {want.path!r} ({want.type}, {want.size} bytes)",
                hint=_HINT,
            )
        for key in self.order.enter(want.path, want.type):
            self._close_dir(key)
        full = os.path.join(self.dest, want.path)
        if kind == DIR:
            os.mkdir(full, 0o700)
            self.open_dirs[want.key] = want
        elif kind == SYMLINK:
            os.symlink(want.target, full)
            os.utime(full, ns=(want.mtime_ns, want.mtime_ns), follow_symlinks=False)
        else:
            self._file(full, tar.extractfile(ti), want)
        self.count += 1

    def _file(self, full: str, src: Any, want: Entry) -> None:
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            copied, digest = copy_exact(src, f, want.size)
            f.flush()
            os.fsync(f.fileno())
        if (copied, digest) != (want.size, want.sha256):
            raise IntegrityError(
                f"{self.where}: {want.path!r} holds {copied} bytes hashing to {digest}; the listing "
                f"says {want.size} bytes, {want.sha256}",
                hint=_HINT,
            )
        os.chmod(full, want.mode)
        os.utime(full, ns=(want.mtime_ns, want.mtime_ns))
        crashpoint(EXTRACTED_FILE)

    def _close_dir(self, key: tuple[str, ...]) -> None:
        """Its contents are in place: sync it, then give it its mode and mtime."""
        entry = self.open_dirs.pop(key)
        full = os.path.join(self.dest, entry.path)
        _sync_dir(full)
        os.chmod(full, entry.mode)
        os.utime(full, ns=(entry.mtime_ns, entry.mtime_ns))

    def finish(self, root: dict[str, Any]) -> None:
        for key in sorted(self.open_dirs, key=len, reverse=True):
            self._close_dir(key)
        _sync_dir(self.dest)
        if isinstance(root.get("mode"), int):
            os.chmod(self.dest, root["mode"] & 0o7777)
        if isinstance(root.get("mtime_ns"), int):
            os.utime(self.dest, ns=(root["mtime_ns"], root["mtime_ns"]))


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # some filesystems cannot sync a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def iter_listing(store: Store, checkpoint_id: str, listing: Artifact) -> Iterator[Entry]:
    """The listing's entries, streamed from the archive (for the verification after extraction)."""
    with store.open_artifact(checkpoint_id, listing.name) as f:
        yield from read_listing(f, f"{checkpoint_id}:{listing.name}")
