"""Redis server facts, health checks, and the lookups a restore makes before it starts.

* :func:`server_facts`: what a restore needs to know about a server in one round of queries
  (version, the highest RDB version it accepts for ``RESTORE``, number of logical dbs, cluster
  mode, keys per db, the provider's own copies found, :mod:`.copies`).
* :func:`health`: ``PING``, then keys per db against ``{"keys": {"0": n, ...}}`` within a
  tolerance, allowing for the keys that expired in between (``"expired"``, ``"expiring"``),
  and optionally the function libraries.

The markers of the provider's own copies, listing and dropping rollback copies, retention and
leftovers live in :mod:`.copies`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import ConnectionFailedError, EngineError
from airflow_checkpoint_provider.core.fs import StoreFS
from airflow_checkpoint_provider.core.restore import HealthCheck, within

from .copies import Copy, find_copies, nonempty_dbs
from .resp import Connection, RespError, connect, encode_command, info

COMPONENT = "redis"

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
    copies: dict[int, Copy] = field(default_factory=dict)  #: dbs holding the provider's own copies
    databases_source: str = "CONFIG GET databases"

    def keys(self, db: int) -> int:
        """Keys of ``db`` without its marker."""
        return self.keyspace.get(db, 0) - (1 if db in self.copies else 0)


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


def server_facts(conn: Connection, *, fs: StoreFS | None = None) -> ServerFacts:
    """The facts of the module docstring; the copies through the store's index (``fs``), else by
    scanning every non-empty db."""
    server = info(conn, "server")
    version = server.get("redis_version", "")
    cluster = info(conn, "cluster").get("cluster_enabled", "0") == "1"
    keyspace = nonempty_dbs(conn)
    if cluster:
        databases, source = 1, "cluster mode"
    else:
        databases, source = db_count(conn)
    return ServerFacts(
        version, max_rdb_version(version), databases, cluster, keyspace, find_copies(conn, fs=fs), source
    )


def db_sizes(conn: Connection, dbs: list[int], markers: dict[int, bytes] | None = None) -> dict[int, int]:
    """Keys per db, not counting the marker named in ``markers`` (one pipeline; leaves the last db selected)."""
    markers = markers or {}
    parts = [
        encode_command("SELECT", d)
        + encode_command("DBSIZE")
        + (encode_command("EXISTS", markers[d]) if d in markers else b"")
        for d in dbs
    ]
    conn.sendall(b"".join(parts))
    out = {}
    for d in dbs:
        replies = [conn.read_reply() for _ in range(3 if d in markers else 2)]
        for r in replies:
            if isinstance(r, RespError):
                raise EngineError(
                    f"{conn.target.label}: counting the keys of db{d} failed: {r.message}",
                    hint="the ACL user needs +select +dbsize +exists",
                )
        out[d] = replies[1] - (replies[2] if d in markers else 0)
    return out


# --------------------------------------------------------------------------- health


def health(
    target: RedisTarget,
    expectations: dict[str, Any],
    *,
    tolerance: float = 0.0,
    expiring: Mapping[int, Sequence[int]] | None = None,
) -> list[HealthCheck]:
    """PING, then keys per db against the checkpoint's counts; the function libraries.

    ``expectations["keys"]``: the checkpoint's keys per db (its manifest fingerprints). Keys
    known to be absent are subtracted: ``expectations["expired"]`` (per db: keys whose TTL ran
    out before the restore loaded them) and ``["duplicates"]`` (keys a logical capture listed
    twice). ``expiring`` (per db: absolute expiry times in ms of restored keys) allows for keys
    whose TTL ran out since: the count may be lower by those due by the server's ``TIME``. Each
    check reports what it allowed for in its detail. ``tolerance`` is a relative difference
    allowed on top. ``expectations["functions"]`` (a count) or ``["libraries"]`` (names): the
    function libraries.
    """
    checks: list[HealthCheck] = []
    try:
        conn = connect(target)
    except EngineError as exc:
        return [HealthCheck(COMPONENT, "ping", False, detail=exc.message)]
    with conn:
        try:
            pong = conn.call_nothrow("PING")
            checks.append(HealthCheck(COMPONENT, "ping", pong == "PONG", "PONG", str(pong), detail=target.label))
            if isinstance(pong, RespError):
                return checks
            expected = per_db(expectations.get("keys"))
            expired, dups = per_db(expectations.get("expired")), per_db(expectations.get("duplicates"))
            now = 0
            if expiring:
                secs, usecs = conn.call("TIME")
                now = int(secs) * 1000 + int(usecs) // 1000 + 1000
            sizes = db_sizes(conn, sorted(expected)) if expected else {}
            for db, want in sorted(expected.items()):
                base = want - expired.get(db, 0) - dups.get(db, 0)
                since = sum(1 for e in (expiring or {}).get(db, ()) if e <= now)
                got = sizes[db]
                ok = base - since <= got <= base or within(base, got, tolerance)
                checks.append(
                    HealthCheck(
                        COMPONENT,
                        f"db{db} keys",
                        ok,
                        base,
                        got,
                        detail=_keys_detail(want, expired.get(db, 0), dups.get(db, 0), since, base - got, tolerance),
                    )
                )
            checks += _function_checks(conn, expectations)
        except EngineError as exc:
            checks.append(HealthCheck(COMPONENT, "query", False, detail=exc.message))
    return checks


def _keys_detail(want: int, expired: int, dups: int, since: int, short: int, tolerance: float) -> str:
    parts = []
    if expired or dups or since:
        parts.append(f"the checkpoint holds {want}")
    if expired:
        parts.append(f"{expired} had expired before the restore")
    if dups:
        parts.append(f"{dups} were listed twice by the capture")
    if since:
        parts.append(f"{short if 0 <= short <= since else f'up to {since}'} expired since")
    if short and not 0 <= short <= since:
        parts.append(f"tolerance {tolerance:g}")
    return "; ".join(parts)


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
        return [
            HealthCheck(
                COMPONENT,
                "function libraries",
                not missing,
                sorted(names),
                have,
                detail=f"missing: {', '.join(missing)}" if missing else "",
            )
        ]
    return [HealthCheck(COMPONENT, "function libraries", len(have) >= int(count or 0), int(count or 0), len(have))]


def library_name(entry: Any) -> str:
    """The library name of one ``FUNCTION LIST`` entry (a flat [key, value, ...] list)."""
    if isinstance(entry, list):
        for k, v in zip(entry[::2], entry[1::2], strict=False):
            if k in (b"library_name", "library_name"):
                return v.decode() if isinstance(v, bytes) else str(v)
    return "?"


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
            raise ConnectionFailedError(
                f"{target.label} did not come back within {timeout:g}s: {last}",
                hint="check the restart command and the server log",
            )
        time.sleep(0.2)
