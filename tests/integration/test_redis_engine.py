"""Redis capture against real servers: rdb and logical modes, auto fallback, errors, write fence.

Tests that change data or ACLs run on private servers (``services_module.start``); the
shared session server is only read.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from typing import Any

import pytest
import redis
import zstandard
from redis.backoff import NoBackoff
from redis.retry import Retry

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines import redis as engine
from airflow_checkpoint_provider.core.engines.redis import rdb as rdb_module
from airflow_checkpoint_provider.core.engines.redis import replication
from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    CaptureError,
    CheckpointError,
    ConnectionFailedError,
)

pytestmark = pytest.mark.integration

SEEDED_DBS = (0, 3)
LUA_LIBRARY = "#!lua name=ckptlib\nredis.register_function('ckpt_echo', function(keys, args) return args[1] end)"


# --------------------------------------------------------------------------- seeding and truth


def seed_every_type(clients: dict[int, redis.Redis]) -> None:
    """Every value type and encoding Redis 7.0 writes, keys with TTLs and a function, in two dbs."""
    r, r3 = clients[0], clients[3]
    r.flushall()
    r.set("s:raw", "hello world")
    r.set("s:int", 12345)
    r.set("s:neg", -7)
    r.set("s:int64", 2**40)
    r.set("s:lzf", "abc" * 500)  # long and compressible: LZF in the RDB
    r.set("s:random", secrets.token_bytes(300_000))  # incompressible, spans many read chunks
    r.set(b"s:\x00bin\xff", b"\x00\x01\x02")
    r.set("s:empty", "")
    r.rpush("l:small", "a", "b", "c")  # listpack in a quicklist node
    r.rpush("l:big", *[f"item-{i}-" + "x" * (i % 50) for i in range(5000)])  # many quicklist nodes
    r.sadd("set:int", *range(100))  # intset
    r.sadd("set:small", "a", "b", "c")  # hashtable on 7.0 (listpack on 7.2+)
    r.sadd("set:big", *[f"member-{i}" for i in range(1000)])  # hashtable
    r.zadd("z:small", {"a": 1, "b": 2.5})  # listpack
    r.zadd("z:big", {**{f"m{i}": i / 7 for i in range(500)}, "inf": float("inf"), "ninf": float("-inf")})  # skiplist
    r.hset("h:small", mapping={"f1": "v1", "f2": "2"})  # listpack
    r.hset("h:big", mapping={f"field{i}": f"value{i}" for i in range(1000)})  # hashtable
    r.hset("h:longval", "f", "x" * 100)  # hashtable: value longer than hash-max-listpack-value
    ids = [r.xadd("st", {"n": i, "payload": "p" * (i % 5)}) for i in range(60)]
    r.xgroup_create("st", "g1", id="0")
    r.xreadgroup("g1", "c1", {"st": ">"}, count=10)  # 10 pending entries
    r.xack("st", "g1", ids[0], ids[1])
    r.xreadgroup("g1", "c2", {"st": ">"}, count=3)
    r.xgroup_create("st", "g2", id="$")
    r.xgroup_createconsumer("st", "g2", "idle-consumer")
    r.xadd("st:trimmed", {"a": 1})
    r.xadd("st:trimmed", {"a": 2})
    r.xtrim("st:trimmed", maxlen=1)
    r.set("ttl:ex", "v", ex=3600)
    r.expire("h:small", 7200)
    r.pexpire("l:small", 9_999_999)
    r.expire("z:big", 86400)
    r.function_load(LUA_LIBRARY, replace=True)
    r3.set("db3:k", "v")
    r3.hset("db3:h", mapping={"a": "1", "b": "2"})
    r3.set("db3:ttl", "x", px=500_000)
    r3.sadd("db3:set", "x", "y")


def server_truth(clients: dict[int, redis.Redis]) -> dict[str, Any]:
    """What the server holds, independently of our code: DBSIZE, SCAN + TYPE, PTTL."""
    truth: dict[str, Any] = {"keys": {}, "types": {}, "histogram": {}, "expires": {}, "expire_ms": {}}
    for db, c in clients.items():
        if not c.dbsize():
            continue
        truth["keys"][str(db)] = c.dbsize()
        secs, usecs = c.time()
        now_ms = secs * 1000 + usecs // 1000
        n_exp = 0
        for key in c.scan_iter(count=1000):
            t = c.type(key).decode()
            truth["types"][(db, key)] = t
            truth["histogram"][t] = truth["histogram"].get(t, 0) + 1
            pttl = c.pttl(key)
            truth["expire_ms"][(db, key)] = now_ms + pttl if pttl >= 0 else None
            n_exp += pttl >= 0
        if n_exp:
            truth["expires"][str(db)] = n_exp
    truth["histogram"] = dict(sorted(truth["histogram"].items()))
    return truth


# --------------------------------------------------------------------------- fixtures


def _clients(info: dict[str, Any], dbs=SEEDED_DBS) -> dict[int, redis.Redis]:
    return {db: redis.Redis(host=info["host"], port=info["port"], password=info["password"], db=db) for db in dbs}


def _target(info: dict[str, Any], **kw: Any) -> RedisTarget:
    kw.setdefault("password", info["password"])
    return RedisTarget(host=info["host"], port=int(info["port"]), **kw)


@pytest.fixture(scope="module")
def servers(services_module, tmp_path_factory):
    """Two private servers: ``a`` seeded with every type, ``b`` empty (the RESTORE target)."""
    dirs = [tmp_path_factory.mktemp("redis-a"), tmp_path_factory.mktemp("redis-b")]
    started = []
    try:
        for d in dirs:
            started.append(services_module.start(d, only=["redis"])["redis"])
        a, b = started
        clients = _clients(a)
        clients[0].config_set("repl-diskless-sync-delay", 0)  # no 5 s wait for more replicas
        seed_every_type(clients)
        yield {"a": a, "b": b, "truth": server_truth(clients)}
    finally:
        for d in dirs:
            services_module.stop(d)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "store", create=True, lock_timeout=30)


@pytest.fixture
def staging(store):
    return store.staging(staging_key("redis_test", secrets.token_hex(4)))


@pytest.fixture
def nosync_user(servers):
    """An ACL user that may do everything but replicate; yields (name, password)."""
    admin = _clients(servers["a"], (0,))[0]
    password = secrets.token_hex(12)
    admin.execute_command(
        "ACL", "SETUSER", "nosync", "reset", "on", f">{password}", "~*", "&*", "+@all", "-sync", "-psync"
    )
    yield "nosync", password
    admin.execute_command("ACL", "DELUSER", "nosync")


def value_of(c: redis.Redis, key: bytes, kind: str) -> Any:
    """A key's value in a form that does not depend on encoding or hash-table order."""
    if kind == "string":
        return c.get(key)
    if kind == "list":
        return c.lrange(key, 0, -1)
    if kind == "set":
        return c.smembers(key)
    if kind == "zset":
        return c.zrange(key, 0, -1, withscores=True)
    if kind == "hash":
        return c.hgetall(key)
    if kind == "stream":
        groups = sorted(c.xinfo_groups(key), key=lambda g: g["name"])
        return (
            c.xrange(key),
            groups,
            [
                (
                    g["name"],
                    [
                        (p["message_id"], p["consumer"], p["times_delivered"])
                        for p in c.xpending_range(key, g["name"], "-", "+", 1000)
                    ],
                    sorted((x["name"], x["pending"]) for x in c.xinfo_consumers(key, g["name"])),
                )
                for g in groups
            ],
        )
    raise AssertionError(kind)


