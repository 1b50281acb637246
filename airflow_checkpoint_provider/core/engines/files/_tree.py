"""A directory tree as the files engine sees it: entries, their order, the listing, the Merkle root.

A tree holds three kinds of entry: directories, regular files and symbolic links that stay inside
the tree. Everything else is refused, naming the entry and why, with the archive reader's own
path rules (:func:`~airflow_checkpoint_provider.core.archive.path_problem`): absolute paths,
``..``, backslashes and NUL bytes; and besides those: devices, FIFOs, sockets, hard links,
absolute symbolic links and links that lead out of the tree, names that are not UTF-8.

**Tree order** is depth first, a directory before its contents, the entries of each directory
in code point order of their names (the byte order of their UTF-8). It equals the order of the
paths' component tuples, so two neighbours suffice to check it: an entry must sort after the
one before it (which also excludes duplicates), and its parent must be the directory it follows.
The tar, the listing, the Merkle root and every walk of a live tree use this order, so each can
be checked against another in one pass, in constant memory.

**Merkle root** (``merkle_root``): sha256 over one line per entry, in tree order,
``<path> NUL <kind> NUL <digest> LF`` (UTF-8), where kind and digest are ``f`` and the hex sha256
of a file's content, ``l`` and the hex sha256 of a link's target, ``d`` and nothing for a
directory. A hash list: a Merkle tree of depth one (docs/FORMAT.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.archive import path_problem
from airflow_checkpoint_provider.core.engines.files._names import is_own_copy
from airflow_checkpoint_provider.core.errors import FormatError
from airflow_checkpoint_provider.core.manifest import SHA256_RE

DIR, FILE, SYMLINK = "dir", "file", "symlink"
KINDS = {DIR: "d", FILE: "f", SYMLINK: "l"}
#: the longest line of a listing (a path and a link target of 4096 bytes each, escaped, fit)
MAX_LINE_BYTES = 64 * 1024
_FIELDS = {"path", "type", "mode", "mtime_ns", "size", "sha256", "target"}


@dataclass(frozen=True)
class Entry:
    """One entry of a tree, as its listing line records it."""

    path: str  #: relative to the tree's root, '/'-separated
    type: str  #: ``dir``, ``file`` or ``symlink``
    mode: int  #: permission bits (``st_mode & 0o7777``)
    mtime_ns: int
    size: int = 0  #: files only
    sha256: str = ""  #: files only: of the content
    target: str = ""  #: symbolic links only

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))

    def digest(self) -> str:
        if self.type == FILE:
            return self.sha256
        if self.type == SYMLINK:
            return hashlib.sha256(self.target.encode()).hexdigest()
        return ""

    def to_line(self) -> bytes:
        d = {k: v for k, v in asdict(self).items() if v != "" and not (k == "size" and self.type != FILE)}
        return json.dumps(d, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes, where: str) -> Entry:
        """Parse and check one listing line; anything else than :meth:`to_line` writes is refused."""
        try:
            d = json.loads(line)
            if not isinstance(d, dict) or set(d) - _FIELDS or not {"path", "type", "mode", "mtime_ns"} <= set(d):
                raise ValueError("not an entry object")
            entry = cls(**d)
            if not all(type(v) is str for v in (entry.path, entry.type, entry.sha256, entry.target)):
                raise ValueError("path, type, sha256 and target must be strings")
            if (
                not all(type(v) is int for v in (entry.mode, entry.mtime_ns, entry.size))
                or not 0 <= entry.mode <= 0o7777
                or entry.size < 0
            ):
                raise ValueError("mode, mtime_ns and size must be integers in range")
            if entry.type == FILE and not SHA256_RE.fullmatch(str(entry.sha256)):
                raise ValueError("a file needs its sha256")
            if entry.to_line() != line:
                raise ValueError("not in the canonical form")
        except (ValueError, TypeError) as exc:
            raise FormatError(
                f"{where}: listing line {line[:200]!r} is malformed ({exc})",
                hint="the checkpoint was not written by this provider or was damaged; verify it",
            ) from None
        problem = entry_problem(entry.path, entry.type, entry.target)
        if problem:
            raise FormatError(
                f"{where}: listing entry {entry.path!r} {problem}",
                hint="refusing the tree; it was not written by this provider or was tampered with",
            )
        return entry


def entry_problem(path: str, kind: str, target: str = "") -> str | None:
    """Why an entry is unsafe in a tree, or None: the archive's path rules, then the tree's own."""
    problem = path_problem(path)
    if problem:
        return problem
    if any(part in ("", ".") for part in path.split("/")):
        return "has an empty or '.' path component"
    try:
        path.encode("utf-8")
        target.encode("utf-8")
    except UnicodeEncodeError:
        return "has a name (or link target) that is not valid UTF-8"
    if kind not in KINDS:
        return f"is a {kind}; a tree holds only directories, regular files and symbolic links inside it"
    if kind == SYMLINK:
        if not target or "\0" in target:
            return "is a symbolic link with an empty target or a NUL byte in it"
        if target.startswith("/"):
            return f"is a symbolic link to the absolute path {target!r}; only relative links inside the tree are kept"
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        if resolved == ".." or resolved.startswith("../"):
            return f"is a symbolic link to {target!r}, which points outside the tree"
    return None


@dataclass
class Tally:
    """Counts, bytes and the Merkle root of a tree, fed one entry at a time in tree order."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    _sha: Any = field(default_factory=hashlib.sha256, repr=False)

    def add(self, entry: Entry) -> None:
        self.files += entry.type == FILE
        self.dirs += entry.type == DIR
        self.symlinks += entry.type == SYMLINK
        self.bytes += entry.size
        self._sha.update(f"{entry.path}\0{KINDS[entry.type]}\0{entry.digest()}\n".encode())

    def fingerprints(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "dirs": self.dirs,
            "symlinks": self.symlinks,
            "bytes": self.bytes,
            "merkle_root": self._sha.hexdigest(),
        }


