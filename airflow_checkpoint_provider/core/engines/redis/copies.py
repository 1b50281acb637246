"""The provider's own copies in a Redis server: spare dbs being loaded, and rollback copies.

A side-by-side restore (:mod:`.restore`) claims empty logical dbs, the *spares*. A claimed db
holds one small string key, its **marker**, whose name is new for every restore and db::

    __airflow_checkpoint_copy__:<restore id>:<16 random hex digits>

and whose value is a JSON object::

    {"format": "airflow-checkpoint-redis-copy", "state": "loading" | "rollback",
     "checkpoint_id": "ckpt-...", "restore_id": "...", "db": 0, "spare": 15,
     "created_at": "2026-12-01T08:50:46.123456Z"}

* ``loading``: the spare is being filled with the checkpoint's data for target db ``db``; a
  restore that dies half-way leaves it behind, a *leftover* (:func:`find_leftovers`);
* ``rollback``: after ``SWAPDB`` the spare holds what ``db`` held before the restore, a
  *rollback copy* (:func:`list_rollbacks`, :func:`drop_rollback`, :func:`prune_rollbacks`).

Because the name is random, no application key is ever taken for a marker: a restore never
skips, overwrites or deletes a key of the application, whatever it is called.

**The index.** The store keeps one record per marker, ``redis/copies/<server>/<restore id>.db<N>.json``
(the server's key as in :mod:`~airflow_checkpoint_provider.core.lease`, hashed), written before
the marker is set and removed when the copy is dropped; the restore's journal names the
markers too. With a store, finding the copies costs one ``GET`` per record (a record whose
marker is gone is *stale*: :func:`find_leftovers` reports it and :func:`drop_leftovers` removes
it). Without one (``store=None``), every non-empty db is scanned for the marker prefix with
``SCAN MATCH`` (about 0.5 s of server time per million keys): slower, but it also finds copies
made through another store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import (
    EngineError,
    NotFoundError,
    StoreError,
)
from airflow_checkpoint_provider.core.fs import TMP_MARK, StoreFS
from airflow_checkpoint_provider.core.lease import target_key
from airflow_checkpoint_provider.core.manifest import format_ts, parse_ts, utcnow

from .resp import Connection, RespError, connect, encode_command, info

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.store import Store

log = logging.getLogger(__name__)

PREFIX = b"__airflow_checkpoint_copy__:"
MARKER_FORMAT = "airflow-checkpoint-redis-copy"
INDEX_DIR = "redis/copies"
STATES = ("loading", "rollback")
SCAN_COUNT = 10_000
_SAMPLES = 16  # RANDOMKEY + MEMORY USAGE per copy for the memory estimate


@dataclass(frozen=True)
class Copy:
    """One db that holds a marker."""

    db: int  #: where the copy is
    marker: bytes
    state: str
    of_db: int  #: the target db it replaces (``loading``) or held before the restore (``rollback``)
    checkpoint_id: str
    restore_id: str
    created_at: str

    def age(self, now: float | None = None) -> float:
        """Seconds since the copy was made (0 when its time is unreadable)."""
        try:
            made = parse_ts(self.created_at).timestamp()
        except (TypeError, ValueError):
            return 0.0
        return max(0.0, (utcnow().timestamp() if now is None else now) - made)

    def describe(self) -> str:
        what = "rollback copy" if self.state == "rollback" else "copy being loaded"
        return f"db{self.db}: {what} of db{self.of_db} (checkpoint {self.checkpoint_id}, restore {self.restore_id})"


# --------------------------------------------------------------------------- markers


def new_marker(restore_id: str) -> bytes:
    return PREFIX + restore_id.encode() + b":" + secrets.token_hex(8).encode()


def marker_value(
    state: str, *, checkpoint_id: str, restore_id: str, db: int, spare: int, created_at: str | None = None
) -> bytes:
    body = {
        "format": MARKER_FORMAT,
        "state": state,
        "checkpoint_id": checkpoint_id,
        "restore_id": restore_id,
        "db": db,
        "spare": spare,
        "created_at": created_at or format_ts(utcnow()),
    }
    return json.dumps(body, sort_keys=True).encode()


def parse_marker(name: bytes, value: Any, db: int) -> Copy | None:
    """The copy a marker describes, or None when ``name``/``value`` is not one of ours."""
    if not isinstance(value, bytes) or not name.startswith(PREFIX):
        return None  # nil, or WRONGTYPE: not ours
    try:
        obj = json.loads(value)
        if not isinstance(obj, dict) or obj.get("format") != MARKER_FORMAT or obj.get("state") not in STATES:
            return None
        if int(obj["spare"]) != db or not name.startswith(PREFIX + str(obj["restore_id"]).encode() + b":"):
            return None  # a marker copied into another db (a capture that included it): not a claim of this db
        return Copy(
            db=db,
            marker=name,
            state=obj["state"],
            of_db=int(obj["db"]),
            checkpoint_id=str(obj.get("checkpoint_id")),
            restore_id=str(obj.get("restore_id")),
            created_at=str(obj.get("created_at")),
        )
    except (ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- the index in the store


def _index_dir(target: RedisTarget) -> str:
    return f"{INDEX_DIR}/{hashlib.sha256(target_key('redis', target.public()).encode()).hexdigest()[:24]}"


def _index_rel(target: RedisTarget, restore_id: str, db: int) -> str:
    return f"{_index_dir(target)}/{restore_id}.db{db}.json"


def index_add(
    fs: StoreFS, target: RedisTarget, *, db: int, marker: bytes, restore_id: str, checkpoint_id: str, of_db: int
) -> None:
    """Record a marker before it is set (so a kill right after leaves a trace)."""
    fs.makedirs(_index_dir(target))
    record = {
        "format": MARKER_FORMAT,
        "server": target_key("redis", target.public()),
        "db": db,
        "of_db": of_db,
        "marker": marker.decode(),
        "restore_id": restore_id,
        "checkpoint_id": checkpoint_id,
        "created_at": format_ts(utcnow()),
    }
    fs.write_bytes(_index_rel(target, restore_id, db), (json.dumps(record, sort_keys=True) + "\n").encode())


def index_remove(fs: StoreFS | None, target: RedisTarget, restore_id: str, db: int) -> None:
    if fs is None:
        return
    try:
        fs.remove(_index_rel(target, restore_id, db))
    except StoreError as exc:  # the copy is gone; a stale record is reported by find_leftovers
        log.warning("Could not remove the index record of db%d (restore %s): %s", db, restore_id, exc)


def index_records(fs: StoreFS, target: RedisTarget) -> list[dict[str, Any]]:
    """The records of ``target`` (unreadable ones are skipped with a warning)."""
    folder = _index_dir(target)
    out = []
    for name in sorted(fs.listdir(folder)):
        if not name.endswith(".json") or name.startswith(TMP_MARK):
            continue
        try:
            rec = json.loads(fs.read_bytes(f"{folder}/{name}"))
            rec["db"], rec["marker"] = int(rec["db"]), str(rec["marker"]).encode()
            if rec.get("format") != MARKER_FORMAT or not rec["marker"].startswith(PREFIX):
                raise ValueError("not a copy record")
        except (ValueError, KeyError, TypeError, StoreError) as exc:
            log.warning("Skipping the unreadable copy record %s/%s: %s", folder, name, exc)
            continue
        rec["rel"] = f"{folder}/{name}"
        out.append(rec)
    return out


# --------------------------------------------------------------------------- finding copies


def nonempty_dbs(conn: Connection) -> dict[int, int]:
    """Keys per non-empty db, from ``INFO keyspace``."""
    out = {}
    for k, v in info(conn, "keyspace").items():
        if k.startswith("db") and k[2:].isdigit():
            n = int(v.split(",")[0].split("=")[1])
            if n:
                out[int(k[2:])] = n
    return out


def find_copies(conn: Connection, *, fs: StoreFS | None = None, dbs: Iterable[int] | None = None) -> dict[int, Copy]:
    """Every db holding a marker: through the store's index (``fs``), else by scanning ``dbs``
    (default: every non-empty db). Leaves db 0 selected."""
    if fs is not None:
        return _from_index(conn, index_records(fs, conn.target))[0]
    found: dict[int, Copy] = {}
    for db in sorted(nonempty_dbs(conn) if dbs is None else dbs):
        _check(conn, conn.call_nothrow("SELECT", db), f"SELECT {db}")
        cursor, names = b"0", []
        while True:
            cursor, keys = _check(
                conn, conn.call_nothrow("SCAN", cursor, "MATCH", PREFIX + b"*", "COUNT", SCAN_COUNT), "SCAN"
            )
            names += keys
            if cursor in (b"0", 0, "0"):
                break
        for name in names:
            copy = parse_marker(name, conn.call_nothrow("GET", name), db)
            if copy is not None and (db not in found or copy.created_at > found[db].created_at):
                found[db] = copy
    conn.call_nothrow("SELECT", 0)
    return found


def _from_index(conn: Connection, records: list[dict[str, Any]]) -> tuple[dict[int, Copy], list[dict[str, Any]]]:
    """Check each record's marker on the server: (live copies by db, stale records)."""
    if not records:
        return {}, []
    conn.sendall(
        b"".join(encode_command("SELECT", r["db"]) + encode_command("GET", r["marker"]) for r in records)
        + encode_command("SELECT", 0)
    )
    found: dict[int, Copy] = {}
    stale = []
    for rec in records:
        selected, value = conn.read_reply(), conn.read_reply()
        copy = None if isinstance(selected, RespError) else parse_marker(rec["marker"], value, rec["db"])
        if copy is None or copy.restore_id != rec.get("restore_id"):
            stale.append(rec)
        elif rec["db"] not in found or copy.created_at > found[rec["db"]].created_at:
            found[rec["db"]] = copy
    conn.read_reply()
    return found, stale


