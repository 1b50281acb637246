"""What a verification found: the closed set of problem kinds, each problem, and the result.

Kept apart from :mod:`.verify` (which reads archives) so that :mod:`.errors` can name
:class:`VerifyResult` without importing the archive reader.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.manifest import Manifest


class ProblemKind(str, enum.Enum):  # noqa: UP042 - values are spelled out where printed
    MISSING_MEMBER = "missing_member"
    SIZE_MISMATCH = "size_mismatch"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    BAD_MANIFEST = "bad_manifest"  #: unreadable, malformed, or its self-checksum fails
    UNKNOWN_FORMAT = "unknown_format"
    MANIFEST_MISMATCH = "manifest_mismatch"  #: store's copy and embedded manifest differ
    UNEXPECTED_MEMBER = "unexpected_member"
    UNSAFE_MEMBER = "unsafe_member"
    TRUNCATED = "truncated"
    DAMAGED_HEADER = "damaged_header"
    DATA_ERROR = "data_error"  #: deep check: artifact does not decompress to its raw size
    UNREADABLE = "unreadable"  #: the archive file itself cannot be opened or read
    ID_MISMATCH = "id_mismatch"  #: a manifest describes another checkpoint than its file names
    LKG_MISMATCH = "lkg_mismatch"  #: the LKG pointer is bound to another manifest than the checkpoint's


_HINTS = {
    ProblemKind.MISSING_MEMBER: "the archive lost an artifact; restore from another checkpoint",
    ProblemKind.SIZE_MISMATCH: "the artifact was cut or padded; restore from another checkpoint",
    ProblemKind.CHECKSUM_MISMATCH: "the artifact's bytes changed since sealing; restore from another checkpoint",
    ProblemKind.BAD_MANIFEST: "the manifest is damaged; do not trust this checkpoint",
    ProblemKind.UNKNOWN_FORMAT: "upgrade airflow-checkpoint-provider, or this is not a checkpoint",
    ProblemKind.MANIFEST_MISMATCH: "the store index and the archive disagree; the archive was replaced or damaged",
    ProblemKind.UNEXPECTED_MEMBER: "the archive holds a member the manifest does not list; it was tampered with",
    ProblemKind.UNSAFE_MEMBER: "the archive holds a hostile entry; never extract it with other tools",
    ProblemKind.TRUNCATED: "the archive file is incomplete; restore from another checkpoint",
    ProblemKind.DAMAGED_HEADER: "the archive structure is corrupt; restore from another checkpoint",
    ProblemKind.DATA_ERROR: "the artifact does not decompress cleanly; restore from another checkpoint",
    ProblemKind.UNREADABLE: "check that the store is mounted and readable",
    ProblemKind.ID_MISMATCH: "the files were renamed or copied from another checkpoint; do not trust this checkpoint",
    ProblemKind.LKG_MISMATCH: "the checkpoint was replaced after it was marked last-known-good; do not restore it",
}


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    subject: str  #: the member (or file) the problem concerns
    detail: str
    advice: str = ""  #: a hint for this very problem, replacing the kind's general one

    @property
    def hint(self) -> str:
        return self.advice or _HINTS[self.kind]

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.subject}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "subject": self.subject, "detail": self.detail, "hint": self.hint}


@dataclass
class VerifyResult:
    checkpoint_id: str
    problems: list[Problem] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)  #: members whose size and sha256 matched
    bytes_read: int = 0
    manifest: Manifest | None = None
    level: str = "standard"  #: basic, standard or deep (see core/levels.py)

    @property
    def ok(self) -> bool:
        return not self.problems and self.manifest is not None

    def add(self, kind: ProblemKind, subject: str, detail: str, *, hint: str = "") -> None:
        self.problems.append(Problem(kind, subject, detail, hint))

    def kinds(self) -> set[ProblemKind]:
        return {p.kind for p in self.problems}

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "verified": list(self.verified),
            "bytes_read": self.bytes_read,
            "level": self.level,
            "manifest_sha256": self.manifest.manifest_sha256 if self.manifest else None,
        }
