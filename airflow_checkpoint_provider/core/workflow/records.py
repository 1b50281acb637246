"""What a saved workflow state is (its header), and what every workflow store offers.

A **state record** is a header plus a payload. The header (docs/FORMAT.md, "Workflow
checkpoints") says which workflow and step it belongs to, its sequence number and parent,
the config digest it was saved with, the fingerprints of the step's data, the data
checkpoint taken with it, and the size and sha256 of the payload. The file store writes
both into one file; the PostgreSQL store into one row (``metadata`` jsonb, ``payload`` bytea).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_checkpoint_provider.core.safejson import describe
from airflow_checkpoint_provider.core.workflow.codec import (
    COMPRESSIONS,
    DAMAGED_HINT,
    ENCODINGS,
    canonical,
    decode_raw,
    decode_state,
    validate_step,
    verify_payload,
)
from airflow_checkpoint_provider.core.workflow.errors import (
    StateDamagedError,
    StateNotSerializableError,
)
from airflow_checkpoint_provider.core.workflow.stream import PayloadFile, StreamedPayload

STATE_FORMAT = "airflow-checkpoint-workflow-state"
STATE_VERSION = 1
#: the longest workflow id
MAX_WORKFLOW_ID_CHARS = 512
STATUSES = ("running", "completed")
#: base name of the PostgreSQL store's tables
DEFAULT_TABLE = "workflow_checkpoints"


def validate_workflow_id(workflow_id: Any) -> str:
    if (
        not isinstance(workflow_id, str)
        or not workflow_id
        or len(workflow_id) > MAX_WORKFLOW_ID_CHARS
        or not workflow_id.isprintable()
    ):
        raise StateNotSerializableError(
            f"workflow id {describe(workflow_id)} must be 1 to {MAX_WORKFLOW_ID_CHARS} printable characters",
            hint="name the workflow with a short id such as 'planning-2025' (no newlines or control characters)",
        )
    return workflow_id


@dataclass(frozen=True)
class StateHeader:
    """Everything about a saved state except its payload."""

    workflow_id: str
    seq: int  #: 1, 2, 3, ... per workflow; the newest state has the highest
    step: int | str
    parent: int | None  #: seq of the state this one was computed from; None: from the initial state
    saved_at: str
    config_hash: str
    config_digest: dict[str, str]
    fingerprints: dict[str, Any]
    data_checkpoint: str | None
    encoding: str
    compression: str
    size: int
    raw_size: int
    sha256: str
    writer: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "workflow_id": self.workflow_id,
            "seq": self.seq,
            "step": self.step,
            "parent": self.parent,
            "saved_at": self.saved_at,
            "config_hash": self.config_hash,
            "config_digest": dict(self.config_digest),
            "fingerprints": dict(self.fingerprints),
            "data_checkpoint": self.data_checkpoint,
            "encoding": self.encoding,
            "compression": self.compression,
            "size": self.size,
            "raw_size": self.raw_size,
            "sha256": self.sha256,
            "writer": dict(self.writer),
        }

    def to_line(self) -> bytes:
        """The file store's header line: the header with its own sha256, then a newline."""
        body = self.to_dict()
        body["header_sha256"] = hashlib.sha256(canonical(body)).hexdigest()
        return canonical(body) + b"\n"

    @classmethod
    def from_dict(cls, obj: dict[str, Any], source: str, *, self_checksum: bool) -> StateHeader:
        """Validate a parsed header; :class:`StateDamagedError` names the first bad field."""

        def bad(why: str) -> StateDamagedError:
            return StateDamagedError(f"{source}: {why}", hint=DAMAGED_HINT)

        if obj.get("format") != STATE_FORMAT or obj.get("format_version") != STATE_VERSION:
            raise bad(
                f"format {describe(obj.get('format'))} version {describe(obj.get('format_version'))} is not "
                f"{STATE_FORMAT!r} version {STATE_VERSION} (upgrade airflow-checkpoint-provider if it is newer)"
            )
        if self_checksum:
            claimed = obj.pop("header_sha256", None)
            if claimed != hashlib.sha256(canonical(obj)).hexdigest():
                raise bad("the header does not match its header_sha256")
        try:
            header = cls(
                workflow_id=obj["workflow_id"],
                seq=obj["seq"],
                step=obj["step"],
                parent=obj["parent"],
                saved_at=obj["saved_at"],
                config_hash=obj["config_hash"],
                config_digest=obj["config_digest"],
                fingerprints=obj["fingerprints"],
                data_checkpoint=obj["data_checkpoint"],
                encoding=obj["encoding"],
                compression=obj["compression"],
                size=obj["size"],
                raw_size=obj["raw_size"],
                sha256=obj["sha256"],
                writer=obj.get("writer") or {},
            )
        except KeyError as exc:
            raise bad(f"the header lacks the field {exc.args[0]!r}") from None
        checks = [
            (isinstance(header.workflow_id, str), "workflow_id"),
            (_count(header.seq) and header.seq >= 1, "seq"),
            (header.parent is None or (_count(header.parent) and header.parent < header.seq), "parent"),
            (isinstance(header.saved_at, str), "saved_at"),
            (isinstance(header.config_hash, str), "config_hash"),
            (isinstance(header.config_digest, dict), "config_digest"),
            (isinstance(header.fingerprints, dict), "fingerprints"),
            (header.data_checkpoint is None or isinstance(header.data_checkpoint, str), "data_checkpoint"),
            (header.encoding in ENCODINGS, "encoding"),
            (header.compression in COMPRESSIONS, "compression"),
            (_count(header.size), "size"),
            (_count(header.raw_size), "raw_size"),
            (isinstance(header.sha256, str) and len(header.sha256) == 64, "sha256"),
            (isinstance(header.writer, dict), "writer"),
        ]
        for ok, name in checks:
            if not ok:
                raise bad(f"field {name!r} is {describe(getattr(header, name))}")
        try:
            validate_step(header.step)
        except StateNotSerializableError:
            raise bad(f"field 'step' is {describe(header.step)}") from None
        return header

    def public(self) -> dict[str, Any]:
        """What listings, logs and XCom show: the header without the config digest."""
        return {
            "seq": self.seq,
            "step": self.step,
            "parent": self.parent,
            "saved_at": self.saved_at,
            "config_hash": self.config_hash,
            "fingerprints": dict(self.fingerprints),
            "data_checkpoint": self.data_checkpoint,
            "size": self.size,
            "raw_size": self.raw_size,
            "encoding": self.encoding,
            "compression": self.compression,
            "sha256": self.sha256,
        }


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


