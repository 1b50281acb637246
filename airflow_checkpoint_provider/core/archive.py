"""The checkpoint archive: a POSIX ustar file of regular files only.

Layout (docs/FORMAT.md)::

    manifest.json                      first member, plain JSON
    artifacts/<store>/<name>[.zst]     one member per artifact, in manifest order
    <two zero blocks>                  end-of-archive marker

The writer streams each artifact through sha256 while it copies it. The reader
is strict and streaming: it accepts only regular files whose names are
``manifest.json`` or ``artifacts/...`` made of a safe alphabet, and refuses
absolute paths, ``..``, links, devices, FIFOs, directories and tar extension
headers (pax, GNU long names) with an :class:`UnsafeArchiveError` naming the
entry. Any tool that reads ustar (``tar -tvf``) can list an archive.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from airflow_checkpoint_provider.core import progress
from airflow_checkpoint_provider.core.errors import (
    FormatError,
    IntegrityError,
    ManifestError,
    TruncatedArchiveError,
    UnsafeArchiveError,
)
from airflow_checkpoint_provider.core.manifest import (
    ARTIFACT_NAME_RE,
    ARTIFACT_PREFIX,
    MANIFEST_MEMBER,
    MAX_MANIFEST_BYTES,
    Manifest,
)
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE, Writable, copy_exact

BLOCK = 512
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
_TYPE_NAMES = {
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
    tarfile.DIRTYPE: "directory",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.XHDTYPE: "pax extended header",
    tarfile.XGLTYPE: "pax global header",
    tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link",
    tarfile.GNUTYPE_SPARSE: "GNU sparse file",
}


def type_name(type_: bytes) -> str:
    """What a tar entry type is, in words (``symbolic link``, ``FIFO``, ...)."""
    return _TYPE_NAMES.get(type_, f"entry of type {type_!r}")


def path_problem(name: str) -> str | None:
    """Why a member path could escape the directory it is read into, or None: an empty name, an
    absolute path, a backslash or NUL byte, a ``..`` component. Shared by every reader of tar
    entries (the checkpoint archive here, the trees of the files engine)."""
    if not name:
        return "has an empty name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if "\\" in name or "\x00" in name:
        return "contains a backslash or NUL byte"
    if ".." in name.split("/"):
        return "contains a '..' path component"
    return None


def member_name_problem(name: str, type_: bytes = tarfile.REGTYPE) -> str | None:
    """Why a member is unsafe to read, or None. Checks the type, then the name."""
    if type_ not in _REGULAR:
        return f"is a {type_name(type_)}, only regular files are allowed"
    problem = path_problem(name)
    if problem:
        return problem
    if name == MANIFEST_MEMBER:
        return None
    if name.startswith(ARTIFACT_PREFIX) and ARTIFACT_NAME_RE.fullmatch(name[len(ARTIFACT_PREFIX) :]):
        return None
    return "is not 'manifest.json' nor a well-formed 'artifacts/...' name"


def _pad(size: int) -> int:
    return (BLOCK - size % BLOCK) % BLOCK


class ArchiveWriter:
    """Write a checkpoint archive to a binary file object, streaming."""

    def __init__(self, fileobj: Writable, *, mtime: int = 0) -> None:
        self._f = fileobj
        self._mtime = mtime
        self._names: set[str] = set()
        self.bytes_written = 0

    def _header(self, name: str, size: int) -> None:
        problem = member_name_problem(name)
        if problem:
            raise FormatError(f"refusing to write archive member {name!r}: it {problem}")
        if name in self._names:
            raise FormatError(f"archive member {name!r} written twice")
        if len(name.encode()) > 100 + 155:
            raise FormatError(f"archive member name {name!r} is too long for ustar (255 bytes)")
        self._names.add(name)
        ti = tarfile.TarInfo(name)
        ti.size = size
        ti.mode = 0o600
        ti.mtime = self._mtime
        ti.type = tarfile.REGTYPE
        self._write(ti.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict"))

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self._f.write(data)
        self.bytes_written += len(data)

    def add_bytes(self, name: str, data: bytes) -> str:
        """Add a small member held in memory (the manifest). Returns its sha256."""
        self._header(name, len(data))
        self._write(data)
        self._write(b"\0" * _pad(len(data)))
        return hashlib.sha256(data).hexdigest()

    def add_stream(self, name: str, src: BinaryIO, size: int, *, expect_sha256: str | None = None) -> str:
        """Copy exactly ``size`` bytes from ``src`` into a member, hashing them on the way.

        Raises :class:`IntegrityError` when ``src`` is shorter than ``size`` or when the bytes
        hash to something other than ``expect_sha256``; the caller then abandons the archive.
        """
        self._header(name, size)
        handle = progress.track("seal", name, size)
        copied, digest = copy_exact(src, self if handle is None else progress.Tracked(self, handle), size)
        if handle is not None:
            handle.close()
        if copied != size:
            raise IntegrityError(
                f"{name}: source ended after {copied} of {size} bytes",
                hint="the staged artifact was truncated; re-run the capture",
            )
        if expect_sha256 is not None and digest != expect_sha256:
            raise IntegrityError(
                f"{name}: staged bytes hash to {digest}, the capture recorded {expect_sha256}",
                hint="the staged artifact changed after capture; re-run the capture",
            )
        self._write(b"\0" * _pad(size))
        return digest

    def write(self, data: bytes | bytearray | memoryview) -> int:  # used by copy_exact
        self._write(data)
        return len(data)

    def close(self) -> None:
        """Write the end-of-archive marker (two zero blocks)."""
        self._write(b"\0" * (2 * BLOCK))


@dataclass
class Member:
    """One member as the reader meets it. ``problem`` is set for unsafe members (lenient mode)."""

    name: str
    size: int
    offset: int  #: offset of the member's data in the archive
    problem: str | None = None


class _MemberStream:
    """Reads exactly one member's data from the archive stream."""

    def __init__(self, reader: ArchiveReader, member: Member) -> None:
        self._r = reader
        self.member = member
        self.left = member.size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        if n is None or n < 0 or n > self.left:
            n = self.left
        data = self._r._read(n)
        self.left -= len(data)
        if len(data) < n:
            self._r._truncated("inside member data")
        return data

    def readinto(self, buf: memoryview | bytearray) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class ArchiveReader:
    """Strict streaming reader. Iterate to get ``(Member, stream)`` pairs in archive order.

    With ``strict=True`` an unsafe member raises :class:`UnsafeArchiveError`; with
    ``strict=False`` (used by verify, which must report every problem) it is yielded with
    ``member.problem`` set and its data is skipped, never returned.
    """

    def __init__(self, fileobj: BinaryIO, *, source: str = "archive", strict: bool = True) -> None:
        self._f = fileobj
        self.source = source
        self.strict = strict
        self.pos = 0
        self.ended = False
        self.current: str | None = None  #: member whose data is being read, for error reports

    def _read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            piece = self._f.read(min(n - len(out), CHUNK_SIZE))
            if not piece:
                break
            out += piece
        self.pos += len(out)
        return bytes(out)

    def _truncated(self, where: str) -> None:
        if self.current:
            where = f"{where} of member {self.current!r}"
        raise TruncatedArchiveError(
            f"{self.source} is truncated {where} (at byte {self.pos})",
            hint="the archive file is incomplete; verify it and use another checkpoint",
        )

    def _skip(self, n: int) -> None:
        while n > 0:
            piece = self._read(min(n, CHUNK_SIZE))
            if not piece:
                self._truncated("inside member data")
            n -= len(piece)

    def __iter__(self) -> Iterator[tuple[Member, _MemberStream]]:
        seen: set[str] = set()
        while True:
            header_at = self.pos
            block = self._read(BLOCK)
            if len(block) < BLOCK:
                self._truncated("before the end-of-archive marker")
            if block == b"\0" * BLOCK:
                second = self._read(BLOCK)
                if second != b"\0" * BLOCK:
                    self._truncated("inside the end-of-archive marker")
                self.ended = True
                return
            try:
                ti = tarfile.TarInfo.frombuf(block, encoding="utf-8", errors="strict")
            except (tarfile.HeaderError, UnicodeDecodeError) as exc:
                raise FormatError(
                    f"{self.source} has a damaged member header at byte {header_at} ({exc})",
                    hint="the archive is corrupt; use another checkpoint",
                ) from None
            member = Member(name=ti.name, size=ti.size, offset=self.pos)
            self.current = ti.name
            member.problem = member_name_problem(ti.name, ti.type)
            if member.problem is None and ti.name in seen:
                member.problem = "appears twice"
            seen.add(ti.name)
            if member.problem and self.strict:
                raise UnsafeArchiveError(
                    f"{self.source}: member {ti.name!r} {member.problem}",
                    hint="refusing to read this archive; it was not written by this tool or was tampered with",
                )
            stream = _MemberStream(self, member)
            if member.problem:
                self._skip(ti.size)  # never hand out data of an unsafe member
                stream.left = 0
            yield member, stream
            if stream.left:
                self._skip(stream.left)
                stream.left = 0
            self._skip(_pad(ti.size))
            self.current = None


def read_embedded_manifest(fileobj: BinaryIO, *, source: str = "archive") -> Manifest:
    """Parse the manifest stored as the first member of an archive."""
    for member, stream in ArchiveReader(fileobj, source=source):
        if member.name != MANIFEST_MEMBER:
            raise ManifestError(f"{source}: first member is {member.name!r}, expected {MANIFEST_MEMBER!r}")
        if member.size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{source}: manifest is {member.size} bytes, more than {MAX_MANIFEST_BYTES} allowed")
        return Manifest.from_bytes(stream.read(), source=f"{source}:{MANIFEST_MEMBER}")
    raise ManifestError(f"{source} is empty: it holds no manifest")
