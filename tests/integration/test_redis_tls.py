"""Redis over TLS against a real redis-server that has no plain-text port (``port 0``).

The servers are started here (``tests/integration/tls.py``) with a certificate authority made
for the test. Connections go through a :class:`WireTap` where the test needs to see the bytes.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines.redis import capture, health
from airflow_checkpoint_provider.core.engines.redis import restore as R
from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import ConnectionFailedError
from airflow_checkpoint_provider.core.recovery import RestoreRequest, restore
from tests.integration.tls import Pki, WireTap, redis_tls_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data as S

pytestmark = pytest.mark.integration

TLS_RECORD = b"\x16\x03"  # a TLS handshake record: what every connection must start with


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory):
    with redis_tls_server(tmp_path_factory.mktemp("redis-tls"), pki) as info:
        yield info


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "store", create=True)


@pytest.fixture
def tap(server):
    wire = WireTap(server["host"], server["port"])
    yield wire
    wire.close()


def rediss_target(monkeypatch, server: dict[str, Any], port: int, **extra: Any) -> RedisTarget:
    """The target the provider's hook makes of a ``rediss`` Airflow connection."""
    from airflow_checkpoint_provider.hooks.redis import RedisCheckpointHook

    conn = {
        "conn_type": "rediss",
        "host": server["host"],
        "port": port,
        "password": server["password"],
        "extra": {"ssl_ca_certs": server["ca"], **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_REDIS_TLS_TEST", json.dumps(conn))
    return RedisCheckpointHook(redis_conn_id="redis_tls_test").target()


def sealed(store: Store, target: RedisTarget, mode: str) -> Any:
    staging = store.staging(staging_key("tls", mode, str(len(store.list()))))
    capture(target, staging, mode=mode, pause_writes=True)
    return store.seal(staging)


def restore_side_by_side(store: Store, cid: str, target: RedisTarget) -> Any:
    def build(s: Store, m: Any, r: RestoreRequest) -> list:
        return [R.RedisRestore(target, s, m.checkpoint_id, m.artifacts, mode=r.mode)]

    return restore(
        store,
        RestoreRequest(checkpoint_id=cid, components=("redis",), mode="side_by_side", safety_checkpoint=True),
        build,
    )


def damage(server: dict[str, Any]) -> None:
    r0, r1 = S.redis_client(server, 0), S.redis_client(server, 1)
    r0.delete("counter", "list:small", "stream:events")
    r0.set("junk", "x")
    r1.flushdb()


@pytest.mark.parametrize("mode", ["rdb", "logical"])
def test_rediss_connection_round_trip_runs_over_tls_only(server, store, tap, monkeypatch, caplog, mode):
    """A rediss connection: capture (with the write fence), restore and health, every byte over TLS."""
    caplog.set_level(logging.DEBUG, logger="airflow_checkpoint_provider")
    S.seed_redis(server)
    original = S.state_redis(server, range(2))
    target = rediss_target(monkeypatch, server, tap.port)
    assert target.ssl and target.label.startswith("rediss://")

    manifest = sealed(store, target, mode)
    damage(server)
    report = restore_side_by_side(store, manifest.checkpoint_id, target)

    assert S.same_redis_state(original, S.state_redis(server, range(2))) == []
    assert report.healthy, [str(h) for h in report.health]
    assert report.safety_checkpoint_id and store.exists(report.safety_checkpoint_id)
    assert all(c.ok for c in health(target, {"keys": {"0": len(original[0]), "1": len(original[1])}}))
    # every connection (capture, fence, safety checkpoint, restore, health) began a TLS handshake,
    # and neither the password nor a RESP command crossed the wire in the clear
    assert len(tap.starts) >= 5 and all(start == TLS_RECORD for start in tap.starts), tap.starts
    assert server["password"].encode() not in tap.sent
    assert b"AUTH" not in tap.sent and b"PING" not in tap.sent and b"SYNC" not in tap.sent
    assert server["password"] not in caplog.text


def test_wrong_ca_fails_the_handshake_and_names_the_ca_file(server, store, tmp_path, monkeypatch):
    other = Pki(tmp_path / "other", name="some other CA")
    target = rediss_target(monkeypatch, server, server["port"], ssl_ca_certs=other.ca)
    with pytest.raises(ConnectionFailedError) as exc:
        capture(target, store.staging(staging_key("tls", "wrong-ca")))
    text = str(exc.value)
    assert "TLS handshake with rediss://" in text and "certificate was not accepted" in text
    assert repr(other.ca) in text and "HINT: set ssl_ca_certs" in text
    assert server["password"] not in text
    assert store.list() == []


def test_plaintext_connection_to_the_tls_port_fails_before_the_password_is_sent(server, store, tap):
    target = RedisTarget(host=server["host"], port=tap.port, password=server["password"], socket_timeout=5)
    with pytest.raises(ConnectionFailedError) as exc:
        capture(target, store.staging(staging_key("tls", "plain")))
    text = str(exc.value)
    assert "did not answer PING in plain text" in text and "the password was not sent" in text
    assert "use a rediss connection" in text
    assert b"PING" in tap.sent and server["password"].encode() not in tap.sent and b"AUTH" not in tap.sent


def test_client_certificate_is_sent_when_the_server_requires_one(pki, store, tmp_path, monkeypatch):
    with redis_tls_server(tmp_path / "mtls", pki, auth_clients="yes") as server:
        S.seed_redis(server)
        truth = S.state_redis(server, range(2))
        without = rediss_target(monkeypatch, server, server["port"])
        with pytest.raises(ConnectionFailedError) as exc:
            capture(without, store.staging(staging_key("tls", "nocert")))
        assert "client certificate" in str(exc.value) and "ssl_certfile" in str(exc.value)

        target = rediss_target(
            monkeypatch, server, server["port"], ssl_certfile=server["client_cert"], ssl_keyfile=server["client_key"]
        )
        manifest = sealed(store, target, "rdb")
        damage(server)
        report = restore_side_by_side(store, manifest.checkpoint_id, target)
        assert report.healthy and S.same_redis_state(truth, S.state_redis(server, range(2))) == []


def test_hostname_checking_follows_ssl_check_hostname(pki, store, tmp_path, monkeypatch):
    """A certificate for another name: refused by default, accepted with ssl_check_hostname false
    (the CA is still checked), and with ssl_cert_reqs none no CA is needed at all."""
    with redis_tls_server(tmp_path / "othername", pki, hosts=("cache.example",)) as server:
        S.redis_client(server).set("k", "v")
        named = rediss_target(monkeypatch, server, server["port"])
        with pytest.raises(ConnectionFailedError) as exc:
            capture(named, store.staging(staging_key("tls", "name")))
        assert "127.0.0.1" in str(exc.value) and "ssl_check_hostname" in str(exc.value)

        unchecked = rediss_target(monkeypatch, server, server["port"], ssl_check_hostname="false")
        assert not unchecked.ssl_check_hostname
        [art] = capture(unchecked, store.staging(staging_key("tls", "nocheck")))
        assert art.fingerprints["keys"] == {"0": 1}

        other = Pki(tmp_path / "other-ca")
        still_verified = rediss_target(
            monkeypatch, server, server["port"], ssl_check_hostname="false", ssl_ca_certs=other.ca
        )
        with pytest.raises(ConnectionFailedError, match="certificate was not accepted"):
            capture(still_verified, store.staging(staging_key("tls", "ca")))

        no_verify = RedisTarget(
            host=server["host"], port=server["port"], password=server["password"], ssl=True, ssl_cert_reqs="none"
        )
        [art] = capture(no_verify, store.staging(staging_key("tls", "none")))
        assert art.fingerprints["keys"] == {"0": 1}
