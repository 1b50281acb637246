"""Large task-state values kept in the checkpoint store: ``task-state/`` (docs/FORMAT.md).

Airflow's ``task_state_store`` keeps JSON values per task instance in its database; a
``[workers] state_store_backend`` may put large ones elsewhere and keep a reference. This is
the plain-Python side of that backend: one file per (scope, key), written like a workflow
state (a header line with its own sha256, then the zstd payload; temporary name, fsync,
rename, 0600), read back only if the sizes and checksums match. The path depends only on
the scope and the key, as Airflow requires of references::

    task-state/tasks/<dag>/<run>/<task>/<map_index>/<key>.json
    task-state/assets/<asset>/<key>.json

where each part is made directory-safe plus 10 hex digits of its sha256.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from airflow_checkpoint_provider.core.fs import TMP_MARK
from airflow_checkpoint_provider.core.manifest import format_ts, utcnow
from airflow_checkpoint_provider.core.staging import staging_key
from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.core.workflow.codec import (
    DAMAGED_HINT,
    canonical,
    decode_state,
    encode_state,
    parse_header,
    verify_payload,
)
from airflow_checkpoint_provider.core.workflow.errors import StateDamagedError

ROOT = "task-state"
BLOB_FORMAT = "airflow-checkpoint-task-state"
#: what a reference to a value in the store starts with
REF_PREFIX = "checkpoint-store:"


def _part(value: str) -> str:
    return staging_key(str(value))


def task_rel(dag_id: str, run_id: str, task_id: str, map_index: int, key: str | None = None) -> str:
    base = f"{ROOT}/tasks/{_part(dag_id)}/{_part(run_id)}/{_part(task_id)}/{int(map_index)}"
    return base if key is None else f"{base}/{_part(key)}.json"


def asset_rel(asset: str, key: str | None = None) -> str:
    base = f"{ROOT}/assets/{_part(asset)}"
    return base if key is None else f"{base}/{_part(key)}.json"


@dataclass
class TaskStateBlobs:
    """Values stored under ``task-state/`` of a checkpoint store."""

    store: Store

    def put(self, rel: str, text: str, *, about: dict[str, str]) -> str:
        """Store the JSON text ``text`` at ``rel``; returns the reference (``checkpoint-store:<rel>``)."""
        enc = encode_state(text.encode("utf-8"), what="the task-state value")
        body = {
            "format": BLOB_FORMAT,
            "format_version": 1,
            **about,
            "saved_at": format_ts(utcnow()),
            "compression": enc.compression,
            "size": enc.size,
            "raw_size": enc.raw_size,
            "sha256": enc.sha256,
        }
        body["header_sha256"] = hashlib.sha256(canonical(body)).hexdigest()
        self.store.fs.makedirs(rel.rpartition("/")[0])
        with self.store.fs.atomic_writer(rel) as out:
            out.write(canonical(body) + b"\n")
            out.write(enc.payload)
            out.commit()
        return REF_PREFIX + rel

    def get(self, rel: str) -> str | None:
        """The JSON text at ``rel``, checked; None if there is none. :class:`StateDamagedError` if damaged."""
        if not self.store.fs.exists(rel):
            return None
        data = self.store.fs.read_bytes(rel)
        end = data.find(b"\n")
        if end < 0:
            raise StateDamagedError(f"{rel}: no header line", hint=DAMAGED_HINT)
        body = parse_header(data[:end], rel)
        claimed = body.pop("header_sha256", None)
        if body.get("format") != BLOB_FORMAT or claimed != hashlib.sha256(canonical(body)).hexdigest():
            raise StateDamagedError(
                f"{rel}: the header is not a {BLOB_FORMAT} header or fails its header_sha256",
                hint="the value is lost; the task writes it again on its next run",
            )
        sizes = [body.get(k) for k in ("size", "raw_size")]
        if (
            not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sizes)
            or body.get("compression") not in ("none", "zstd")
            or not isinstance(body.get("sha256"), str)
        ):
            raise StateDamagedError(
                f"{rel}: the header's size, raw_size, compression or sha256 is invalid",
                hint="the value is lost; the task writes it again on its next run",
            )
        payload = data[end + 1 :]
        verify_payload(payload, size=body["size"], sha256=body["sha256"], source=rel)
        raw = decode_state("bytes", body["compression"], payload, raw_size=body["raw_size"], source=rel)
        text: str = raw.decode("utf-8")
        return text

    def delete(self, rel: str) -> None:
        self.store.fs.remove(rel)

    def clear(self, rel: str) -> None:
        self.store.fs.remove_tree(rel)

    def expire(self, older_than_s: float, *, dry_run: bool = False) -> list[str]:
        """Remove values not written for ``older_than_s`` seconds (and stale temporary files, and on an
        object store the uploads a killed writer left)."""
        now, fs = time.time(), self.store.fs
        doomed = [
            rel
            for rel, mtime in fs.walk(ROOT)
            if (rel.endswith(".json") or rel.rpartition("/")[2].startswith(TMP_MARK)) and now - mtime >= older_than_s
        ]
        stale = [u for u in fs.pending_uploads(ROOT) if now - u.active >= older_than_s]
        if not dry_run:
            for rel in doomed:
                fs.remove(rel)
            for upload in stale:
                fs.abort_upload(upload)
        return doomed + [f"{u.rel} (incomplete upload)" for u in stale]


def rel_of(ref: str) -> str | None:
    """The store path in a reference, or None if ``ref`` is not one of ours (refusing ``..``)."""
    if not ref.startswith(REF_PREFIX):
        return None
    rel = ref[len(REF_PREFIX) :]
    if not rel.startswith(ROOT + "/") or ".." in rel.split("/") or rel.startswith("/"):
        raise StateDamagedError(
            f"task-state reference {ref[:200]!r} does not point below {ROOT}/",
            hint="the reference in Airflow's task_state_store was altered; set the key again",
        )
    return rel