def _read_staged(staging, name: str) -> bytes:
    with staging.open_data(name) as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


def _no_secret(caplog, excinfo_or_text: Any, *secrets_: str) -> None:
    text = (
        caplog.text
        + "\n"
        + "\n".join(logging.Formatter().format(r) + str(r.args) for r in caplog.records)
        + "\n"
        + str(excinfo_or_text)
    )
    for s in secrets_:
        assert s not in text


# --------------------------------------------------------------------------- rdb mode


def test_rdb_capture_fingerprints_equal_the_server(servers, staging, caplog):
    caplog.set_level(logging.DEBUG, logger="airflow_checkpoint_provider")
    [art] = engine.capture(_target(servers["a"]), staging, mode="rdb")
    truth = servers["truth"]
    assert (art.name, art.store, art.kind, art.engine) == ("redis/dump.rdb", "redis", "redis/rdb", "redis")
    assert art.engine_version == servers["a"]["version"]
    assert art.fingerprints == {
        "rdb_version": 10,
        "keys": truth["keys"],
        "expires": truth["expires"],
        "types": truth["histogram"],
        "functions": 1,
    }
    assert art.meta["framing"] == "eof" and art.meta["checksum"] == "crc64"
    assert art.capture_start <= art.capture_end
    assert staging.artifacts() == [art]
    _no_secret(caplog, "", servers["a"]["password"])


