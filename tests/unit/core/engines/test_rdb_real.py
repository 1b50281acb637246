"""The RDB parser on bytes a real Redis wrote: seeded with redis-py, fetched with ``redis-cli --rdb``.

``redis-cli`` fetches the file, so these tests check the parser independently of our own
replication code (tests/integration/test_redis_engine.py covers that).
"""

from __future__ import annotations

import io
import os
import subprocess
import time

import pytest
import redis

from airflow_checkpoint_provider.core.engines.redis.encoding import RdbError, split_payload
from airflow_checkpoint_provider.core.engines.redis.rdb import Entry, Function, RdbParser
from tests.integration.test_redis_engine import LUA_LIBRARY, SEEDED_DBS, seed_every_type, server_truth

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_rdb(services_module, tmp_path_factory):
    """(rdb bytes, truth, server info) from a private Redis seeded with every type in two dbs."""
    state = tmp_path_factory.mktemp("redis-rdb-real")
    info = services_module.start(state, only=["redis"])["redis"]
    try:
        clients = {
            db: redis.Redis(host=info["host"], port=info["port"], password=info["password"], db=db) for db in SEEDED_DBS
        }
        clients[0].config_set("repl-diskless-sync-delay", 0)
        seed_every_type(clients)
        truth = server_truth(clients)
        out = state / "dump.rdb"
        subprocess.run(
            ["redis-cli", "-h", info["host"], "-p", str(info["port"]), "--rdb", str(out)],
            env=dict(os.environ, REDISCLI_AUTH=info["password"]),
            check=True,
            capture_output=True,
        )
        dumps = {(db, key): clients[db].dump(key) for db, key in truth["types"]}
        for c in clients.values():
            c.close()
        yield out.read_bytes(), truth, dumps
    finally:
        services_module.stop(state)


def test_real_rdb_fingerprints_equal_the_server(real_rdb):
    data, truth, _ = real_rdb
    parser = RdbParser(io.BytesIO(data))
    fp = parser.scan()
    assert fp["rdb_version"] == 10  # Redis 7.0
    assert fp["keys"] == truth["keys"]
    assert fp["types"] == truth["histogram"]
    assert fp["expires"] == truth["expires"]
    assert fp["functions"] == 1
    assert parser.checksum_verified
    assert parser.aux["redis-ver"].startswith("7.0.")


def test_real_rdb_entries_equal_the_server(real_rdb):
    data, truth, dumps = real_rdb
    parser = RdbParser(io.BytesIO(data))
    records = list(parser.records())
    entries = [r for r in records if isinstance(r, Entry)]
    assert {(e.db, e.key): e.type_name for e in entries} == truth["types"]
    for e in entries:
        expected = truth["expire_ms"][(e.db, e.key)]
        if expected is None:
            assert e.expire_ms is None, e.key
        else:
            assert abs(e.expire_ms - expected) < 2000, e.key
        # a RESTORE payload built from the entry is byte for byte what DUMP gives
        assert e.restore_payload(parser.version) == dumps[(e.db, e.key)], e.key
        assert data[e.offset : e.offset + e.length] == e.value
    functions = [r for r in records if isinstance(r, Function)]
    assert [f.code for f in functions] == [LUA_LIBRARY.encode()]


def test_real_rdb_read_in_small_pieces(real_rdb):
    data, truth, _ = real_rdb

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int = -1) -> bytes:
            piece = data[self.pos : self.pos + min(n, 997)]
            self.pos += len(piece)
            return piece

    assert RdbParser(Trickle(), chunk_size=997).scan()["keys"] == truth["keys"]


def test_real_rdb_corruptions_are_refused(real_rdb):
    data, _, _ = real_rdb
    mid = len(data) // 2
    flipped = data[:mid] + bytes([data[mid] ^ 0x10]) + data[mid + 1 :]
    with pytest.raises(RdbError):
        RdbParser(io.BytesIO(flipped)).scan()
    for cut in (10, mid, len(data) - 9, len(data) - 1):
        with pytest.raises(RdbError):
            RdbParser(io.BytesIO(data[:cut])).scan()


def test_real_dump_payloads_split(real_rdb):
    _, _, dumps = real_rdb
    for payload in dumps.values():
        rdb_type, _, version = split_payload(payload)
        assert version == 10 and 0 <= rdb_type <= 21


def test_real_rdb_parse_speed_is_reasonable(real_rdb):
    data, _, _ = real_rdb
    t0 = time.process_time()
    RdbParser(io.BytesIO(data)).scan()
    assert time.process_time() - t0 < 5
