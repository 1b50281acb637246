"""Sample application state for the demo and the tests, and exact readers of that state.

Seeders write a small but varied application into real servers; the ``state_*``
readers return everything needed to compare two states exactly: every table's rows,
every Redis key with its type, value and TTL, every search document.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg
import redis as redis_py

# ---------------------------------------------------------------------------------- PostgreSQL


def pg_connect(pg: dict[str, Any], dbname: str) -> psycopg.Connection:
    return psycopg.connect(
        host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname=dbname, autocommit=True
    )


def seed_postgres(pg: dict[str, Any], dbname: str, *, customers: int = 2000, orders: int = 8000) -> None:
    """(Re)create ``dbname`` with several tables, a second schema, FKs, a view and a sequence."""
    with pg_connect(pg, "postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    with pg_connect(pg, dbname) as conn:
        conn.execute("""
            CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL UNIQUE, created date NOT NULL,
                                    profile jsonb);
            CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                                 total numeric(10,2) NOT NULL, status text NOT NULL, note text);
            CREATE INDEX orders_status ON orders (status);
            CREATE TABLE attachments (id int PRIMARY KEY, order_id bigint REFERENCES orders, body bytea);
            CREATE VIEW paid_orders AS SELECT * FROM orders WHERE status = 'paid';
            CREATE SCHEMA audit;
            CREATE TABLE audit.events (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz NOT NULL,
                                       what text);
        """)
        conn.execute(
            "INSERT INTO customers SELECT g, 'user' || g || '@example.com', date '2026-01-01' + g %% 300, "
            "jsonb_build_object('tier', g %% 3, 'tags', jsonb_build_array('a', g)) "
            "FROM generate_series(1, %s) g",
            (customers,),
        )
        conn.execute(
            "INSERT INTO orders (customer_id, total, status, note) SELECT 1 + g %% %s, (g %% 997) * 1.25, "
            "(ARRAY['new','paid','shipped'])[1 + g %% 3], CASE WHEN g %% 7 = 0 THEN NULL ELSE 'n' || g END "
            "FROM generate_series(1, %s) g" % (customers, orders)
        )
        conn.execute(
            "INSERT INTO attachments SELECT g, g, decode(md5(g::text), 'hex') FROM generate_series(1, %s) g"
            % min(100, orders)
        )
        conn.execute(
            "INSERT INTO audit.events (at, what) SELECT timestamptz '2026-11-01 00:00+00' + g * interval "
            "'1 minute', 'event ' || g FROM generate_series(1, 500) g"
        )


def state_postgres(pg: dict[str, Any], dbname: str) -> dict[str, Any]:
    """Every user table's full contents (ordered rows as text), plus the sequences' positions."""
    with pg_connect(pg, dbname) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
            "'information_schema') ORDER BY 1, 2"
        ).fetchall()
        out: dict[str, Any] = {}
        for schema, table in tables:
            rows = conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t ORDER BY 1').fetchall()
            out[f"{schema}.{table}"] = [r[0] for r in rows]
        seqs = conn.execute(
            "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences ORDER BY 1"
        ).fetchall()
        out["__sequences__"] = dict(seqs)
    return out


# ---------------------------------------------------------------------------------- Redis


def redis_client(rd: dict[str, Any], db: int = 0) -> redis_py.Redis:
    return redis_py.Redis(
        host=rd["host"],
        port=rd["port"],
        password=rd.get("password"),
        username=rd.get("username"),
        db=db,
        **rd.get("tls", {}),
    )  # tls: redis-py ssl_* options


def seed_redis(rd: dict[str, Any], *, flush: bool = True) -> None:
    """Every value type and encoding, keys with TTLs, streams with consumer groups, two dbs, a function."""
    r = redis_client(rd, 0)
    if flush:
        r.flushall()
        try:
            r.function_flush()
        except redis_py.ResponseError:
            pass
    p = r.pipeline()
    for i in range(300):
        p.set(f"session:{i}", f"token-{i}", ex=3600 + i)
    p.set("counter", 42)
    p.set("big:text", "lorem ipsum dolor " * 2000)  # LZF-compressible
    p.set("binary", bytes(range(256)))
    p.rpush("list:small", "a", "b", "c")
    p.rpush("list:big", *[f"item-{i}" * 3 for i in range(2000)])
    p.sadd("set:ints", *range(100))
    p.sadd("set:small", "x", "y", "z")
    p.sadd("set:big", *[f"member-{i}" for i in range(1000)])
    p.zadd("zset:small", {"ada": 1.5, "grace": 2})
    p.zadd("zset:big", {f"player-{i}": i * 0.5 for i in range(500)})
    p.hset("hash:small", mapping={"name": "Ada", "plan": "pro"})
    p.hset("hash:big", mapping={f"field-{i}": "v" * (i % 80) for i in range(1000)})
    p.pexpire("hash:small", 7_200_000)
    for i in range(50):
        p.xadd("stream:events", {"type": "signup", "user": str(i)}, id=f"{1_700_000_000_000 + i}-0")
    p.execute()
    r.xgroup_create("stream:events", "mailer", id="0")
    r.xgroup_create("stream:events", "audit", id="$")
    r.xreadgroup("mailer", "worker-1", {"stream:events": ">"}, count=10)  # 10 pending entries
    r.xack("stream:events", "mailer", f"{1_700_000_000_000}-0")
    r.function_load(
        "#!lua name=checkpointlib\nredis.register_function('hello', function() return 'hi' end)", replace=True
    )
    r1 = redis_client(rd, 1)
    r1.set("feature:dark-mode", "on")
    r1.hset("config", mapping={"theme": "dark"})
    r1.expire("config", 86400)


def state_redis(rd: dict[str, Any], dbs: range = range(16)) -> dict[int, dict[bytes, tuple]]:
    """Every key of every non-empty db: (type, exact value, expiry: absolute unix ms, or -1)."""
    out: dict[int, dict[bytes, tuple]] = {}
    for db in dbs:
        r = redis_client(rd, db)
        keys = list(r.scan_iter(count=1000))
        if not keys:
            continue
        state = {}
        for key in keys:
            kind = r.type(key).decode()
            if kind == "string":
                value: Any = r.get(key)
            elif kind == "list":
                value = tuple(r.lrange(key, 0, -1))
            elif kind == "set":
                value = frozenset(r.smembers(key))
            elif kind == "zset":
                value = tuple(r.zrange(key, 0, -1, withscores=True))
            elif kind == "hash":
                value = tuple(sorted(r.hgetall(key).items()))
            elif kind == "stream":
                groups = [(g["name"], g["last-delivered-id"], g["pending"]) for g in r.xinfo_groups(key)]
                value = (tuple((i, tuple(sorted(f.items()))) for i, f in r.xrange(key)), tuple(sorted(groups)))
            else:
                value = r.dump(key)
            state[key] = (kind, value, _expiry(r, key))
        out[db] = state
    return out


def _expiry(r: Any, key: bytes) -> int:
    """When ``key`` expires, as absolute unix ms (Redis 7: PEXPIRETIME), or -1: states taken at
    different times compare exactly. Older servers only tell the remaining ms (PTTL)."""
    try:
        return int(r.execute_command("PEXPIRETIME", key))
    except redis_py.ResponseError:
        return int(r.pttl(key))


def same_redis_state(a: dict, b: dict, ttl_tolerance_ms: int = 120_000) -> list[str]:
    """Differences between two redis states (TTLs compared within a tolerance)."""
    diffs = []
    for db in sorted(set(a) | set(b)):
        ka, kb = a.get(db, {}), b.get(db, {})
        for key in sorted(set(ka) | set(kb)):
            if key not in ka or key not in kb:
                diffs.append(f"db{db} {key!r}: only in {'first' if key in ka else 'second'}")
                continue
            (ta, va, xa), (tb, vb, xb) = ka[key], kb[key]
            if (ta, va) != (tb, vb):
                diffs.append(f"db{db} {key!r}: {ta} value differs")
            if (xa < 0) != (xb < 0) or abs(xa - xb) > ttl_tolerance_ms:
                diffs.append(f"db{db} {key!r}: ttl {xa} vs {xb}")
    return diffs


# ---------------------------------------------------------------------------------- search


def seed_search(url: str, indices: dict[str, int] | None = None, *, prefix: str = "") -> list[str]:
    """Indices with ``n`` docs each (one with nested docs); returns the index names."""
    indices = indices or {"products": 120, "reviews": 300, "users": 50}
    names = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for base, n in indices.items():
            index = f"{prefix}{base}"
            http.delete(f"/{index}")
            mapping = {
                "properties": {"n": {"type": "integer"}, "name": {"type": "keyword"}, "parts": {"type": "nested"}}
            }
            http.put(
                f"/{index}", json={"settings": {"number_of_shards": 1, "number_of_replicas": 0}, "mappings": mapping}
            ).raise_for_status()
            body = "".join(
                json.dumps({"index": {"_id": str(i)}})
                + "\n"
                + json.dumps({"n": i, "name": f"{base}-{i}", "parts": [{"p": i}, {"p": i + 1}]})
                + "\n"
                for i in range(n)
            )
            http.post(
                f"/{index}/_bulk?refresh=true", content=body, headers={"Content-Type": "application/x-ndjson"}
            ).raise_for_status()
            names.append(index)
    return names


def state_search(url: str, indices: list[str]) -> dict[str, dict[str, Any] | None]:
    """Every document (id -> source) of each index; None for an index that does not exist."""
    out = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for index in indices:
            resp = http.post(f"/{index}/_search", json={"size": 10000, "query": {"match_all": {}}})
            if resp.status_code == 404:
                out[index] = None  # the index does not exist
                continue
            resp.raise_for_status()
            out[index] = {h["_id"]: h["_source"] for h in resp.json()["hits"]["hits"]}
    return out