def test_rdb_entries_match_the_server_and_restore(servers, staging):
    [art] = engine.capture(_target(servers["a"]), staging, mode="rdb")
    data = _read_staged(staging, art.name)
    assert len(data) == art.raw_size and data[:9] == b"REDIS0010"
    truth = servers["truth"]
    with staging.open_data(art.name) as f:
        parser = engine.RdbParser(zstandard.ZstdDecompressor().stream_reader(f))
        entries = [r for r in parser.records() if isinstance(r, engine.Entry)]
    assert {(e.db, e.key): e.type_name for e in entries} == truth["types"]
    for e in entries:
        expected = truth["expire_ms"][(e.db, e.key)]
        assert (e.expire_ms is None) == (expected is None), e.key
        if expected is not None:
            assert abs(e.expire_ms - expected) < 2000, e.key
    # the entries turn into RESTORE payloads a second server accepts, giving the same values
    src = _clients(servers["a"])
    dst = _clients(servers["b"])
    dst[0].flushall()
    for e in entries:
        dst[e.db].restore(e.key, e.expire_ms or 0, e.restore_payload(parser.version), replace=True, absttl=True)
    for (db, key), t in truth["types"].items():
        assert dst[db].type(key).decode() == t
        assert value_of(dst[db], key, t) == value_of(src[db], key, t), key
        assert dst[db].object("encoding", key) == src[db].object("encoding", key), key


def test_rdb_capture_with_disk_based_transfer(servers, staging):
    admin = _clients(servers["a"], (0,))[0]
    admin.config_set("repl-diskless-sync", "no")
    try:
        [art] = engine.capture(_target(servers["a"]), staging, mode="rdb")
    finally:
        admin.config_set("repl-diskless-sync", "yes")
    assert art.meta["framing"] == "length"
    assert art.fingerprints["keys"] == servers["truth"]["keys"]
    assert art.fingerprints["types"] == servers["truth"]["histogram"]


def test_rdb_capture_of_the_shared_server_with_default_settings(redis_server, staging):
    """The session server is only read: its RDB is captured with the default diskless delay."""
    [art] = engine.capture(_target(redis_server), staging, mode="auto")
    assert art.kind == "redis/rdb" and art.fingerprints["rdb_version"] == 10
    assert engine.server_info(_target(redis_server))["redis_version"] == redis_server["version"]


def test_invalid_rdb_is_refused_and_nothing_is_staged(servers, staging, monkeypatch):
    monkeypatch.setattr(rdb_module, "RDB_VERSION_MAX", 9)  # as if the server were newer than the parser
    with pytest.raises(
        CaptureError, match=r"redis://127\.0\.0\.1:\d+ is invalid: RDB version 10 is not supported"
    ) as excinfo:
        engine.capture(_target(servers["a"]), staging, mode="rdb")
    assert "HINT:" in str(excinfo.value)
    assert staging.artifacts() == []
    data_dir = staging.fs.local_path(staging.rel) / "data"
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []


def test_rdb_damaged_in_transit_fails_its_crc(servers, staging, monkeypatch):
    original = replication.SyncStream.read

    def flip_one_byte(self, n=1 << 20):
        data = original(self, n)
        if data and not getattr(self, "_flipped", False) and self.received > 50_000:
            self._flipped = True
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 0x04]) + data[i + 1 :]
        return data

    monkeypatch.setattr(replication.SyncStream, "read", flip_one_byte)
    with pytest.raises(CaptureError, match="invalid"):
        engine.capture(_target(servers["a"]), staging, mode="rdb")
    assert staging.artifacts() == []
    data_dir = staging.fs.local_path(staging.rel) / "data"
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []


# --------------------------------------------------------------------------- logical mode


