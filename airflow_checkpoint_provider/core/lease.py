"""Leases: a restore holds its targets, so that no capture of them can become last-known-good.

A restore takes one lease per target server (``leases/<key>.json``, written under the store
lock) before it changes anything, renews its heartbeat while it runs, and releases it at the
end. Releasing appends a record to ``leases/history/`` with the time the lease was held, so
a checkpoint whose capture window overlapped a restore of the same target is recognised
even after the restore finished (:func:`held_during`).

A lease is **live** while its heartbeat is younger than its ``ttl`` and, when it was taken
on this host, while the process that took it is still the same running process (its pid
and its start time). A dead lease is only broken after the journal of its restore has been
replayed (:mod:`.journal`): :func:`acquire` refuses with :class:`StaleLeaseError` otherwise.

Keys identify a server, not a database or an index: ``postgres:db.internal:5432``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.errors import FormatError, StoreError
from airflow_checkpoint_provider.core.fs import TMP_MARK, StoreFS
from airflow_checkpoint_provider.core.manifest import format_ts, parse_ts, utcnow
from airflow_checkpoint_provider.core.safejson import load_json

log = logging.getLogger(__name__)

LEASE_DIR = "leases"
HISTORY_DIR = "leases/history"
DEFAULT_TTL = 120.0
HISTORY_KEEP_SECONDS = 14 * 24 * 3600


class LeaseHeldError(StoreError):
    """A live restore holds a lease on the target."""


class StaleLeaseError(StoreError):
    """A dead restore's lease is still there and its journal has not been replayed."""


def target_key(component: str, public: dict[str, Any]) -> str:
    """``postgres:host:port`` / ``search:http://host:9200``: one key per server."""
    if public.get("url"):
        where = str(public["url"]).rstrip("/").lower()
    else:
        where = f"{str(public.get('host', '')).lower()}:{public.get('port', '')}"
    return f"{component}:{where}"


def _file(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24] + ".json"


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19] if ")" in stat else None


def owner_gone(owner: dict[str, Any]) -> bool:
    """``owner`` (host, pid, pid_start) is a process of this host that no longer runs, or whose pid
    now belongs to another process. False when it ran on another host: only a heartbeat tells."""
    if owner.get("host") != socket.gethostname() or not owner.get("pid"):
        return False
    start = process_start(int(owner["pid"]))
    return start is None or (owner.get("pid_start") is not None and start != owner["pid_start"])


def this_process() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": process_start(os.getpid())}


@dataclass
class LeaseRecord:
    key: str
    holder: str  #: the restore id
    owner: dict[str, Any] = field(default_factory=dict)  #: host, pid, pid_start, dag/run/task ids
    acquired_at: str = ""
    heartbeat_at: str = ""
    ttl: float = DEFAULT_TTL
    released_at: str | None = None

    def expired(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return parse_ts(self.heartbeat_at).timestamp() + self.ttl < now

    def process_gone(self) -> bool:
        """Taken on this host by a process that no longer runs (or whose pid was reused)."""
        return owner_gone(self.owner)

    def live(self, is_alive: Callable[[LeaseRecord], bool | None] | None = None) -> bool:
        """Heartbeat fresh and owner process running; ``is_alive`` (e.g. Airflow's view of the
        owning task) may declare it dead sooner (False) or leave it to the heartbeat (None)."""
        if self.expired() or self.process_gone():
            return False
        verdict = is_alive(self) if is_alive else None
        return verdict is not False

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord:
        d = load_json(data, source="lease")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=1, sort_keys=True) + "\n").encode()


def read_leases(fs: StoreFS) -> list[LeaseRecord]:
    """Every lease currently on file (live or dead); unreadable files are skipped with a warning."""
    out = []
    for entry in fs.listdir(LEASE_DIR):
        if not entry.endswith(".json") or entry.startswith(TMP_MARK):
            continue
        try:
            out.append(LeaseRecord.from_bytes(fs.read_bytes(f"{LEASE_DIR}/{entry}")))
        except (FormatError, ValueError, TypeError, OSError) as exc:
            log.warning("Skipping unreadable lease %s/%s: %s", LEASE_DIR, entry, exc)
    return out


