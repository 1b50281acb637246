"""PgCheckpointHook: Airflow connections (real Airflow parsing, no server) -> PostgresTarget."""

from __future__ import annotations

import json

import pytest

from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.hooks.postgres import PgCheckpointHook


def target_of(monkeypatch, conn: dict):
    monkeypatch.setenv("AIRFLOW_CONN_PG_HOOK_TEST", json.dumps(conn))
    return PgCheckpointHook(postgres_conn_id="pg_hook_test").target()


def test_every_libpq_tls_option_of_the_extra_reaches_the_target(monkeypatch):
    extra = {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ca.pem",
        "sslcert": "/etc/c.crt",
        "sslkey": "/etc/c.key",
        "sslpassword": "key-secret",
        "sslcrl": "/etc/crl.pem",
        "sslsni": 0,
        "ssl_min_protocol_version": "TLSv1.3",
        "cursor": "dictcursor",
    }  # not a TLS option: left to the Postgres provider
    t = target_of(
        monkeypatch,
        {"conn_type": "postgres", "host": "db", "login": "app", "password": "pw", "schema": "app", "extra": extra},
    )
    assert t.sslmode == "verify-full"
    assert t.ssl == {
        "sslrootcert": "/etc/ca.pem",
        "sslcert": "/etc/c.crt",
        "sslkey": "/etc/c.key",
        "sslpassword": "key-secret",
        "sslcrl": "/etc/crl.pem",
        "sslsni": "0",
        "ssl_min_protocol_version": "TLSv1.3",
    }
    assert "key-secret" not in repr(t) and "key-secret" not in json.dumps(t.public())


def test_connection_without_tls_options_leaves_libpqs_defaults(monkeypatch):
    t = target_of(monkeypatch, {"conn_type": "postgres", "host": "db", "login": "app"})
    assert t.sslmode is None and t.ssl == {}


def test_unknown_sslmode_is_refused_naming_it(monkeypatch):
    with pytest.raises(CheckpointError, match="sslmode='verify'") as exc:
        target_of(monkeypatch, {"conn_type": "postgres", "host": "db", "extra": {"sslmode": "verify"}})
    assert "verify-full" in str(exc.value)