def _check(conn: Connection, reply: Any, what: str) -> Any:
    if isinstance(reply, RespError):
        raise EngineError(
            f"{conn.target.label}: {what} failed: {reply.message}",
            hint="the ACL user needs +select +scan +get +dbsize on the provider's copies",
        )
    return reply


def _fs(store: Store | None) -> StoreFS | None:
    return store.fs if store is not None else None


# --------------------------------------------------------------------------- listing


def list_rollbacks(target: RedisTarget, *, store: Store | None = None) -> list[dict[str, Any]]:
    """Every copy on ``target``, newest first.

    Each entry: ``db``, ``state`` (``rollback``: the data ``of_db`` held before a restore;
    ``loading``: a side-by-side copy being loaded, or left by a restore that died),
    ``of_db``, ``checkpoint_id``, ``restore_id``, ``created_at``, ``age_seconds``, ``keys``
    (without the marker), ``memory_bytes`` (an estimate: ``MEMORY USAGE`` of a sample of
    random keys times the key count; None when ``MEMORY`` is not allowed) and ``marker``.
    """
    with connect(target) as conn:
        copies = find_copies(conn, fs=_fs(store))
        out = [_describe(conn, c) for c in copies.values()]
    out.sort(key=lambda r: (str(r["created_at"]), r["db"]), reverse=True)
    return out