class Lease:
    """Leases of one restore on a set of keys; a context manager that heartbeats while open."""

    def __init__(
        self,
        fs: StoreFS,
        lock: Callable[[], Any],
        holder: str,
        keys: Iterable[str],
        *,
        owner: dict[str, Any] | None = None,
        ttl: float = DEFAULT_TTL,
    ) -> None:
        self.fs, self._lock, self.holder, self.ttl = fs, lock, holder, ttl
        self.keys = sorted(set(keys))
        self.owner = {**this_process(), **(owner or {})}
        self.acquired_at = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, *, is_alive: Callable[[LeaseRecord], bool | None] | None = None) -> Lease:
        """Take every key or none. Raises LeaseHeldError (a live restore holds one) or
        StaleLeaseError (a dead one does and its journal was not replayed)."""
        from airflow_checkpoint_provider.core.journal import JOURNAL_DIR

        now = format_ts(utcnow())
        with self._lock():
            self.fs.makedirs(LEASE_DIR)
            for key in self.keys:
                rel = f"{LEASE_DIR}/{_file(key)}"
                if not self.fs.exists(rel):
                    continue
                rec = LeaseRecord.from_bytes(self.fs.read_bytes(rel))
                if rec.holder == self.holder:
                    continue
                if rec.live(is_alive):
                    raise LeaseHeldError(
                        f"{key} is being restored by {rec.holder} ({_who(rec)}, since {rec.acquired_at})",
                        hint="wait for that restore to finish; its lease expires "
                        f"{rec.ttl:.0f}s after its last heartbeat ({rec.heartbeat_at}) if it died",
                    )
                if self.fs.exists(f"{JOURNAL_DIR}/{rec.holder}.json"):
                    raise StaleLeaseError(
                        f"{key} is held by restore {rec.holder} ({_who(rec)}), which died without finishing",
                        hint="its journal must be replayed first: run `airflow-checkpoint recover-interrupted`, "
                        "or any restore, or the next checkpoint_scheduled run",
                    )
                _release(self.fs, rec)  # dead, and nothing left to replay
            self.acquired_at = now
            for key in self.keys:
                rec = LeaseRecord(
                    key=key, holder=self.holder, owner=self.owner, acquired_at=now, heartbeat_at=now, ttl=self.ttl
                )
                self.fs.write_bytes(f"{LEASE_DIR}/{_file(key)}", rec.to_bytes())
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"lease-{self.holder}")
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.heartbeat()
            except Exception:
                log.warning("Lease heartbeat of %s failed", self.holder, exc_info=True)

    def heartbeat(self) -> None:
        now = format_ts(utcnow())
        for key in self.keys:
            rel = f"{LEASE_DIR}/{_file(key)}"
            rec = LeaseRecord.from_bytes(self.fs.read_bytes(rel)) if self.fs.exists(rel) else None
            if rec is None or rec.holder != self.holder:
                continue  # released, or broken by someone who found us dead
            rec.heartbeat_at = now
            self.fs.write_bytes(rel, rec.to_bytes())

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock():
            for key in self.keys:
                rel = f"{LEASE_DIR}/{_file(key)}"
                if self.fs.exists(rel):
                    rec = LeaseRecord.from_bytes(self.fs.read_bytes(rel))
                    if rec.holder == self.holder:
                        _release(self.fs, rec)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _who(rec: LeaseRecord) -> str:
    o = rec.owner
    run = f"{o.get('dag_id')}/{o.get('run_id')}/{o.get('task_id')}" if o.get("dag_id") else "no Airflow task"
    return f"{run}, pid {o.get('pid')} on {o.get('host')}"


