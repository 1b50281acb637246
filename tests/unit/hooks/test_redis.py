"""RedisCheckpointHook: Airflow connections (real Airflow parsing, no server) -> RedisTarget."""

from __future__ import annotations

import json

import pytest

from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.hooks.redis import RedisCheckpointHook


def target_of(monkeypatch, conn: str | dict):
    monkeypatch.setenv("AIRFLOW_CONN_REDIS_HOOK_TEST", conn if isinstance(conn, str) else json.dumps(conn))
    return RedisCheckpointHook(redis_conn_id="redis_hook_test").target()


def test_rediss_uri_turns_tls_on_with_verification_by_default(monkeypatch):
    t = target_of(monkeypatch, "rediss://app:s3cret@cache.internal:6380/?db=2")
    assert (t.ssl, t.ssl_cert_reqs, t.ssl_check_hostname, t.ssl_ca_certs) == (True, "required", True, None)
    assert (t.host, t.port, t.username, t.db) == ("cache.internal", 6380, "app", 2)
    assert t.label == "rediss://app@cache.internal:6380" and "s3cret" not in repr(t) and "s3cret" not in str(t.public())


def test_tls_extras_of_the_redis_provider_are_all_mapped(monkeypatch):
    t = target_of(
        monkeypatch,
        {
            "conn_type": "redis",
            "host": "cache",
            "password": "pw",
            "extra": {
                "ssl": True,
                "ssl_ca_certs": "/etc/ca.pem",
                "ssl_certfile": "/etc/client.crt",
                "ssl_keyfile": "/etc/client.key",
                "ssl_cert_reqs": "optional",
                "ssl_check_hostname": "false",
            },
        },
    )
    assert (t.ssl, t.ssl_ca_certs, t.ssl_certfile, t.ssl_keyfile) == (
        True,
        "/etc/ca.pem",
        "/etc/client.crt",
        "/etc/client.key",
    )
    assert (t.ssl_cert_reqs, t.ssl_check_hostname) == ("optional", False)


def test_rediss_url_typed_into_the_host_field_turns_tls_on(monkeypatch):
    t = target_of(monkeypatch, {"conn_type": "redis", "host": "rediss://cache.internal:6390"})
    assert (t.ssl, t.host, t.port) == (True, "cache.internal", 6390)


def test_plain_redis_connection_stays_plain(monkeypatch):
    t = target_of(monkeypatch, "redis://:pw@cache:6379/0")
    assert not t.ssl and t.label == "redis://cache:6379"


def test_rediss_connection_with_ssl_false_is_refused(monkeypatch):
    with pytest.raises(CheckpointError, match="rediss .*ssl='false'"):
        target_of(monkeypatch, {"conn_type": "rediss", "host": "cache", "extra": {"ssl": "false"}})


def test_unknown_ssl_cert_reqs_is_refused_naming_the_value(monkeypatch):
    with pytest.raises(CheckpointError, match="ssl_cert_reqs='sometimes'") as exc:
        target_of(monkeypatch, {"conn_type": "rediss", "host": "cache", "extra": {"ssl_cert_reqs": "sometimes"}})
    assert "required, optional, none" in str(exc.value)


def test_client_key_without_its_certificate_is_refused(monkeypatch):
    with pytest.raises(CheckpointError, match="ssl_keyfile='/k.pem' is set without ssl_certfile"):
        target_of(monkeypatch, {"conn_type": "rediss", "host": "cache", "extra": {"ssl_keyfile": "/k.pem"}})