def _describe(conn: Connection, copy: Copy) -> dict[str, Any]:
    conn.call("SELECT", copy.db)
    keys = max(0, int(conn.call("DBSIZE")) - 1)
    memory = _memory_estimate(conn, copy, keys)
    conn.call("SELECT", 0)
    return {
        "db": copy.db,
        "state": copy.state,
        "of_db": copy.of_db,
        "checkpoint_id": copy.checkpoint_id,
        "restore_id": copy.restore_id,
        "created_at": copy.created_at,
        "age_seconds": round(copy.age(), 1),
        "keys": keys,
        "memory_bytes": memory,
        "marker": copy.marker.decode(),
    }


def _memory_estimate(conn: Connection, copy: Copy, keys: int) -> int | None:
    if not keys:
        return 0
    conn.sendall(encode_command("RANDOMKEY") * _SAMPLES)
    sample = {k for k in (conn.read_reply() for _ in range(_SAMPLES)) if isinstance(k, bytes) and k != copy.marker}
    if not sample:
        return None
    conn.sendall(b"".join(encode_command("MEMORY", "USAGE", k, "SAMPLES", 5) for k in sample))
    sizes = [conn.read_reply() for _ in sample]
    if any(not isinstance(s, int) for s in sizes):
        return None  # MEMORY refused (ACL), or a key vanished meanwhile
    return int(sum(sizes) / len(sizes) * keys)