def _release(fs: StoreFS, rec: LeaseRecord) -> None:
    """Move a lease to the history (with its release time), then remove it. Caller holds the store lock."""
    rec.released_at = format_ts(utcnow())
    fs.makedirs(HISTORY_DIR)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    fs.write_bytes(f"{HISTORY_DIR}/{stamp}-{_file(rec.key)}", rec.to_bytes())
    fs.remove(f"{LEASE_DIR}/{_file(rec.key)}")


def break_lease(fs: StoreFS, lock: Callable[[], Any], holder: str) -> int:
    """Release every lease of ``holder`` (after its journal was replayed). Returns how many."""
    n = 0
    with lock():
        for rec in read_leases(fs):
            if rec.holder == holder:
                _release(fs, rec)
                n += 1
    return n


def live_holders(
    fs: StoreFS, keys: Iterable[str], *, is_alive: Callable[[LeaseRecord], bool | None] | None = None
) -> list[LeaseRecord]:
    """The live leases on any of ``keys``."""
    wanted = set(keys)
    return [r for r in read_leases(fs) if r.key in wanted and r.live(is_alive)]


def held_during(fs: StoreFS, keys: Iterable[str], start: str, end: str) -> list[LeaseRecord]:
    """Leases on any of ``keys`` (current or released) whose holding time overlaps [start, end]."""
    wanted = set(keys)
    lo, hi = parse_ts(start).timestamp(), parse_ts(end).timestamp()
    out = []
    records = read_leases(fs)
    for entry in fs.listdir(HISTORY_DIR):
        if entry.endswith(".json") and not entry.startswith(TMP_MARK):
            try:
                records.append(LeaseRecord.from_bytes(fs.read_bytes(f"{HISTORY_DIR}/{entry}")))
            except (FormatError, ValueError, TypeError, OSError):
                continue
    for rec in records:
        if rec.key not in wanted or not rec.acquired_at:
            continue
        a = parse_ts(rec.acquired_at).timestamp()
        b = parse_ts(rec.released_at).timestamp() if rec.released_at else time.time()
        if a <= hi and b >= lo:
            out.append(rec)
    return out


def prune_history(fs: StoreFS, keep_seconds: float = HISTORY_KEEP_SECONDS) -> list[str]:
    """Remove released-lease records older than ``keep_seconds``."""
    removed = []
    cutoff = time.time() - keep_seconds
    for entry in fs.listdir(HISTORY_DIR):
        rel = f"{HISTORY_DIR}/{entry}"
        try:
            rec = LeaseRecord.from_bytes(fs.read_bytes(rel))
            old = rec.released_at is not None and parse_ts(rec.released_at).timestamp() < cutoff
        except (FormatError, ValueError, TypeError, OSError):
            old = True
        if old:
            fs.remove(rel)
            removed.append(rel)
    return removed


def wait_for_restores(
    fs: StoreFS,
    keys: Iterable[str],
    *,
    timeout: float,
    is_alive: Callable[[LeaseRecord], bool | None] | None = None,
    poll: float = 2.0,
) -> None:
    """Return once no live restore holds any of ``keys``; raise LeaseHeldError after ``timeout``."""
    keys = list(keys)
    deadline = time.monotonic() + timeout
    said = False
    while True:
        held = live_holders(fs, keys, is_alive=is_alive)
        if not held:
            return
        rec = held[0]
        if time.monotonic() >= deadline:
            raise LeaseHeldError(
                f"{rec.key} is being restored by {rec.holder} ({_who(rec)}, since {rec.acquired_at}); not capturing "
                "it now, since a checkpoint of a half-restored server must not become last-known-good",
                hint="the task is retried; or wait for the restore to finish ([checkpoint] capture_lease_wait "
                f"is {timeout:.0f}s)",
            )
        if not said:
            log.info("Waiting for restore %s of %s (%s) to finish before capturing", rec.holder, rec.key, _who(rec))
            said = True
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())) or 0.01)
