"""The PostgreSQL store of workflow checkpoints: one row per saved state.

Two tables (created on first use, under a transaction-level advisory lock so that two
first writers do not race)::

    <table>_workflows (workflow_id text PRIMARY KEY, status, created_at, updated_at, completed_at,
                       created_by jsonb)
    <table>           (workflow_id text REFERENCES <table>_workflows ON DELETE CASCADE, seq bigint,
                       step jsonb, saved_at timestamptz, metadata jsonb, payload bytea, damaged text,
                       PRIMARY KEY (workflow_id, seq));  index on (workflow_id, step)

``metadata`` is the state header (docs/FORMAT.md); ``payload`` the stored bytes, kept out of
line without TOAST compression (it is zstd already). A save is one transaction: upsert the
workflow row (which locks it), upsert the state row, prune the history. A writer holds a
session-level advisory lock on the workflow for its whole run; when the server restarts under
it, the session reconnects, takes the lock back and checks that nobody wrote meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from airflow_checkpoint_provider.core.engines.postgres._conn import one
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    LockTimeoutError,
    StoreError,
)
from airflow_checkpoint_provider.core.manifest import parse_ts
from airflow_checkpoint_provider.core.workflow.codec import DAMAGED_HINT
from airflow_checkpoint_provider.core.workflow.errors import (
    StateDamagedError,
    WorkflowLockLostError,
)
from airflow_checkpoint_provider.core.workflow.records import (
    DEFAULT_TABLE,
    Entry,
    StateHeader,
    StateRecord,
    WorkflowInfo,
    validate_workflow_id,
)
from airflow_checkpoint_provider.core.workflow.stream import StreamedPayload

log = logging.getLogger(__name__)

#: seconds a session waits for the server to come back after its connection broke
RECONNECT_TIMEOUT = 60.0
_SCHEMA_LOCK = 0x57464B43  # "WFKC": serialises CREATE TABLE IF NOT EXISTS of concurrent first writers


def _ts(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value or "")


class PostgresWorkflowStore:
    """Workflow checkpoints in PostgreSQL.

    :param connect: returns a new autocommit psycopg connection (errors already translated).
    :param location: what messages call the server, e.g. ``postgresql://app@db:5432/app``.
    :param table: base name of the two tables.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection], *, location: str, table: str = DEFAULT_TABLE) -> None:
        if not table.replace("_", "").isalnum() or not table[0].isalpha() or len(table) > 50 or not table.isascii():
            raise CheckpointError(
                f"table name {table!r} is not a plain identifier",
                hint="use letters, digits and '_' (at most 50), starting with a letter",
            )
        self._connect = connect
        self.table = table
        self.location = f"{location}?table={table}"
        self._t = sql.Identifier(table)
        self._w = sql.Identifier(f"{table}_workflows")
        self._ready = False

    # ---- plumbing --------------------------------------------------------------------------------

    def q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(t=self._t, w=self._w, idx=sql.Identifier(f"{self.table}_step_idx"))

    def connection(self) -> psycopg.Connection:
        conn = self._connect()
        if not self._ready:
            self._ensure_schema(conn)
        return conn

    def _ensure_schema(self, conn: psycopg.Connection) -> None:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(
                    self.q(
                        "CREATE TABLE IF NOT EXISTS {w} (workflow_id text PRIMARY KEY, "
                        "status text NOT NULL DEFAULT 'running', created_at timestamptz NOT NULL DEFAULT now(), "
                        "updated_at timestamptz NOT NULL DEFAULT now(), completed_at timestamptz, "
                        "created_by jsonb NOT NULL DEFAULT '{{}}'::jsonb)"
                    )
                )
                conn.execute(
                    self.q(
                        "CREATE TABLE IF NOT EXISTS {t} (workflow_id text NOT NULL REFERENCES {w} (workflow_id) "
                        "ON DELETE CASCADE, seq bigint NOT NULL, step jsonb NOT NULL, saved_at timestamptz NOT NULL, "
                        "metadata jsonb NOT NULL, payload bytea NOT NULL, damaged text, PRIMARY KEY (workflow_id, seq))"
                    )
                )
                conn.execute(self.q("ALTER TABLE {t} ALTER COLUMN payload SET STORAGE EXTERNAL"))
                conn.execute(self.q("CREATE INDEX IF NOT EXISTS {idx} ON {t} (workflow_id, step)"))
        except psycopg.Error as exc:
            raise self.error("creating the workflow checkpoint tables", exc) from None
        self._ready = True

    def error(self, action: str, exc: BaseException) -> StoreError:
        return StoreError(
            f"{self.location}: {action} failed: {' '.join(str(exc).split())}",
            hint="check that the connection's role may create and write tables in its database",
        )

    @staticmethod
    def lock_keys(table: str, workflow_id: str) -> tuple[int, int]:
        digest = hashlib.sha256(f"{table}\0{workflow_id}".encode()).digest()
        return int.from_bytes(digest[:4], "big", signed=True), int.from_bytes(digest[4:8], "big", signed=True)

    # ---- reading ---------------------------------------------------------------------------------

    def entries(self, workflow_id: str) -> list[Entry]:
        with self.connection() as conn:
            return list(self._entries(conn, workflow_id))

    def _entries(self, conn: psycopg.Connection, workflow_id: str) -> Iterator[Entry]:
        rows = conn.execute(
            self.q("SELECT seq, metadata, damaged FROM {t} WHERE workflow_id = %s ORDER BY seq DESC"), (workflow_id,)
        ).fetchall()
        for seq, meta, damaged in rows:
            source = f"{self.location} workflow {workflow_id!r} seq {seq}"
            try:
                header = StateHeader.from_dict(dict(meta), source, self_checksum=False)
            except StateDamagedError as exc:
                yield Entry(seq, None, exc.message, damaged is not None)
                continue
            yield Entry(seq, header, damaged, damaged is not None)

    def load(self, workflow_id: str, seq: int) -> StateRecord:
        with self.connection() as conn:
            return self._load(conn, workflow_id, seq)

    def _load(self, conn: psycopg.Connection, workflow_id: str, seq: int) -> StateRecord:
        source = f"{self.location} workflow {workflow_id!r} seq {seq}"
        row = conn.execute(
            self.q("SELECT metadata, payload FROM {t} WHERE workflow_id = %s AND seq = %s AND damaged IS NULL"),
            (workflow_id, seq),
            binary=True,
        ).fetchone()
        if row is None:
            raise StateDamagedError(f"{source}: no such state", hint=DAMAGED_HINT)
        return StateRecord(StateHeader.from_dict(dict(row[0]), source, self_checksum=False), bytes(row[1]), source)

    def workflows(self) -> list[WorkflowInfo]:
        with self.connection() as conn:
            rows = conn.execute(
                self.q(
                    "SELECT w.workflow_id, w.status, w.created_at, coalesce(max(s.saved_at), w.updated_at), "
                    "count(s.seq), coalesce(sum(length(s.payload)), 0), "
                    "(SELECT step FROM {t} l WHERE l.workflow_id = w.workflow_id AND l.damaged IS NULL "
                    " ORDER BY seq DESC LIMIT 1) "
                    "FROM {w} w LEFT JOIN {t} s ON s.workflow_id = w.workflow_id AND s.damaged IS NULL "
                    "GROUP BY w.workflow_id ORDER BY 4 DESC"
                )
            ).fetchall()
        return [WorkflowInfo(r[0], r[1], _ts(r[2]), _ts(r[3]), int(r[4]), int(r[5]), r[6], self.location) for r in rows]

    def busy(self, workflow_id: str) -> bool:
        k1, k2 = self.lock_keys(self.table, workflow_id)
        with self.connection() as conn:
            got = one(conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (k1, k2)))[0]
            if got:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (k1, k2))
            return not got

    # ---- writing -------------------------------------------------------------------------------

    def session(self, workflow_id: str, *, timeout: float, owner: dict[str, Any]) -> PgSession:
        validate_workflow_id(workflow_id)
        return PgSession(self, workflow_id, timeout=timeout, owner=owner)