def test_logical_capture_round_trips_into_a_second_server(servers, staging):
    [art] = engine.capture(_target(servers["a"]), staging, mode="logical")
    truth = servers["truth"]
    assert (art.name, art.kind) == ("redis/logical.bin", "redis/logical")
    assert art.fingerprints == {
        "keys": truth["keys"],
        "expires": truth["expires"],
        "types": truth["histogram"],
        "functions": 1,
    }
    src = _clients(servers["a"])
    dst = _clients(servers["b"])
    dst[0].flushall()
    dst[0].function_flush()
    seen = set()
    with staging.open_data(art.name) as f:
        records = engine.read_logical(zstandard.ZstdDecompressor().stream_reader(f))
        meta = next(records)
        assert meta["dbs"] == list(SEEDED_DBS) and meta["redis_version"] == servers["a"]["version"]
        for rec in records:
            if isinstance(rec, engine.LogicalFunctions):
                dst[0].function_restore(rec.payload, policy="REPLACE")
                continue
            seen.add((rec.db, rec.key))
            expected = truth["expire_ms"][(rec.db, rec.key)]
            assert (rec.expire_ms is None) == (expected is None)
            if expected is not None:
                assert abs(rec.expire_ms - expected) < 2000
            dst[rec.db].restore(rec.key, rec.expire_ms or 0, rec.payload, replace=True, absttl=True)
    assert seen == set(truth["types"])
    for (db, key), t in truth["types"].items():
        assert dst[db].type(key).decode() == t
        assert value_of(dst[db], key, t) == value_of(src[db], key, t), key
        if truth["expire_ms"][(db, key)] is not None:
            assert abs(dst[db].pttl(key) - src[db].pttl(key)) < 2000
        else:
            assert dst[db].pttl(key) == -1
    libraries = [dict(zip(lib[::2], lib[1::2], strict=True)) for lib in dst[0].function_list()]
    assert [lib[b"library_name"] for lib in libraries] == [b"ckptlib"]
    assert dst[0].fcall("ckpt_echo", 0, "hi") == b"hi"


def test_logical_and_rdb_fingerprints_agree(servers, store):
    rdb_art = engine.capture(_target(servers["a"]), store.staging(staging_key("t", "rdb")), mode="rdb")[0]
    log_art = engine.capture(_target(servers["a"]), store.staging(staging_key("t", "log")), mode="logical")[0]
    for k in ("keys", "expires", "types", "functions"):
        assert rdb_art.fingerprints[k] == log_art.fingerprints[k]


def test_logical_reader_refuses_truncation(servers, staging):
    import io

    [art] = engine.capture(_target(servers["a"]), staging, mode="logical")
    data = _read_staged(staging, art.name)
    with pytest.raises(engine.RdbError, match="truncated"):
        list(engine.read_logical(io.BytesIO(data[:-5])))
    with pytest.raises(engine.RdbError, match="after the END"):
        list(engine.read_logical(io.BytesIO(data + b"x")))
    with pytest.raises(engine.RdbError, match="not a logical"):
        list(engine.read_logical(io.BytesIO(b"REDIS0010" + data)))


# --------------------------------------------------------------------------- auto and refusals


