"""Redis server facts, restore markers, health checks and rollback copies.

* :func:`server_facts`: what a restore needs to know about a server in one round of queries
  (version, the highest RDB version it accepts for ``RESTORE``, number of logical dbs, cluster
  mode, keys per db, the restore markers found).
* **Markers.** A db that a restore owns holds one small string key, :data:`MARKER`
  (``__airflow_checkpoint_rollback__``), whose value is a JSON object::

      {"format": "airflow-checkpoint-redis-marker", "state": "loading" | "rollback",
       "checkpoint_id": ..., "restore_id": ..., "db": <the db it belongs to>, "created_at": ...}

  ``loading``: a spare db being filled side by side (``db`` is the target it will replace); a
  restore that died half-way leaves it behind. ``rollback``: after ``SWAPDB`` the spare holds
  what ``db`` held before the restore. Key counts (health, verification) never count the marker.
* :func:`health`: ``PING``, then keys per db against ``{"keys": {"0": n, ...}}`` within a
  tolerance, and optionally the function libraries.
* :func:`list_rollbacks` / :func:`drop_rollback`: find and drop the dbs holding a marker.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import ConnectionFailedError, EngineError, NotFoundError
from airflow_checkpoint_provider.core.restore import HealthCheck, within

from .resp import Connection, RespError, connect, encode_command, info

COMPONENT = "redis"
MARKER = b"__airflow_checkpoint_rollback__"
MARKER_FORMAT = "airflow-checkpoint-redis-marker"

#: (major, minor) of the server -> highest RDB version its RESTORE accepts (rdb.h RDB_VERSION).
_RDB_BY_SERVER = ((7, 4, 12), (7, 2, 11), (7, 0, 10), (5, 0, 9), (4, 0, 8), (3, 2, 7), (2, 6, 6))


def parse_version(version: str) -> tuple[int, int] | None:
    parts = (version or "").split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None


def max_rdb_version(version: str) -> int | None:
    """The highest RDB (DUMP payload) version a server of ``version`` accepts, None if unknown.

    7.0 -> 10, 7.2 -> 11, 7.4 and 8.x -> 12 (Valkey 7.2/8 report redis_version 7.2.x -> 11).
    """
    parsed = parse_version(version)
    if parsed is None:
        return None
    for major, minor, rdb in _RDB_BY_SERVER:
        if parsed >= (major, minor):
            return rdb
    return None


def server_for_rdb(rdb_version: int) -> str:
    """The oldest Redis release writing ``rdb_version`` (for messages)."""
    for major, minor, rdb in reversed(_RDB_BY_SERVER):
        if rdb >= rdb_version:
            return f"{major}.{minor}"
    return "a release newer than 7.4"


def per_db(counts: dict[str, Any] | None) -> dict[int, int]:
    """``{"0": 5, "db1": 2}`` (fingerprint style) -> ``{0: 5, 1: 2}``."""
    out: dict[int, int] = {}
    for k, v in (counts or {}).items():
        name = str(k)
        name = name[2:] if name.startswith("db") else name
        if name.isdigit():
            out[int(name)] = int(v)
    return out


# --------------------------------------------------------------------------- server facts


@dataclass
class ServerFacts:
    version: str
    max_rdb: int | None
    databases: int
    cluster: bool
    keyspace: dict[int, int]  #: non-empty dbs -> keys (markers included)
    markers: dict[int, dict[str, Any]] = field(default_factory=dict)
    databases_source: str = "CONFIG GET databases"

    def keys(self, db: int) -> int:
        """Keys of ``db`` without its marker."""
        return self.keyspace.get(db, 0) - (1 if db in self.markers else 0)


def db_count(conn: Connection) -> tuple[int, str]:
    """``CONFIG GET databases``; if CONFIG is refused, the highest index ``SELECT`` accepts + 1."""
    reply = conn.call_nothrow("CONFIG", "GET", "databases")
    if isinstance(reply, list) and len(reply) == 2:
        return int(reply[1]), "CONFIG GET databases"
    lo, hi = 1, 1
    while hi < 1 << 20 and not isinstance(conn.call_nothrow("SELECT", hi), RespError):
        lo, hi = hi + 1, hi * 2
    while lo < hi:  # lo = a known count, hi = an index SELECT refused
        mid = (lo + hi) // 2
        if isinstance(conn.call_nothrow("SELECT", mid), RespError):
            hi = mid
        else:
            lo = mid + 1
    conn.call_nothrow("SELECT", 0)
    return lo, "probing SELECT (CONFIG GET is not allowed)"


def server_facts(conn: Connection) -> ServerFacts:
    server = info(conn, "server")
    version = server.get("redis_version", "")
    cluster = info(conn, "cluster").get("cluster_enabled", "0") == "1"
    keyspace = {int(k[2:]): int(v.split(",")[0].split("=")[1])
                for k, v in info(conn, "keyspace").items() if k.startswith("db") and k[2:].isdigit()}
    keyspace = {d: n for d, n in keyspace.items() if n}
    if cluster:
        databases, source = 1, "cluster mode"
    else:
        databases, source = db_count(conn)
    return ServerFacts(version, max_rdb_version(version), databases, cluster, keyspace,
                       read_markers(conn, sorted(keyspace)), source)


def read_markers(conn: Connection, dbs: list[int]) -> dict[int, dict[str, Any]]:
    """The parsed marker of every db in ``dbs`` that has one (leaves db 0 selected)."""
    if not dbs:
        return {}
    conn.sendall(b"".join(encode_command("SELECT", d) + encode_command("GET", MARKER) for d in dbs)
                 + encode_command("SELECT", 0))
    out: dict[int, dict[str, Any]] = {}
    for d in dbs:
        selected, value = conn.read_reply(), conn.read_reply()
        if isinstance(selected, RespError):
            raise EngineError(f"{conn.target.label}: SELECT {d} failed: {selected.message}")
        marker = parse_marker(value)
        if marker is not None:
            out[d] = marker
    conn.read_reply()
    return out


def parse_marker(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, bytes):  # nil, or WRONGTYPE: a key of the application, not ours
        return None
    try:
        obj = json.loads(value)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj.get("format") == MARKER_FORMAT else None


def marker_value(state: str, *, checkpoint_id: str, restore_id: str, db: int, created_at: str,
                 **extra: Any) -> bytes:
    body = {"format": MARKER_FORMAT, "state": state, "checkpoint_id": checkpoint_id, "restore_id": restore_id,
            "db": db, "created_at": created_at, **extra}
    return json.dumps(body, sort_keys=True).encode()


def db_sizes(conn: Connection, dbs: list[int]) -> dict[int, int]:
    """Keys per db, not counting a marker (one pipeline; leaves the last db selected)."""
    parts = [encode_command("SELECT", d) + encode_command("DBSIZE") + encode_command("EXISTS", MARKER) for d in dbs]
    conn.sendall(b"".join(parts))
    out = {}
    for d in dbs:
        replies = [conn.read_reply() for _ in range(3)]
        for r in replies:
            if isinstance(r, RespError):
                raise EngineError(f"{conn.target.label}: counting the keys of db{d} failed: {r.message}",
                                  hint="the ACL user needs +select +dbsize +exists")
        out[d] = replies[1] - replies[2]
    return out


# --------------------------------------------------------------------------- health


def health(target: RedisTarget, expectations: dict[str, Any], *, tolerance: float = 0.0) -> list[HealthCheck]:
    """PING, then keys per db (``expectations["keys"]``) within ``tolerance``; with
    ``expectations["functions"]`` (a count) or ``["libraries"]`` (names), the function libraries."""
    checks: list[HealthCheck] = []
    try:
        conn = connect(target)
    except EngineError as exc:
        return [HealthCheck(COMPONENT, "ping", False, detail=exc.message)]
    with conn:
        try:
            pong = conn.call_nothrow("PING")
            checks.append(HealthCheck(COMPONENT, "ping", pong == "PONG", "PONG", str(pong),
                                      detail=target.label))
            if isinstance(pong, RespError):
                return checks
            expected = per_db(expectations.get("keys"))
            sizes = db_sizes(conn, sorted(expected)) if expected else {}
            for db, want in sorted(expected.items()):
                got = sizes[db]
                checks.append(HealthCheck(COMPONENT, f"db{db} keys", within(want, got, tolerance), want, got,
                                          detail="" if got == want else f"tolerance {tolerance:g}"))
            checks += _function_checks(conn, expectations)
        except EngineError as exc:
            checks.append(HealthCheck(COMPONENT, "query", False, detail=exc.message))
    return checks


def _function_checks(conn: Connection, expectations: dict[str, Any]) -> list[HealthCheck]:
    names = expectations.get("libraries")
    count = expectations.get("functions")
    if not names and not count:
        return []
    libs = conn.call_nothrow("FUNCTION", "LIST")
    if isinstance(libs, RespError):
        return [HealthCheck(COMPONENT, "functions", False, detail=f"FUNCTION LIST failed: {libs.message}")]
    have = sorted(library_name(lib) for lib in libs)
    if names:
        missing = sorted(set(names) - set(have))
        return [HealthCheck(COMPONENT, "function libraries", not missing, sorted(names), have,
                            detail=f"missing: {', '.join(missing)}" if missing else "")]
    return [HealthCheck(COMPONENT, "function libraries", len(have) >= int(count), int(count), len(have))]


def library_name(entry: Any) -> str:
    """The library name of one ``FUNCTION LIST`` entry (a flat [key, value, ...] list)."""
    if isinstance(entry, list):
        for k, v in zip(entry[::2], entry[1::2]):
            if k in (b"library_name", "library_name"):
                return v.decode() if isinstance(v, bytes) else str(v)
    return "?"


# --------------------------------------------------------------------------- rollback copies


def list_rollbacks(target: RedisTarget) -> list[dict[str, Any]]:
    """Every db holding a restore marker, newest first: ``db``, ``state`` (``rollback``: the data
    ``of_db`` held before a restore; ``loading``: a side-by-side copy left by an interrupted
    restore), ``checkpoint_id``, ``created_at``, ``keys`` (without the marker)."""
    with connect(target) as conn:
        facts = server_facts(conn)
    out = []
    for db, marker in facts.markers.items():
        out.append({"db": db, "state": marker.get("state"), "of_db": marker.get("db"),
                    "checkpoint_id": marker.get("checkpoint_id"), "created_at": marker.get("created_at"),
                    "restore_id": marker.get("restore_id"), "keys": facts.keys(db)})
    out.sort(key=lambda r: (str(r["created_at"]), r["db"]), reverse=True)
    return out


def drop_rollback(target: RedisTarget, db: int) -> None:
    """Flush ``db`` if (and only if) it holds a restore marker; refuses any other db.

    ``WATCH`` on the marker makes the check and the ``FLUSHDB`` one step: if a restore swaps or
    rewrites the db in between, nothing is flushed and an error says so.
    """
    with connect(target) as conn:
        selected = conn.call_nothrow("SELECT", db)
        if isinstance(selected, RespError):
            raise NotFoundError(f"{target.label}: db{db} does not exist ({selected.message})")
        conn.call("WATCH", MARKER)
        marker = parse_marker(conn.call_nothrow("GET", MARKER))
        if marker is None:
            conn.call("UNWATCH")
            left = [f"db{r['db']}" for r in list_rollbacks(target)]
            raise NotFoundError(f"{target.label}: db{db} is not a rollback copy (it has no {MARKER.decode()} "
                                "marker); refusing to flush it",
                                hint=f"rollback copies: {', '.join(left)}" if left else "there are none")
        conn.sendall(encode_command("MULTI") + encode_command("FLUSHDB", "ASYNC") + encode_command("EXEC"))
        replies = [conn.read_reply() for _ in range(3)]
        if replies[2] is None:
            raise EngineError(f"{target.label}: db{db} changed while it was being dropped; nothing was flushed",
                              hint="list the rollback copies again and retry")
        for r in replies:
            if isinstance(r, RespError):
                raise EngineError(f"{target.label}: dropping db{db} failed: {r.message}")


def wait_ready(target: RedisTarget, timeout: float) -> str:
    """Wait until the server answers ``PING`` (not ``-LOADING``); return its version."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with connect(target, timeout=5.0) as conn:
                reply = conn.call_nothrow("PING")
                if reply == "PONG":
                    return info(conn, "server").get("redis_version", "")
                last = reply.message if isinstance(reply, RespError) else str(reply)
        except EngineError as exc:
            last = exc.message
        if time.monotonic() > deadline:
            raise ConnectionFailedError(f"{target.label} did not come back within {timeout:g}s: {last}",
                                        hint="check the restart command and the server log")
        time.sleep(0.2)
