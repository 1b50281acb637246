"""Fingerprints of a live tree (file count, bytes, Merkle root), and its comparison with a listing.

Both read the tree in tree order (:func:`~._tree.walk`) and hash every file, streaming: memory
stays flat whatever the tree's size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from airflow_checkpoint_provider.core.engines.files._target import FilesTarget
from airflow_checkpoint_provider.core.engines.files._tree import FILE, Entry, Tally, walk
from airflow_checkpoint_provider.core.engines.files.capture import check_directory
from airflow_checkpoint_provider.core.errors import CaptureError
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE

#: the most differences one comparison reports
MAX_DIFFERENCES = 50


def hash_file(path: str) -> tuple[str, int]:
    """``(sha256, bytes)`` of the regular file at ``path`` (never through a link)."""
    sha, size = hashlib.sha256(), 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        while piece := f.read(CHUNK_SIZE):
            sha.update(piece)
            size += len(piece)
    return sha.hexdigest(), size


def entries(root: str, problems: list[str]) -> Iterator[Entry]:
    """The live tree's entries in tree order, files with their sha256 (see :func:`~._tree.walk`)."""
    for entry, full, _st in walk(root, problems):
        if entry.type == FILE:
            try:
                digest, size = hash_file(full)
            except FileNotFoundError:
                continue
            entry = replace(entry, sha256=digest, size=size)
        yield entry


def tally_tree(root: str, problems: list[str]) -> Tally:
    tally = Tally()
    for entry in entries(root, problems):
        tally.add(entry)
    return tally


def fingerprint(target: FilesTarget, **options: Any) -> dict[str, Any]:
    """Files, directories, links, bytes and the Merkle root of the tree at ``target.path``, now."""
    check_directory(target.path, action="fingerprinting")
    problems: list[str] = []
    fingerprints = tally_tree(target.path, problems).fingerprints()
    if problems:
        raise CaptureError(
            f"{target.path}: {'; '.join(problems[:20])}", hint="these entries cannot be part of a checkpointed tree"
        )
    return fingerprints


def compare_tree(root: str, listing: Iterator[Entry]) -> tuple[Tally, list[str]]:
    """Walk ``root`` beside ``listing`` (both in tree order): every entry must be on disk exactly as
    listed (type, mode, mtime, size, sha256, link target), and nothing else. Returns the tally of
    what the disk holds and the differences (at most :data:`MAX_DIFFERENCES`), each named."""
    problems: list[str] = []
    diffs: list[str] = []
    tally = Tally()
    live = entries(root, problems)
    have, want = next(live, None), next(listing, None)
    while (have is not None or want is not None) and len(diffs) < MAX_DIFFERENCES:
        if want is None or (have is not None and have.key < want.key):
            assert have is not None
            diffs.append(f"{have.path!r} is on disk but not in the listing")
            tally.add(have)
            have = next(live, None)
        elif have is None or want.key < have.key:
            diffs.append(f"{want.path!r} is in the listing but not on disk")
            want = next(listing, None)
        else:
            diffs += [f"{want.path!r}: {d}" for d in differences(want, have)]
            tally.add(have)
            have, want = next(live, None), next(listing, None)
    return tally, [*problems, *diffs]


def differences(want: Entry, have: Entry) -> list[str]:
    """How the entry on disk differs from the listed one, field by field."""
    out = []
    for name in ("type", "mode", "mtime_ns", "size", "sha256", "target"):
        a, b = getattr(want, name), getattr(have, name)
        if a != b:
            shown = (oct(a), oct(b)) if name == "mode" else (a, b)
            out.append(f"{name} is {shown[1]!r}, the listing says {shown[0]!r}")
    return out