@dataclass(frozen=True)
class StateRecord:
    """A header with its payload, checked against each other."""

    header: StateHeader
    payload: bytes | PayloadFile  #: a large payload stays in its file until :meth:`state` streams it
    source: str

    def state(self) -> Any:
        """The saved state, after checking the payload's size and sha256."""
        h = self.header
        if isinstance(self.payload, PayloadFile):
            raw = self.payload.read(
                size=h.size, sha256=h.sha256, compression=h.compression, raw_size=h.raw_size, source=self.source
            )
            return decode_raw(h.encoding, raw, source=self.source)
        verify_payload(self.payload, size=h.size, sha256=h.sha256, source=self.source)
        return decode_state(h.encoding, h.compression, self.payload, raw_size=h.raw_size, source=self.source)


@dataclass(frozen=True)
class Entry:
    """One saved state as a listing sees it: its header, or why the header cannot be read."""

    seq: int
    header: StateHeader | None
    problem: str | None = None
    damaged: bool = False  #: set aside by a resume that fell back past it

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            **(self.header.public() if self.header else {}),
            "problem": self.problem,
            "damaged": self.damaged or self.problem is not None,
        }


@dataclass(frozen=True)
class WorkflowInfo:
    """A workflow as ``workflow list`` shows it."""

    workflow_id: str
    status: str
    created_at: str
    updated_at: str  #: when its newest state was saved (or it was created)
    states: int
    size: int
    latest_step: int | str | None
    location: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "states": self.states,
            "size": self.size,
            "latest_step": self.latest_step,
            "location": self.location,
        }


class Session(Protocol):
    """One writer's exclusive hold on a workflow (the store's lock), and the writes it may make."""

    workflow_id: str

    def entries(self) -> Iterator[Entry]:
        """Saved states, newest first (damaged ones included, with their problem)."""

    def load(self, seq: int) -> StateRecord:
        """The record of ``seq`` (raises :class:`StateDamagedError` when it cannot be read)."""

    def append(self, header: StateHeader, payload: bytes | StreamedPayload, *, keep: int | None) -> StateHeader:
        """Publish a new state atomically; ``header.seq`` is replaced by the next number (and, for a
        streamed payload, ``size`` and ``sha256`` by what was written). Keeps the newest ``keep``
        states (None: all)."""

    def discard(self, seqs: list[int]) -> None:
        """Delete these states, newest first."""

    def set_aside(self, seq: int, problem: str) -> None:
        """Take a damaged state out of the history (kept for inspection)."""

    def mark(self, status: str) -> None:
        """Record the workflow's status (``running`` / ``completed``)."""

    def reset(self) -> int:
        """Delete every state of the workflow and the workflow itself; returns how many states went."""

    def close(self) -> None:
        """Release the lock."""


class WorkflowStore(Protocol):
    """Where workflow states live: :class:`FileWorkflowStore` or :class:`PostgresWorkflowStore`."""

    location: str  #: for messages: ``file:///srv/checkpoints/workflows`` or ``postgresql://...``

    def session(self, workflow_id: str, *, timeout: float, owner: dict[str, Any]) -> Session:
        """Take the workflow's lock (waiting up to ``timeout`` seconds) and return the session."""

    def entries(self, workflow_id: str) -> list[Entry]:
        """Saved states of a workflow, newest first, without taking its lock."""

    def load(self, workflow_id: str, seq: int) -> StateRecord:
        """One record, without taking the lock."""

    def workflows(self) -> list[WorkflowInfo]:
        """Every workflow, most recently updated first."""

    def busy(self, workflow_id: str) -> bool:
        """Whether a writer holds the workflow's lock right now."""
