"""Exceptions raised by the checkpoint core.

Every message names the offending value and ends with a ``HINT:`` that says
what to do next. The hierarchy::

    CheckpointError                  root: catch this to catch everything below
    ├── FormatError                  an archive or manifest is not what the format allows
    │   ├── UnsupportedFormatError   format version this reader does not know
    │   ├── ManifestError            manifest unreadable, malformed or its checksum is wrong
    │   ├── TruncatedArchiveError    the archive ends before its end-of-archive marker
    │   └── UnsafeArchiveError       hostile member: absolute path, "..", link, device, ...
    ├── IntegrityError               size, checksum or raw size of an artifact does not match
    │   └── LkgBindingError          the LKG pointer's manifest_sha256 no longer matches its checkpoint
    ├── StoreError                   something about the checkpoint store
    │   ├── StoreNotFoundError       the store root does not exist or is not a store
    │   ├── StorePermissionError     the store root (or a file in it) cannot be written
    │   ├── StoreFullError           the device holding the store ran out of space
    │   ├── LockTimeoutError         another writer holds the store lock for too long
    │   ├── CheckpointNotFoundError  unknown checkpoint id (or no LKG yet)
    │   ├── LkgRequirementError      the LKG may not move to a checkpoint not in the required state
    │   └── ConcurrentUpdateError    a conditional write lost to another writer (an object store's ETag moved)
    │       └── LkgConflictError     another writer moved the LKG pointer first
    ├── VerificationFailedError      verify() found problems where success was required
    └── EngineError                  talking to PostgreSQL, Redis or a search cluster failed
        ├── ConnectionFailedError    the server cannot be reached (refused, timeout, DNS)
        ├── AuthenticationError      the server refused the credentials or lacks a permission
        ├── ToolError                an external tool (pg_dump, pg_restore) is missing, too old or failed
        ├── NotFoundError            a database, index, repository or snapshot does not exist
        └── CaptureError             the capture itself failed (bad RDB, PARTIAL snapshot, ...)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.results import VerifyResult


class CheckpointError(Exception):
    """Root of every error raised by this package."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\nHINT: {hint}" if hint else message)


class FormatError(CheckpointError):
    """An archive or a manifest breaks the format specification (docs/FORMAT.md)."""


class UnsupportedFormatError(FormatError):
    """The format version is one this reader does not understand."""


class ManifestError(FormatError):
    """The manifest cannot be parsed, lacks a field, or fails its own checksum."""


class TruncatedArchiveError(FormatError):
    """The archive ends early: a member's data or the end-of-archive marker is missing."""


class UnsafeArchiveError(FormatError):
    """An archive member could escape the extraction directory or is not a plain file."""


class IntegrityError(CheckpointError):
    """Bytes read do not match the size, sha256 or raw size the manifest promises."""


class LkgBindingError(IntegrityError):
    """The last-known-good checkpoint was replaced (or lost) after the pointer was set on it."""


class StoreError(CheckpointError):
    """Problem with the checkpoint store itself."""


class StoreNotFoundError(StoreError):
    """The store root is missing, or is a directory that is not a checkpoint store."""


class StorePermissionError(StoreError):
    """The store root, or a path below it, cannot be created or written."""


class StoreFullError(StoreError):
    """No space left on the device that holds the store."""


class LockTimeoutError(StoreError):
    """The store lock stayed held by another writer for longer than allowed."""


class CheckpointNotFoundError(StoreError):
    """No complete checkpoint has the requested id (or no LKG has been set)."""


class LkgRequirementError(StoreError):
    """The checkpoint is not in the state ``[checkpoint] lkg_requires`` names (or it is corrupt)."""


class ConcurrentUpdateError(StoreError):
    """A compare-and-swap write found the object changed (or created) by another writer meanwhile."""


class LkgConflictError(ConcurrentUpdateError):
    """The LKG pointer was moved by another writer between reading it and replacing it."""


class VerificationFailedError(CheckpointError):
    """A checkpoint failed verification where a verified one was required."""

    def __init__(self, result: VerifyResult) -> None:
        self.result = result
        lines = [f"checkpoint {result.checkpoint_id} failed verification ({len(result.problems)} problem(s)):"]
        lines += [f"  - {p}" for p in result.problems]
        super().__init__(
            "\n".join(lines),
            hint="do not use this checkpoint; restore another one (see `airflow-checkpoint list`) "
            "and take a fresh checkpoint",
        )


class EngineError(CheckpointError):
    """Talking to a data store failed. ``target`` names the server (never its password)."""


class ConnectionFailedError(EngineError):
    """The server cannot be reached: connection refused, timeout, unknown host."""


class AuthenticationError(EngineError):
    """The server refused the credentials, or the account lacks a needed permission."""


class ToolError(EngineError):
    """An external tool is missing, older than the server, or exited with an error."""


class NotFoundError(EngineError):
    """A named database, index, repository or snapshot does not exist."""


class CaptureError(EngineError):
    """The capture ran but its result is unusable (invalid RDB, PARTIAL/FAILED snapshot, ...)."""
