"""Verify a checkpoint archive: collect every problem, then report.

Verification reads the archive once, front to back. It checks the embedded
manifest (format version, self-checksum, the checkpoint id, canonical bytes equal to
the store's copy's), then
each member's size and sha256 against the manifest, and finally that no
artifact is missing. It does not stop at the first problem: the result lists
each one with the member it concerns and what to do.

The outcomes form a closed set (:class:`ProblemKind`). ``deep=True`` also
decompresses each zstd artifact in the same pass and checks its raw size; it stops
decompressing an artifact as soon as it passes its ``raw_size`` (a zstd bomb costs no memory).
"""

from __future__ import annotations

import hashlib
from typing import IO, Any, BinaryIO, cast

import zstandard

from airflow_checkpoint_provider.core.archive import ArchiveReader
from airflow_checkpoint_provider.core.errors import (
    FormatError,
    ManifestError,
    TruncatedArchiveError,
    UnsupportedFormatError,
)
from airflow_checkpoint_provider.core.manifest import (
    MANIFEST_MEMBER,
    MAX_MANIFEST_BYTES,
    Artifact,
    Manifest,
    first_difference,
)
from airflow_checkpoint_provider.core.results import Problem, ProblemKind, VerifyResult
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE

__all__ = ["Problem", "ProblemKind", "VerifyResult", "verify_archive"]


def _manifest_problem(result: VerifyResult, exc: Exception, subject: str) -> None:
    kind = ProblemKind.UNKNOWN_FORMAT if isinstance(exc, UnsupportedFormatError) else ProblemKind.BAD_MANIFEST
    msg = exc.message if isinstance(exc, FormatError) else str(exc)
    result.add(kind, subject, msg)


def verify_archive(
    fileobj: BinaryIO,
    *,
    checkpoint_id: str,
    expected: Manifest | None = None,
    source: str = "archive",
    deep: bool = False,
) -> VerifyResult:
    """Check an open archive against its manifest. ``expected`` is the store's copy, if any."""
    result = VerifyResult(checkpoint_id=checkpoint_id, manifest=expected)
    reader = ArchiveReader(fileobj, source=source, strict=False)
    reference = expected
    seen: set[str] = set()
    first = True
    try:
        for member, stream in reader:
            if first:
                first = False
                if member.name != MANIFEST_MEMBER or member.problem:
                    result.add(ProblemKind.BAD_MANIFEST, member.name, f"first member is not {MANIFEST_MEMBER}")
                else:
                    seen.add(MANIFEST_MEMBER)
                    if member.size > MAX_MANIFEST_BYTES:
                        result.add(ProblemKind.BAD_MANIFEST, MANIFEST_MEMBER, f"{member.size} bytes is too large")
                        continue
                    try:
                        embedded = Manifest.from_bytes(stream.read(), source=f"{source}:{MANIFEST_MEMBER}")
                    except (ManifestError, UnsupportedFormatError) as exc:
                        _manifest_problem(result, exc, MANIFEST_MEMBER)
                    else:
                        if embedded.checkpoint_id != checkpoint_id:
                            result.add(
                                ProblemKind.ID_MISMATCH,
                                MANIFEST_MEMBER,
                                f"describes checkpoint {embedded.checkpoint_id!r}, but the archive is "
                                f"{checkpoint_id!r}",
                            )
                        if reference is None:
                            reference = embedded
                            result.manifest = embedded
                        elif embedded.canonical() != reference.canonical():
                            result.add(
                                ProblemKind.MANIFEST_MISMATCH,
                                MANIFEST_MEMBER,
                                "the embedded manifest differs from the store's copy "
                                f"(first at field {first_difference(embedded.to_dict(), reference.to_dict())[0]})",
                            )
                    if member.problem is None:
                        continue
            if member.problem:
                result.add(ProblemKind.UNSAFE_MEMBER, member.name, member.problem)
                continue
            if member.name in seen:
                continue
            seen.add(member.name)
            art = _artifact_by_member(reference, member.name)
            if art is None:
                result.add(
                    ProblemKind.UNEXPECTED_MEMBER,
                    member.name,
                    "not listed in the manifest" if reference else "cannot be checked without a manifest",
                )
                continue
            if member.size != art.size:
                result.add(ProblemKind.SIZE_MISMATCH, member.name, f"{member.size} bytes, manifest says {art.size}")
                continue
            digest, raw, data_error = _hash_member(
                stream, deep=deep and art.compression == "zstd" and "encryption" not in art.meta, raw_size=art.raw_size
            )
            result.bytes_read += member.size
            if digest != art.sha256:
                result.add(
                    ProblemKind.CHECKSUM_MISMATCH, member.name, f"sha256 is {digest}, manifest says {art.sha256}"
                )
            elif data_error:
                result.add(ProblemKind.DATA_ERROR, member.name, data_error)
            elif deep and art.raw_size is not None and raw is not None and raw != art.raw_size:  # (plaintext only)
                result.add(
                    ProblemKind.DATA_ERROR, member.name, f"decompresses to {raw} bytes, manifest says {art.raw_size}"
                )
            else:
                result.verified.append(member.name)
    except TruncatedArchiveError as exc:
        result.add(ProblemKind.TRUNCATED, reader.current or source, exc.message)
    except FormatError as exc:
        result.add(ProblemKind.DAMAGED_HEADER, source, exc.message)
    except OSError as exc:
        result.add(ProblemKind.UNREADABLE, source, str(exc))
    if first and not result.problems:
        result.add(ProblemKind.BAD_MANIFEST, source, "the archive holds no members")
    if reference is not None:
        for art in reference.artifacts:
            if art.member not in seen:
                result.add(ProblemKind.MISSING_MEMBER, art.member, "listed in the manifest but not in the archive")
    return result


def _artifact_by_member(manifest: Manifest | None, member: str) -> Artifact | None:
    if manifest is None:
        return None
    for art in manifest.artifacts:
        if art.member == member:
            return art
    return None


class _TooLarge(Exception):
    """The decompressed bytes passed the artifact's raw_size."""


class _Count:
    """Null sink that counts decompressed bytes, refusing more than ``limit`` (a zstd bomb)."""

    def __init__(self, limit: int | None) -> None:
        self.n = 0
        self.limit = limit

    def write(self, data: bytes) -> int:
        self.n += len(data)
        if self.limit is not None and self.n > self.limit:
            raise _TooLarge
        return len(data)


def _hash_member(stream: Any, *, deep: bool, raw_size: int | None = None) -> tuple[str, int | None, str | None]:
    """sha256 of the member; with ``deep``, also its decompressed size (same pass, bounded by ``raw_size``)."""
    sha = hashlib.sha256()
    counter = _Count(raw_size)
    dec = zstandard.ZstdDecompressor().stream_writer(cast(IO[bytes], counter), write_return_read=True) if deep else None
    error = None
    while piece := stream.read(CHUNK_SIZE):
        sha.update(piece)
        if dec is not None and error is None:
            try:
                dec.write(piece)
            except zstandard.ZstdError as exc:
                error = f"zstd: {exc}"
            except _TooLarge:
                error = f"decompresses to more than its raw_size of {raw_size} bytes (decompression stopped there)"
    return sha.hexdigest(), (counter.n if deep else None), error