# --------------------------------------------------------------------------- dropping


def drop_copy(conn: Connection, copy: Copy) -> bool:
    """``FLUSHDB`` the copy's db iff its marker still says what ``copy`` says (``WATCH``); True if flushed."""
    conn.call("SELECT", copy.db)
    conn.call("WATCH", copy.marker)
    now = parse_marker(copy.marker, conn.call_nothrow("GET", copy.marker), copy.db)
    if now is None or (now.state, now.restore_id) != (copy.state, copy.restore_id):
        conn.call("UNWATCH")
        conn.call("SELECT", 0)
        return False
    conn.sendall(encode_command("MULTI") + encode_command("FLUSHDB", "ASYNC") + encode_command("EXEC"))
    replies = [conn.read_reply() for _ in range(3)]
    conn.call("SELECT", 0)
    for r in replies:
        if isinstance(r, RespError):
            raise EngineError(f"{conn.target.label}: dropping db{copy.db} failed: {r.message}")
    return replies[2] is not None


def drop_rollback(
    target: RedisTarget, db: int, *, store: Store | None = None, live_restore_ids: Iterable[str] = ()
) -> None:
    """Flush ``db`` if (and only if) it holds one of the provider's copies; refuses any other db,
    and the copies of restores in ``live_restore_ids`` (still running).

    ``WATCH`` on the marker makes the check and the ``FLUSHDB`` one step: if a restore swaps or
    rewrites the db in between, nothing is flushed and an error says so.
    """
    with connect(target) as conn:
        selected = conn.call_nothrow("SELECT", db)
        if isinstance(selected, RespError):
            raise NotFoundError(f"{target.label}: db{db} does not exist ({selected.message})")
        copies = find_copies(conn, fs=_fs(store)) if store is not None else find_copies(conn, dbs=[db])
        copy = copies.get(db)
        if copy is None:
            left = (
                [f"db{c}" for c in sorted(copies)]
                if store is not None
                else [f"db{c}" for c in sorted(find_copies(conn))]
            )
            raise NotFoundError(
                f"{target.label}: db{db} is not a copy made by a restore (it holds no "
                f"{PREFIX.decode()}* marker); refusing to flush it",
                hint=f"rollback copies: {', '.join(left)}" if left else "there are none",
            )
        if copy.restore_id in set(live_restore_ids):
            raise EngineError(
                f"{target.label}: db{db} belongs to restore {copy.restore_id}, which is still running; "
                "refusing to drop it",
                hint="wait for that restore to end",
            )
        if not drop_copy(conn, copy):
            raise EngineError(
                f"{target.label}: db{db} changed while it was being dropped; nothing was flushed",
                hint="list the rollback copies again and retry",
            )
    index_remove(_fs(store), target, copy.restore_id, db)
    log.info("Dropped %s on %s", copy.describe(), target.label)


# --------------------------------------------------------------------------- retention


def rollback_policy(
    copies: Iterable[Copy],
    *,
    keep: int | None = 1,
    max_age: float | None = 86400.0,
    live_restore_ids: Iterable[str] = (),
    now: float | None = None,
) -> list[Copy]:
    """The rollback copies the retention policy drops: per target db all but the newest ``keep``
    (None: no limit), and any older than ``max_age`` seconds (None: no limit); never a copy of
    a restore in ``live_restore_ids``, never a ``loading`` copy. Oldest first."""
    live = set(live_restore_ids)
    by_db: dict[int, list[Copy]] = {}
    for c in copies:
        if c.state == "rollback" and c.restore_id not in live:
            by_db.setdefault(c.of_db, []).append(c)
    drop = []
    for group in by_db.values():
        group.sort(key=lambda c: (c.created_at, c.db), reverse=True)
        for i, c in enumerate(group):
            if (keep is not None and i >= keep) or (max_age is not None and c.age(now) > max_age):
                drop.append(c)
    return sorted(drop, key=lambda c: (c.created_at, c.db))


