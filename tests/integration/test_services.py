"""The service fixtures connect to real servers (no fakes)."""

from __future__ import annotations

import json
import os
import socket
import stat
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_select_1_over_tcp_with_password(pg):
    with psycopg.connect(
        host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname=pg["database"],
        connect_timeout=10,
    ) as conn:  # fmt: skip
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.server_version // 10000 == 15
        assert conn.execute("SHOW server_version").fetchone()[0].startswith(pg["version"])
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)


def test_postgres_rejects_wrong_password(pg):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=pg["host"], port=pg["port"], user=pg["user"], password="wrong", dbname=pg["database"],
            connect_timeout=10,
        )  # fmt: skip


def test_postgres_superuser_over_local_socket(pg):
    with psycopg.connect(host=pg["socket_dir"], port=pg["port"], user=pg["superuser"], dbname="postgres") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    assert Path(pg["bin_dir"], "pg_dump").exists()


# --------------------------------------------------------------------------- Redis


def test_redis_ping_with_password(redis_server):
    client = redis.Redis(host=redis_server["host"], port=redis_server["port"], password=redis_server["password"])
    try:
        assert client.ping() is True
        assert client.info("server")["redis_version"] == redis_server["version"]
        assert redis_server["version"].startswith("7.0.")
    finally:
        client.close()


def test_redis_requires_password(redis_server):
    # no retries: redis-py would otherwise back off for seconds on the auth error
    client = redis.Redis(host=redis_server["host"], port=redis_server["port"], retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.exceptions.RedisError, match="(?i)auth"):
            client.ping()
    finally:
        client.close()


# --------------------------------------------------------------------------- search nodes


def test_opensearch_root(opensearch):
    body = httpx.get(opensearch["url"] + "/", timeout=10).raise_for_status().json()
    assert body["version"]["distribution"] == "opensearch"
    assert body["version"]["number"].startswith("2.19.")
    assert body["version"]["number"] == opensearch["version"]


def test_elasticsearch7_root(elasticsearch):
    body = httpx.get(elasticsearch["url"] + "/", timeout=10).raise_for_status().json()
    assert body["version"]["number"] == "7.10.2"
    assert body["version"].get("distribution", "elasticsearch") != "opensearch"


@pytest.mark.parametrize("node_name", ["opensearch", "elasticsearch"])
def test_fs_snapshot_repository_only_inside_path_repo(node_name, services, tmp_path):
    node = services[node_name]
    repo = f"test-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=node["url"], timeout=30) as client:
        inside = str(Path(node["path_repo"]) / repo)
        resp = client.put(f"/_snapshot/{repo}", json={"type": "fs", "settings": {"location": inside}})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"acknowledged": True}
        try:
            assert client.post(f"/_snapshot/{repo}/_verify").status_code == 200
        finally:
            client.delete(f"/_snapshot/{repo}")

        outside = tmp_path / "not-in-path-repo"
        resp = client.put(f"/_snapshot/{repo}-x", json={"type": "fs", "settings": {"location": str(outside)}})
        assert resp.status_code >= 400
        assert "path.repo" in resp.text


# --------------------------------------------------------------------------- the API itself


def test_connection_env_and_private_files(services, services_module):
    env = services_module.connection_env(services)
    pg, rd = services["postgres"], services["redis"]
    assert env["AIRFLOW_CONN_POSTGRES_DEFAULT"] == (
        f"postgres://checkpoint:{pg['password']}@127.0.0.1:{pg['port']}/postgres"
    )
    assert env["AIRFLOW_CONN_REDIS_DEFAULT"] == f"redis://:{rd['password']}@127.0.0.1:{rd['port']}/0"
    es_default = json.loads(env["AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"])
    assert es_default == {
        "conn_type": "elasticsearch", "host": "127.0.0.1", "port": services["opensearch"]["port"], "schema": "http",
    }  # fmt: skip
    assert json.loads(env["AIRFLOW_CONN_ELASTICSEARCH_ES7"])["port"] == services["elasticsearch"]["port"]

    state_dir = Path(services["_meta"]["state_dir"])
    for name in ("services.json", "env.sh"):
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600
    assert json.loads((state_dir / "services.json").read_text())["redis"]["port"] == rd["port"]


def test_airflow_conn_env_fixture_sets_variables(airflow_conn_env):
    for key, value in airflow_conn_env.items():
        assert os.environ[key] == value
    assert set(airflow_conn_env) == {
        "AIRFLOW_CONN_POSTGRES_DEFAULT",
        "AIRFLOW_CONN_REDIS_DEFAULT",
        "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT",
        "AIRFLOW_CONN_ELASTICSEARCH_ES7",
    }


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_stop_really_stops_a_separately_started_redis(services_module, tmp_path):
    state_dir = tmp_path / "own-redis"
    info = services_module.start(state_dir, only=["redis"])
    try:
        assert set(info) - {"_meta"} == {"redis"}
        rd = info["redis"]
        client = redis.Redis(host=rd["host"], port=rd["port"], password=rd["password"])
        assert client.ping() is True
        client.close()
        assert services_module.status(state_dir) == {"redis": True}
    finally:
        services_module.stop(state_dir)
    assert not _accepts_connections(rd["port"])
    assert services_module.status(state_dir) == {"redis": False}
    services_module.stop(state_dir)  # idempotent
