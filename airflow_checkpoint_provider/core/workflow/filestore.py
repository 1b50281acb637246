"""The file store of workflow checkpoints, under the checkpoint store root.

Layout (docs/FORMAT.md, "Workflow checkpoints")::

    workflows/<key>/workflow.json            the workflow: its id, created_at, status
    workflows/<key>/states/<seq>.state       one saved state: a header line, then the payload
    workflows/<key>/damaged/<seq>.state      states a resume set aside because they failed their checksums
    locks/workflows/<key>.lock               the writer's lock (flock), held for the whole session

``<key>`` is the workflow id made directory-safe plus 10 hex digits of its sha256;
``<seq>`` is the sequence number in 12 digits, so names sort by age. Every file is written
to a temporary name, fsynced and renamed (0600, directories 0700, like the rest of the store):
a state file exists complete or not at all, and the newest one is the latest state.

On an ``s3://`` store the same layout holds keys. A state is one object, visible only once its
(multipart) upload completes; the lock is a lease object (core/fs_s3.py). A large state's header
cannot be written last into room left at the start of an upload, so its payload is first
compressed into a private temporary file (no name on disk, in a 0700 directory), hashed on the
way, and then header and payload are streamed into the upload: memory stays constant.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from typing import IO, Any

from airflow_checkpoint_provider.core.errors import LockTimeoutError, StoreNotFoundError
from airflow_checkpoint_provider.core.fs import CHUNK, TMP_MARK, AtomicFile
from airflow_checkpoint_provider.core.manifest import format_ts, utcnow
from airflow_checkpoint_provider.core.safejson import load_json
from airflow_checkpoint_provider.core.staging import staging_key
from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.core.workflow.codec import DAMAGED_HINT, parse_header
from airflow_checkpoint_provider.core.workflow.errors import StateDamagedError
from airflow_checkpoint_provider.core.workflow.records import (
    Entry,
    StateHeader,
    StateRecord,
    WorkflowInfo,
    validate_workflow_id,
)
from airflow_checkpoint_provider.core.workflow.stream import STREAM_THRESHOLD, PayloadFile, StreamedPayload

log = logging.getLogger(__name__)

WORKFLOW_FORMAT = "airflow-checkpoint-workflow"
ROOT = "workflows"
LOCKS = "locks/workflows"
_STATE_NAME = re.compile(r"^(\d{12})\.state\Z")
#: the longest header line a reader accepts
MAX_HEADER_BYTES = 1024 * 1024
_FIRST_READ = 64 * 1024


def workflow_key(workflow_id: str) -> str:
    return staging_key(validate_workflow_id(workflow_id))


class FileWorkflowStore:
    """Workflow checkpoints in ``workflows/`` of a checkpoint :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fs = store.fs
        local = store.fs.local_path("")
        self.location = f"file://{local}/{ROOT}" if local is not None else f"{store.root}/{ROOT}"

    # ---- paths -----------------------------------------------------------------------------------

    @staticmethod
    def _dir(workflow_id: str) -> str:
        return f"{ROOT}/{workflow_key(workflow_id)}"

    def _state_rel(self, workflow_id: str, seq: int, *, damaged: bool = False) -> str:
        return f"{self._dir(workflow_id)}/{'damaged' if damaged else 'states'}/{seq:012d}.state"

    def _seqs(self, workflow_id: str, sub: str = "states") -> list[int]:
        names = self.fs.listdir(f"{self._dir(workflow_id)}/{sub}")
        return sorted((int(m.group(1)) for m in map(_STATE_NAME.match, names) if m), reverse=True)

    # ---- reading -------------------------------------------------------------------------------

    def _read_header(self, rel: str) -> tuple[StateHeader, int]:
        """The header of a state file and the offset of its payload."""
        with self.fs.open_read(rel) as f:
            head = f.read(_FIRST_READ)
            end = head.find(b"\n")
            while end < 0 and len(head) < MAX_HEADER_BYTES:
                more = f.read(_FIRST_READ)
                if not more:
                    break
                head += more
                end = head.find(b"\n")
        if end < 0:
            raise StateDamagedError(f"{rel}: no header line in the first {len(head)} bytes", hint=DAMAGED_HINT)
        header = StateHeader.from_dict(parse_header(head[:end], rel), rel, self_checksum=True)
        return header, end + 1

    def _entry(self, workflow_id: str, seq: int, *, damaged: bool) -> Entry:
        rel = self._state_rel(workflow_id, seq, damaged=damaged)
        try:
            header, _ = self._read_header(rel)
        except StateDamagedError as exc:
            return Entry(seq, None, exc.message, damaged)
        if header.seq != seq or header.workflow_id != workflow_id:
            return Entry(seq, None, f"{rel}: the header belongs to {header.workflow_id!r} seq {header.seq}", damaged)
        return Entry(seq, header, None, damaged)

    def iter_entries(self, workflow_id: str, *, damaged: bool = False) -> Iterator[Entry]:
        """Saved states newest first, reading each header only when it is reached (a state pruned
        meanwhile by a running writer is skipped)."""
        for sub in ("states", "damaged") if damaged else ("states",):
            for seq in self._seqs(workflow_id, sub):
                try:
                    yield self._entry(workflow_id, seq, damaged=sub == "damaged")
                except StoreNotFoundError:
                    continue

    def entries(self, workflow_id: str) -> list[Entry]:
        return sorted(self.iter_entries(workflow_id, damaged=True), key=lambda e: e.seq, reverse=True)

    def load(self, workflow_id: str, seq: int) -> StateRecord:
        rel = self._state_rel(workflow_id, seq)
        header, offset = self._read_header(rel)
        if header.seq != seq or header.workflow_id != workflow_id:
            raise StateDamagedError(
                f"{rel}: the header belongs to {header.workflow_id!r} seq {header.seq}", hint=DAMAGED_HINT
            )
        if header.size >= STREAM_THRESHOLD:  # read in chunks when the state is wanted
            return StateRecord(header, PayloadFile(lambda: self.fs.open_read(rel), offset), rel)
        with self.fs.open_read(rel) as f:
            f.seek(offset)
            payload = f.read(header.size + 1)  # one more: a longer file is damaged too
        return StateRecord(header, payload, rel)

    def descriptor(self, workflow_id: str) -> dict[str, Any] | None:
        rel = f"{self._dir(workflow_id)}/workflow.json"
        if not self.fs.exists(rel):
            return None
        try:
            obj = load_json(self.fs.read_bytes(rel), source=rel)
        except Exception as exc:
            log.warning("%s is damaged: %s", rel, exc)
            return {"workflow_id": workflow_id, "status": "unknown"}
        return obj if isinstance(obj, dict) else None

    def workflows(self) -> list[WorkflowInfo]:
        out = []
        for key in self.fs.listdir(ROOT):
            if key.startswith(TMP_MARK):
                continue
            rel = f"{ROOT}/{key}/workflow.json"
            try:
                desc = load_json(self.fs.read_bytes(rel), source=rel) if self.fs.exists(rel) else None
            except Exception as exc:
                log.warning("Skipping %s: %s", rel, exc)
                continue
            if not isinstance(desc, dict) or not isinstance(desc.get("workflow_id"), str):
                continue
            out.append(self._info(desc))
        return sorted(out, key=lambda i: i.updated_at, reverse=True)

    def _info(self, desc: dict[str, Any]) -> WorkflowInfo:
        wid = desc["workflow_id"]
        seqs = self._seqs(wid)
        latest = self._entry(wid, seqs[0], damaged=False) if seqs else None
        size = sum(self.fs.size(self._state_rel(wid, s)) for s in seqs)
        updated = latest.header.saved_at if latest and latest.header else str(desc.get("created_at", ""))
        return WorkflowInfo(
            wid,
            str(desc.get("status", "running")),
            str(desc.get("created_at", "")),
            updated,
            len(seqs),
            size,
            latest.header.step if latest and latest.header else None,
            f"{self.location}/{workflow_key(wid)}",
        )

    def busy(self, workflow_id: str) -> bool:
        try:
            with self.fs.lock(f"{LOCKS}/{workflow_key(workflow_id)}.lock", 0):
                return False
        except LockTimeoutError:
            return True

    # ---- writing -------------------------------------------------------------------------------

    def session(self, workflow_id: str, *, timeout: float, owner: dict[str, Any]) -> FileSession:
        validate_workflow_id(workflow_id)
        self.fs.makedirs(LOCKS)
        stack = ExitStack()
        rel = f"{LOCKS}/{workflow_key(workflow_id)}.lock"
        try:
            stack.enter_context(self.fs.lock(rel, timeout))
        except LockTimeoutError as exc:
            raise LockTimeoutError(
                f"workflow {workflow_id!r} is being run by another writer ({exc.message})",
                hint="two tasks run the same workflow id: this one waits for the other to finish; raise "
                "[checkpoint] lock_timeout, or give each task its own workflow_id",
            ) from None
        session = FileSession(self, workflow_id, stack)
        session.register(owner)
        return session