def prune_rollbacks(
    target: RedisTarget,
    *,
    keep: int | None = 1,
    max_age: float | None = 86400.0,
    store: Store | None = None,
    live_restore_ids: Iterable[str] = (),
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """Drop the rollback copies beyond the retention policy (:func:`rollback_policy`); return
    them (with ``dropped``: False for a dry run, or when the copy changed meanwhile)."""
    if keep is not None and keep < 0:
        raise ValueError(f"keep must be 0 or more, not {keep!r}")
    out = []
    with connect(target) as conn:
        for copy in rollback_policy(
            find_copies(conn, fs=_fs(store)).values(), keep=keep, max_age=max_age, live_restore_ids=live_restore_ids
        ):
            row = {**_row(copy), "dropped": False}
            if not dry_run and drop_copy(conn, copy):
                index_remove(_fs(store), target, copy.restore_id, copy.db)
                row["dropped"] = True
                log.info("Expired %s on %s", copy.describe(), target.label)
            out.append(row)
    return out


def _row(copy: Copy) -> dict[str, Any]:
    row = asdict(copy)
    row["marker"] = copy.marker.decode()
    row["age_seconds"] = round(copy.age(), 1)
    return row


# --------------------------------------------------------------------------- leftovers


def find_leftovers(
    target: RedisTarget, live_restore_ids: Iterable[str], *, store: Store | None = None
) -> list[dict[str, Any]]:
    """What restores that are no longer running left behind on ``target``.

    * ``loading`` copies (a full copy of a checkpoint's db, never cut over);
    * rollback copies that hold nothing but their marker (the previous db was empty);
    * with a store: index records whose marker is gone (``"stale": True``, ``db`` as recorded).

    ``live_restore_ids``: the restores still running (their leases are live); their copies
    are never leftovers.
    """
    live = set(live_restore_ids)
    fs = _fs(store)
    out = []
    with connect(target) as conn:
        if fs is not None:
            copies, stale = _from_index(conn, index_records(fs, target))
        else:
            copies, stale = find_copies(conn), []
        for copy in copies.values():
            if copy.restore_id in live:
                continue
            conn.call("SELECT", copy.db)
            keys = max(0, int(conn.call("DBSIZE")) - 1)
            if copy.state == "loading" or keys == 0:
                out.append(
                    {
                        **_row(copy),
                        "keys": keys,
                        "stale": False,
                        "reason": "a copy being loaded by a restore that is no longer running"
                        if copy.state == "loading"
                        else "an empty rollback copy",
                    }
                )
        conn.call("SELECT", 0)
    for rec in stale:
        if rec.get("restore_id") not in live:
            out.append(
                {
                    "db": rec["db"],
                    "restore_id": rec.get("restore_id"),
                    "checkpoint_id": rec.get("checkpoint_id"),
                    "created_at": rec.get("created_at"),
                    "marker": rec["marker"].decode(),
                    "stale": True,
                    "record": rec["rel"],
                    "reason": "an index record whose marker is gone",
                }
            )
    return sorted(out, key=lambda r: (str(r.get("created_at")), r["db"]))


def drop_leftovers(
    target: RedisTarget, live_restore_ids: Iterable[str], *, store: Store | None = None, dry_run: bool = False
) -> list[str]:
    """Remove what :func:`find_leftovers` finds (nothing with ``dry_run``); one line per item."""
    live = set(live_restore_ids)
    lines = []
    with connect(target) as conn:
        for row in find_leftovers(target, live, store=store):
            if row["stale"]:
                if not dry_run and store is not None:
                    store.fs.remove(row["record"])
                lines.append(
                    f"{'would remove' if dry_run else 'removed'} the stale record of db{row['db']} "
                    f"(restore {row['restore_id']})"
                )
                continue
            copy = Copy(
                db=row["db"],
                marker=row["marker"].encode(),
                state=row["state"],
                of_db=row["of_db"],
                checkpoint_id=row["checkpoint_id"],
                restore_id=row["restore_id"],
                created_at=row["created_at"],
            )
            if dry_run:
                lines.append(f"would drop {copy.describe()}: {row['reason']}, {row['keys']} keys")
            elif drop_copy(conn, copy):
                index_remove(_fs(store), target, copy.restore_id, copy.db)
                lines.append(f"dropped {copy.describe()}: {row['reason']}, {row['keys']} keys")
            else:
                lines.append(f"left db{copy.db}: it changed while being dropped")
    for line in lines:
        log.info("%s: %s", target.label, line)
    return lines