def test_auto_falls_back_to_logical_when_the_user_lacks_sync(servers, staging, nosync_user, caplog):
    caplog.set_level(logging.DEBUG, logger="airflow_checkpoint_provider")
    user, password = nosync_user
    [art] = engine.capture(_target(servers["a"], username=user, password=password), staging, mode="auto")
    assert art.kind == "redis/logical"
    assert art.fingerprints["keys"] == servers["truth"]["keys"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("falling back to a logical capture" in r.getMessage() and "NOPERM" in r.getMessage() for r in warnings)
    assert [a.kind for a in staging.artifacts()] == ["redis/logical"]
    _no_secret(caplog, "", password, servers["a"]["password"])


def test_rdb_mode_errors_clearly_when_the_user_lacks_sync(servers, staging, nosync_user, caplog):
    caplog.set_level(logging.DEBUG, logger="airflow_checkpoint_provider")
    user, password = nosync_user
    with pytest.raises(AuthenticationError) as excinfo:
        engine.capture(_target(servers["a"], username=user, password=password), staging, mode="rdb")
    msg = str(excinfo.value)
    assert f"redis://nosync@127.0.0.1:{servers['a']['port']}" in msg
    assert "lacks SYNC" in msg and "HINT: use mode='auto' or 'logical', or grant the user +sync" in msg
    assert staging.artifacts() == []
    _no_secret(caplog, msg, password)


def test_wrong_password_is_an_authentication_error(servers, staging, caplog):
    caplog.set_level(logging.DEBUG, logger="airflow_checkpoint_provider")
    wrong = "not-the-password-" + secrets.token_hex(6)
    for mode in ("auto", "rdb", "logical"):
        with pytest.raises(AuthenticationError, match="refused the credentials") as excinfo:
            engine.capture(_target(servers["a"], password=wrong), staging, mode=mode)
        assert "HINT:" in str(excinfo.value)
        _no_secret(caplog, excinfo.value, wrong, servers["a"]["password"])
    with pytest.raises(AuthenticationError, match="refused the credentials"):
        engine.capture(_target(servers["a"], username="nobody", password=wrong), staging)
    with pytest.raises(AuthenticationError, match="requires authentication"):
        engine.capture(_target(servers["a"], password=None), staging)
    assert staging.artifacts() == []


def test_closed_port_is_a_connection_error(staging):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = secrets.token_hex(8)
    with pytest.raises(ConnectionFailedError, match=rf"cannot connect to redis://127\.0\.0\.1:{port}") as excinfo:
        engine.capture(RedisTarget(host="127.0.0.1", port=port, password=secret), staging)
    assert "HINT:" in str(excinfo.value) and secret not in str(excinfo.value)


def test_unknown_mode_is_refused(servers, staging):
    with pytest.raises(CheckpointError, match="unknown Redis capture mode 'fast'"):
        engine.capture(_target(servers["a"]), staging, mode="fast")


# --------------------------------------------------------------------------- write fence


class _Writer:
    """Sets a key every 10 ms on its own connection, recording how long each SET took."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.client = redis.Redis(host=info["host"], port=info["port"], password=info["password"], socket_timeout=60)
        self.latencies: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.client.set("fence:probe", t0)
            self.latencies.append((t0, time.monotonic() - t0))
            time.sleep(0.01)

    def __enter__(self) -> _Writer:
        self._thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()

    def longest(self) -> float:
        return max(d for _, d in self.latencies)


def test_pause_writes_holds_writers_until_the_fork(servers, staging):
    admin = _clients(servers["a"], (0,))[0]
    admin.config_set("repl-diskless-sync-delay", 2)  # the server forks about 2 s after SYNC
    try:
        with _Writer(servers["a"]) as writer:
            [art] = engine.capture(_target(servers["a"]), staging, mode="rdb", pause_writes=30.0)
            done = time.monotonic()
            time.sleep(0.2)
    finally:
        admin.config_set("repl-diskless-sync-delay", 0)
    # blocked until the fork (the writer's first write may start a little into the pause), not for 30 s.
    # The server counts the diskless delay in whole seconds of its clock, so it forks 1 to 2 s after SYNC.
    assert 1.0 <= writer.longest() < 15, writer.longest()
    assert all(d < 1.0 for t0, d in writer.latencies if t0 > done)  # free again afterwards
    assert art.meta["pause"]["max_ms"] == 30000 and 1000 <= art.meta["pause"]["held_ms"] < 15000
    assert not art.meta["pause"]["expired"]
    admin.delete("fence:probe")


def test_pause_writes_lasts_the_whole_logical_capture(servers, staging, monkeypatch):
    from airflow_checkpoint_provider.core.engines.redis import logical

    info = servers["a"]
    blocked: list[bool] = []
    original = logical._capture_db

    def probe_then_capture(*args, **kwargs):
        probe = redis.Redis(
            host=info["host"],
            port=info["port"],
            password=info["password"],
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            probe.set("fence:probe", 1)
            blocked.append(False)
        except redis.TimeoutError:
            blocked.append(True)  # the write waits for the unpause
        finally:
            probe.close()
        return original(*args, **kwargs)

    monkeypatch.setattr(logical, "_capture_db", probe_then_capture)
    [art] = engine.capture(_target(info), staging, mode="logical", pause_writes=True)
    assert blocked == [True, True]  # one probe per db, both held
    assert art.meta["pause"]["max_ms"] == 30000 and not art.meta["pause"]["expired"]
    admin = _clients(info, (0,))[0]
    t0 = time.monotonic()
    admin.delete("fence:probe")  # the probes' SETs went through after the unpause
    assert time.monotonic() - t0 < 1.0


def test_pause_is_released_when_the_capture_fails(servers, staging, nosync_user):
    user, password = nosync_user
    admin = _clients(servers["a"], (0,))[0]
    with pytest.raises(AuthenticationError, match="lacks SYNC"):
        engine.capture(_target(servers["a"], username=user, password=password), staging, mode="rdb", pause_writes=60)
    t0 = time.monotonic()
    admin.set("fence:after-failure", 1)
    assert time.monotonic() - t0 < 1.0  # not held for the 60 s maximum
    admin.delete("fence:after-failure")


def test_pause_writes_argument_forms():
    from airflow_checkpoint_provider.core.engines.redis.fence import pause_ms

    assert pause_ms(False) is None and pause_ms(None) is None and pause_ms(0) is None
    assert pause_ms(True) == 30000 and pause_ms(2.5) == 2500 and pause_ms(10) == 10000
    assert pause_ms("True") == 30000 and pause_ms("false") is None and pause_ms(" 7 ") == 7000
    with pytest.raises(CheckpointError, match="pause_writes='soon'"):
        pause_ms("soon")