class FileSession:
    """The writer's side of one workflow in the file store (holds its lock until :meth:`close`)."""

    def __init__(self, store: FileWorkflowStore, workflow_id: str, stack: ExitStack) -> None:
        self._store, self.workflow_id, self._stack = store, workflow_id, stack
        self._fs = store.fs
        self._dir = store._dir(workflow_id)

    def register(self, owner: dict[str, Any]) -> None:
        for sub in ("states", "damaged"):
            self._fs.makedirs(f"{self._dir}/{sub}")
        if self._store.descriptor(self.workflow_id) is None:
            self._write_descriptor({"created_at": format_ts(utcnow()), "status": "running", "created_by": owner})

    def _write_descriptor(self, fields: dict[str, Any]) -> None:
        old = self._store.descriptor(self.workflow_id) or {}
        body = {**old, **fields, "format": WORKFLOW_FORMAT, "format_version": 1, "workflow_id": self.workflow_id}
        self._fs.write_bytes(f"{self._dir}/workflow.json", (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())

    def entries(self) -> Iterator[Entry]:
        return self._store.iter_entries(self.workflow_id)

    def load(self, seq: int) -> StateRecord:
        return self._store.load(self.workflow_id, seq)

    def append(self, header: StateHeader, payload: bytes | StreamedPayload, *, keep: int | None) -> StateHeader:
        seqs = self._store._seqs(self.workflow_id) + self._store._seqs(self.workflow_id, "damaged")
        header = replace(header, seq=max(seqs, default=0) + 1)
        rel = self._store._state_rel(self.workflow_id, header.seq)
        if isinstance(payload, StreamedPayload) and self._fs.local_path(rel) is None:
            return self._append_spooled(rel, header, payload, keep=keep)
        with self._fs.atomic_writer(rel) as out:  # temporary name, fsync, rename, fsync of the directory
            if isinstance(payload, StreamedPayload):
                # room for the header with the widest size; written last, padded with spaces
                room = len(replace(header, size=2**63 - 1, sha256="0" * 64).to_line())
                out.write(b" " * room)
                size, sha256 = payload.write_to(out.write)
                header = replace(header, size=size, sha256=sha256)
                line = header.to_line()
                out.pwrite(line[:-1] + b" " * (room - len(line)) + b"\n", 0)
            else:
                out.write(header.to_line())
                out.write(payload)
            out.commit()
        return self._pruned(header, keep)

    def _append_spooled(
        self, rel: str, header: StateHeader, payload: StreamedPayload, *, keep: int | None
    ) -> StateHeader:
        """Save a large state where written bytes cannot be rewritten (an object store's upload).

        The payload is compressed into a temporary file first (its size and sha256 computed on the
        way), then the header and the payload are streamed into the writer."""
        with _spool() as spool, self._fs.atomic_writer(rel) as out:
            size, sha256 = payload.write_to(spool.write)
            header = replace(header, size=size, sha256=sha256)
            out.write(header.to_line())
            spool.seek(0)
            _copy(spool, out)
            out.commit()
        return self._pruned(header, keep)

    def _pruned(self, header: StateHeader, keep: int | None) -> StateHeader:
        if keep is not None:
            self._prune(keep)
        return header

    def _prune(self, keep: int) -> None:
        seqs = self._store._seqs(self.workflow_id)
        if len(seqs) <= keep:
            return
        oldest_kept = seqs[keep - 1]
        for seq in seqs[keep:]:
            self._fs.remove(self._store._state_rel(self.workflow_id, seq))
        for seq in self._store._seqs(self.workflow_id, "damaged"):
            if seq < oldest_kept:
                self._fs.remove(self._store._state_rel(self.workflow_id, seq, damaged=True))

    def discard(self, seqs: list[int]) -> None:
        for seq in sorted(seqs, reverse=True):  # newest first: a crash leaves a consistent, shorter history
            self._fs.remove(self._store._state_rel(self.workflow_id, seq))

    def set_aside(self, seq: int, problem: str) -> None:
        self._fs.makedirs(f"{self._dir}/damaged")
        try:
            self._fs.rename(
                self._store._state_rel(self.workflow_id, seq),
                self._store._state_rel(self.workflow_id, seq, damaged=True),
            )
        except StoreNotFoundError:
            return  # set aside (or pruned) meanwhile
        log.warning("Set aside state %s of workflow %r: %s", seq, self.workflow_id, problem)

    def mark(self, status: str) -> None:
        fields: dict[str, Any] = {"status": status}
        if status == "completed":
            fields["completed_at"] = format_ts(utcnow())
        self._write_descriptor(fields)

    def reset(self) -> int:
        count = len(self._store._seqs(self.workflow_id))
        self.discard(self._store._seqs(self.workflow_id))
        self._fs.remove(f"{self._dir}/workflow.json")  # after the states: a crash leaves a registered empty one
        self._fs.remove_tree(self._dir)
        self._forget_lock = True
        return count

    def close(self) -> None:
        if getattr(self, "_forget_lock", False):  # deleted while held: waiters re-open the path (core/fs.py)
            self._fs.remove(f"{LOCKS}/{workflow_key(self.workflow_id)}.lock")
        self._stack.close()


def _spool() -> IO[bytes]:
    """A private temporary file with no name: created 0600 in a fresh 0700 directory, which is removed at
    once, so nothing is left behind whatever happens to the process (even SIGKILL)."""
    folder = tempfile.mkdtemp(prefix="ckpt-wfspool-")
    try:
        return tempfile.TemporaryFile(dir=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _copy(src: IO[bytes], out: AtomicFile) -> None:
    while chunk := src.read(CHUNK):
        out.write(chunk)
