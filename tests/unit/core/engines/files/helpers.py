"""Helpers of the files engine tests: real trees on the local disk, read back independently.

``state`` describes a tree with ``os.lstat``, ``os.readlink`` and plain reads, not with the
code under test, so that a round trip compares what is really on disk.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.engines.files import FilesTarget
from airflow_checkpoint_provider.core.manifest import Manifest
from airflow_checkpoint_provider.core.recovery import RestoreReport, RestoreRequest, restore
from airflow_checkpoint_provider.core.rollbacks import RollbackPolicy

ENGINE = registry.get("files")
NS = 1_000_000_000
#: names that exercise the tree order and UTF-8: combining marks, non-Latin scripts, an emoji,
#: spaces, a newline, and neighbours that sort differently by component than by path ("a.txt" vs "a/")
UNICODE = ["ünï cødé.txt", "e\u0301te\u0301.txt", "日本語", "emoji-😀.bin", "line\nbreak", "a b"]


def make_tree(root: Path) -> None:
    """Nested directories, an empty one, a read-only one, modes, nanosecond mtimes, links inside the
    tree (to a file, to a directory, up and down again, dangling), unicode names, a large file."""
    root.mkdir(parents=True)
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "deep.txt").write_bytes(b"deep\n")
    (root / "a.txt").write_bytes(b"beside a/, sorted before it by component")
    (root / "a" / "script.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "a" / "script.sh").chmod(0o755)
    (root / "secret.key").write_bytes(os.urandom(64))
    (root / "secret.key").chmod(0o600)
    (root / "empty").mkdir()
    (root / "empty" / "nested-empty").mkdir()
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # more than one read chunk
    (root / "zero").write_bytes(b"")
    for i, name in enumerate(UNICODE):
        target = root / "日本語" if name == "日本語" else root / name
        if name == "日本語":
            target.mkdir()
            (target / "ファイル.txt").write_text("こんにちは", encoding="utf-8")
        else:
            target.write_bytes(name.encode() * (i + 1))
    os.symlink("a/b/deep.txt", root / "link-to-file")
    os.symlink("a/b", root / "link-to-dir")
    os.symlink("../a.txt", root / "a" / "up-and-down")
    os.symlink("missing/inside", root / "dangling")
    ro = root / "readonly"
    ro.mkdir()
    (ro / "frozen.txt").write_bytes(b"cannot be changed")
    (ro / "frozen.txt").chmod(0o444)
    stamp = 1_700_000_000 * NS
    for n, path in enumerate(sorted(_all(root), key=lambda p: -len(p.parts))):  # deepest first: dirs last
        os.utime(path, ns=(stamp + n * 1_000_003, stamp + n * 1_000_003 + 123_456_789), follow_symlinks=False)
    ro.chmod(0o555)
    os.utime(ro, ns=(stamp, stamp + 42))
    os.utime(root, ns=(stamp, stamp + 7))


def _all(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [Path(dirpath) / n for n in dirnames + filenames]
    return out


def state(root: Path | str) -> dict[str, Any]:
    """Everything a restore must bring back: every entry's type, mode, mtime and content or link
    target, and the root's mode and mtime."""
    root = Path(root)
    out: dict[str, Any] = {}
    for path in _all(root):
        st = os.lstat(path)
        rel = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("symlink", os.readlink(path), st.st_mtime_ns)
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
        else:
            out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, path.read_bytes())
    st = os.lstat(root)
    out["."] = ("root", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def damage(root: Path) -> None:
    """Change a file, remove a link and an empty directory, add junk, retarget a link, chmod a file."""
    (root / "a" / "b" / "deep.txt").write_bytes(b"overwritten")
    (root / "link-to-file").unlink()
    (root / "empty" / "nested-empty").rmdir()
    (root / "junk.tmp").write_bytes(b"junk")
    os.remove(root / "a" / "up-and-down")
    os.symlink("b/deep.txt", root / "a" / "up-and-down")
    (root / "secret.key").chmod(0o644)


def merkle_root(root: Path) -> str:
    """The Merkle root as docs/FORMAT.md defines it, computed here from scratch."""
    lines = []
    for path in _all(root):
        rel = path.relative_to(root).as_posix()
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            kind, digest = "l", hashlib.sha256(os.readlink(path).encode()).hexdigest()
        elif stat.S_ISDIR(st.st_mode):
            kind, digest = "d", ""
        else:
            kind, digest = "f", hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append((tuple(rel.split("/")), f"{rel}\0{kind}\0{digest}\n"))
    return hashlib.sha256("".join(line for _key, line in sorted(lines)).encode()).hexdigest()


def checkpoint(store: Store, target: FilesTarget, **options: Any) -> Manifest:
    staging = store.staging(staging_key("files-test", target.path, str(len(store.list()))))
    ENGINE.capture(target, staging, **options)
    return store.seal(staging, tags=["test"])


def run_restore(
    store: Store, cid: str, target: FilesTarget, *, made: list | None = None, safety: bool = True, **options: Any
) -> RestoreReport:
    """A restore through the orchestration, with a builder over the registry's files engine."""

    def build(s: Store, m: Manifest, r: RestoreRequest) -> list:
        part = ENGINE.restore(
            target,
            s,
            m.checkpoint_id,
            ENGINE.artifacts_of(m.artifacts),
            mode=r.mode,
            rollback_policy=RollbackPolicy.parse(r.rollback_keep),
            **options,
        )
        if made is not None:
            made.append(part)
        return [part]

    return restore(store, RestoreRequest(checkpoint_id=cid, components=("files",), safety_checkpoint=safety), build)


def siblings(root: Path) -> list[str]:
    return sorted(p.name for p in root.parent.iterdir() if p.name != root.name)


def forge(
    store: Store,
    path: str,
    members: list[tuple[tarfile.TarInfo, bytes]],
    lines: list[bytes],
    fingerprints: dict[str, Any] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> str:
    """Seal a checkpoint whose tree and listing are exactly ``members`` and ``lines`` (a hostile
    archive, built by hand the way a tampering writer would); returns its id."""
    from airflow_checkpoint_provider.core.engines.files import artifact_names

    tree_name, list_name = artifact_names(path)
    staging = store.staging(staging_key("forged", path, str(len(store.list()))))
    with staging.artifact(list_name, store="files", kind="files/list") as sink:
        for line in lines:
            sink.write(line)
        sink.meta = {"path": path, "format": 1, "tree": tree_name}
    with staging.artifact(tree_name, store="files", kind="files/tar") as sink:
        for ti, data in members:
            sink.write(ti.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"))
            sink.write(data + b"\0" * (-len(data) % 512))
        sink.write(b"\0" * 1024)
        sink.meta = {
            "path": path,
            "format": 1,
            "consistency": "detect",
            "retried": 0,
            "list": list_name,
            "root": {"mode": 0o755, "mtime_ns": 0},
        }
        sink.fingerprints = fingerprints or {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0, "merkle_root": ""}
        if edit:
            edit(sink.meta)
    return store.seal(staging).checkpoint_id


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", pax: dict[str, str] | None = None
) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.linkname, ti.mode = kind, len(data) if kind == tarfile.REGTYPE else 0, link, 0o644
    if pax:
        ti.pax_headers = pax
    return ti, data


def line(path: str, kind: str = "file", data: bytes = b"", target: str = "", mode: int = 0o644) -> bytes:
    from airflow_checkpoint_provider.core.engines.files._tree import Entry

    if kind == "file":
        return Entry(path, kind, mode, 0, size=len(data), sha256=hashlib.sha256(data).hexdigest()).to_line()
    return Entry(path, kind, mode, 0, target=target).to_line()