class TreeOrder:
    """Checks that entries come in tree order with their parents first (see the module docstring)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.previous: tuple[str, ...] = ()
        self.stack: list[tuple[str, ...]] = []  #: the directories the current entry is inside

    def enter(self, path: str, kind: str) -> list[tuple[str, ...]]:
        """Admit the next entry; returns the directories it leaves behind, innermost first."""
        key = tuple(path.split("/"))
        if key <= self.previous:
            raise FormatError(
                f"{self.where}: entry {path!r} comes after {'/'.join(self.previous)!r}: out of tree "
                "order, or a duplicate",
                hint="refusing the tree; it was not written by this provider",
            )
        left = []
        while self.stack and self.stack[-1] != key[: len(self.stack[-1])]:
            left.append(self.stack.pop())
        parent = key[:-1]
        if parent and (not self.stack or self.stack[-1] != parent):
            raise FormatError(
                f"{self.where}: entry {path!r} is not inside a directory of the tree "
                f"({'/'.join(parent)!r} is not one that came before it)",
                hint="refusing the tree: an entry below a link or a file could be written elsewhere",
            )
        if kind == DIR:
            self.stack.append(key)
        self.previous = key
        return left


def identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is written, replaced, truncated or re-permissioned."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def walk(root: str, problems: list[str], *, limit: int = 100) -> Iterator[tuple[Entry, str, os.stat_result]]:
    """The entries of the live tree at ``root`` in tree order, each with its absolute path and lstat.

    Files come without their sha256 (the caller reads them). Hostile entries are not yielded:
    each is appended to ``problems`` (``'<path>' <why>``) and the walk goes on, so that a caller
    can report all of them at once (the walk ends after ``limit`` of them). Directories named like the
    engine's own copies are left out.
    """
    stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = [("", _sorted(root))]
    while stack and len(problems) < limit:
        rel, entries = stack[-1]
        item = next(entries, None)
        if item is None:
            stack.pop()
            continue
        path = f"{rel}/{item.name}" if rel else item.name
        full = os.path.join(root, path)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue  # removed while walking: it is not part of the tree
        kind, target = _kind(st), ""
        if kind == SYMLINK:
            target = os.readlink(full)
        if kind == DIR and is_own_copy(item.name):
            continue
        problem = entry_problem(path, kind, target) or (
            f"is a hard link ({st.st_nlink} names); links between files are not kept: copy it, or move it out "
            "of the tree"
            if kind == FILE and st.st_nlink > 1
            else None
        )
        if problem:
            problems.append(f"{path!r} {problem}")
            continue
        entry = Entry(
            path, kind, stat.S_IMODE(st.st_mode), st.st_mtime_ns, size=st.st_size if kind == FILE else 0, target=target
        )
        yield entry, full, st
        if kind == DIR:
            try:
                stack.append((path, _sorted(full)))
            except OSError as exc:
                problems.append(f"{path!r} cannot be listed ({exc.strerror or exc})")


def _sorted(path: str) -> Iterator[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return iter(sorted(it, key=lambda e: e.name))


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISLNK(mode):
        return SYMLINK
    return (
        "character device"
        if stat.S_ISCHR(mode)
        else "block device"
        if stat.S_ISBLK(mode)
        else "FIFO"
        if stat.S_ISFIFO(mode)
        else "socket"
        if stat.S_ISSOCK(mode)
        else f"file of mode {mode:o}"
    )


def read_listing(stream: Any, where: str) -> Iterator[Entry]:
    """The entries of a listing stream, parsed, checked and in tree order (each line at most
    :data:`MAX_LINE_BYTES`)."""
    buf = b""
    order = TreeOrder(where)
    while True:
        while b"\n" not in buf:
            piece = stream.read(MAX_LINE_BYTES)
            if not piece:
                if buf:
                    raise FormatError(
                        f"{where}: the listing ends inside a line", hint="the checkpoint is damaged; verify it"
                    )
                return
            buf += piece
            if len(buf) > MAX_LINE_BYTES and b"\n" not in buf:
                raise FormatError(
                    f"{where}: a listing line is longer than {MAX_LINE_BYTES} bytes",
                    hint="the checkpoint was not written by this provider or was damaged; verify it",
                )
        line, _, buf = buf.partition(b"\n")
        entry = Entry.from_line(line + b"\n", where)
        order.enter(entry.path, entry.type)
        yield entry