class PgSession:
    """A writer's connection holding the workflow's advisory lock; reconnects if the server restarts."""

    def __init__(self, store: PostgresWorkflowStore, workflow_id: str, *, timeout: float, owner: dict[str, Any]):
        self._store, self.workflow_id = store, workflow_id
        self._keys = store.lock_keys(store.table, workflow_id)
        self._conn = store.connection()
        try:
            self._lock(timeout)
            self._conn.execute(
                store.q(
                    "INSERT INTO {w} (workflow_id, created_by) VALUES (%s, %s) ON CONFLICT (workflow_id) DO NOTHING"
                ),
                (workflow_id, Jsonb(owner)),
            )
            self._last = self._max_seq()
        except BaseException:
            self._conn.close()
            raise

    def _lock(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not one(self._conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self._keys))[0]:
            if time.monotonic() >= deadline:
                holder = self._conn.execute(
                    "SELECT a.pid, a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = %s "
                    "AND l.objid = %s AND l.granted",
                    (self._keys[0] & 0xFFFFFFFF, self._keys[1] & 0xFFFFFFFF),
                ).fetchone()
                who = (
                    (
                        f"backend {holder[0]} ({holder[1] or 'no application name'} from {holder[2] or 'local'}, "
                        f"connected {holder[3]:%Y-%m-%d %H:%M:%S})"
                    )
                    if holder
                    else "another session"
                )
                raise LockTimeoutError(
                    f"workflow {self.workflow_id!r} in {self._store.location} is being run by {who}; waited "
                    f"{timeout:.0f}s",
                    hint="two tasks run the same workflow id: this one waits for the other to finish; raise "
                    "[checkpoint] lock_timeout, or give each task its own workflow_id",
                )
            time.sleep(0.1)

    def _max_seq(self) -> int:
        return int(
            one(
                self._conn.execute(
                    self._store.q("SELECT coalesce(max(seq), 0) FROM {t} WHERE workflow_id = %s"), (self.workflow_id,)
                )
            )[0]
        )

    def _run(
        self, action: str, fn: Callable[[psycopg.Connection], Any], *, retry: Callable[[], Any] | None = None
    ) -> Any:
        """Run ``fn``; if the connection broke, reconnect (retaking the lock) and run ``retry`` or ``fn`` once more."""
        try:
            return fn(self._conn)
        except psycopg.OperationalError as exc:
            if not (self._conn.broken or self._conn.closed):
                raise self._store.error(action, exc) from None
            log.warning(
                "The connection to %s broke while %s (%s); reconnecting",
                self._store.location,
                action,
                " ".join(str(exc).split()),
            )
        except psycopg.Error as exc:
            raise self._store.error(action, exc) from None
        self._reconnect()
        try:
            return (retry or (lambda: fn(self._conn)))()
        except psycopg.Error as exc:
            raise self._store.error(action, exc) from None

    def _reconnect(self) -> None:
        deadline = time.monotonic() + RECONNECT_TIMEOUT
        while True:
            try:
                self._conn = self._store.connection()
                break
            except CheckpointError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        if not one(self._conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self._keys))[0]:
            raise WorkflowLockLostError(
                f"workflow {self.workflow_id!r}: the connection to {self._store.location} broke and another writer "
                "took the workflow's lock meanwhile",
                hint="this writer stops; the other one goes on",
            )
        log.info("Reconnected to %s and took the lock of workflow %r back", self._store.location, self.workflow_id)

    def entries(self) -> Iterator[Entry]:
        return iter(self._run("listing states", lambda c: list(self._store._entries(c, self.workflow_id))))

    def load(self, seq: int) -> StateRecord:
        record: StateRecord = self._run(f"loading state {seq}", lambda c: self._store._load(c, self.workflow_id, seq))
        return record

    def append(self, header: StateHeader, payload: bytes | StreamedPayload, *, keep: int | None) -> StateHeader:
        header = replace(header, seq=self._last + 1)
        if isinstance(payload, StreamedPayload):  # a bytea parameter is sent whole
            payload, size, sha256 = payload.materialize()
            header = replace(header, size=size, sha256=sha256)
        q = self._store.q

        def write(conn: psycopg.Connection) -> StateHeader:
            with conn.transaction():
                conn.execute(
                    q(
                        "INSERT INTO {w} (workflow_id, status, updated_at) VALUES (%s, 'running', now()) "
                        "ON CONFLICT (workflow_id) DO UPDATE SET status = 'running', updated_at = now(), "
                        "completed_at = NULL"
                    ),
                    (self.workflow_id,),
                )
                conn.execute(
                    q(
                        "INSERT INTO {t} (workflow_id, seq, step, saved_at, metadata, payload) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (workflow_id, seq) DO UPDATE SET "
                        "step = EXCLUDED.step, saved_at = EXCLUDED.saved_at, metadata = EXCLUDED.metadata, "
                        "payload = EXCLUDED.payload, damaged = NULL"
                    ),
                    (
                        self.workflow_id,
                        header.seq,
                        Jsonb(header.step),
                        parse_ts(header.saved_at),
                        Jsonb(header.to_dict()),
                        payload,
                    ),
                    binary=True,
                )
                if keep is not None:
                    conn.execute(
                        q("DELETE FROM {t} WHERE workflow_id = %s AND seq <= %s"), (self.workflow_id, header.seq - keep)
                    )
            return header

        def again() -> StateHeader:
            # the commit may or may not have happened before the connection broke: look, then redo it
            # (an upsert of the same row: idempotent)
            latest = self._max_seq()
            sha = self._conn.execute(
                q("SELECT metadata->>'sha256' FROM {t} WHERE workflow_id = %s AND seq = %s"),
                (self.workflow_id, header.seq),
            ).fetchone()
            if latest > header.seq or (sha is not None and sha[0] != header.sha256):
                raise WorkflowLockLostError(
                    f"workflow {self.workflow_id!r}: another writer saved states while the connection was broken",
                    hint="this writer stops",
                )
            return write(self._conn)

        saved: StateHeader = self._run(f"saving state {header.seq}", write, retry=again)
        self._last = saved.seq
        return saved

    def discard(self, seqs: list[int]) -> None:
        self._run(
            "discarding states",
            lambda c: c.execute(
                self._store.q("DELETE FROM {t} WHERE workflow_id = %s AND seq = ANY(%s)"),
                (self.workflow_id, list(seqs)),
            ),
        )
        self._last = self._run("reading the history", lambda c: self._max_seq())

    def set_aside(self, seq: int, problem: str) -> None:
        self._run(
            "setting a damaged state aside",
            lambda c: c.execute(
                self._store.q("UPDATE {t} SET damaged = %s WHERE workflow_id = %s AND seq = %s"),
                (problem[:2000], self.workflow_id, seq),
            ),
        )
        log.warning("Set aside state %s of workflow %r: %s", seq, self.workflow_id, problem)

    def mark(self, status: str) -> None:
        self._run(
            "recording the workflow status",
            lambda c: c.execute(
                self._store.q(
                    "UPDATE {w} SET status = %s, updated_at = now(), completed_at = CASE WHEN %s = "
                    "'completed' THEN now() END WHERE workflow_id = %s"
                ),
                (status, status, self.workflow_id),
            ),
        )

    def reset(self) -> int:
        def drop(conn: psycopg.Connection) -> int:
            with conn.transaction():
                n = one(
                    conn.execute(self._store.q("SELECT count(*) FROM {t} WHERE workflow_id = %s"), (self.workflow_id,))
                )[0]
                conn.execute(self._store.q("DELETE FROM {w} WHERE workflow_id = %s"), (self.workflow_id,))
            return int(n)

        count = int(self._run("deleting the workflow", drop))
        self._last = 0
        return count

    def close(self) -> None:
        try:
            if not (self._conn.closed or self._conn.broken):
                self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", self._keys)
        except psycopg.Error:
            pass
        finally:
            self._conn.close()
