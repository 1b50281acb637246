"""The page's rollback copies, read from the live stores through Airflow connections (real PostgreSQL),
and a store that cannot be reached or a connection that is not defined shown as a message."""

from __future__ import annotations

import json

import pytest

from airflow_checkpoint_provider.ui import html
from airflow_checkpoint_provider.ui.live import rollback_copies
from tests.integration.airflow_support import free_port
from tests.integration.test_cli_rollbacks import _restore_twice
from tests.integration.test_postgres_restore import (  # noqa: F401 - fixtures
    names,
    rollbacks_of,
    seeded,
    store,
    target,
)

pytestmark = pytest.mark.integration


def test_rollback_copies_of_a_restore_are_listed_and_unreachable_stores_are_named(
    pg, airflow_conn_env, target, store, seeded, monkeypatch
):
    db = seeded()
    _restore_twice(store, target, db)
    dead = free_port()  # nothing listens there
    monkeypatch.setenv(
        "AIRFLOW_CONN_DEAD_SEARCH",
        json.dumps({"conn_type": "elasticsearch", "host": "127.0.0.1", "port": dead, "schema": "http"}),
    )
    monkeypatch.setenv("AIRFLOW__CHECKPOINT__ELASTICSEARCH_CONN_ID", "dead_search")
    monkeypatch.setenv("AIRFLOW__CHECKPOINT__REDIS_CONN_ID", "no_such_redis")
    copies, problems = rollback_copies(store)
    mine = [c for c in copies if c["component"] == "postgres" and c["of"] == db]
    assert sorted(c["name"] for c in mine) == rollbacks_of(pg, db) and len(mine) == 2
    assert all(c["conn_id"] == "postgres_default" and c["size"] > 0 for c in mine)
    by = {p["component"]: p for p in problems}
    assert by["redis"]["conn_id"] == "no_such_redis" and "set [checkpoint] redis_conn_id" in by["redis"]["error"]
    assert by["search"]["conn_id"] == "dead_search" and by["search"]["error"]
    assert "postgres" not in by
    page = html.rollbacks_page(copies, problems, base="/checkpoints")
    assert "not reachable" in page and mine[0]["name"] in page and "no_such_redis" in page and "dead_search" in page


def test_a_store_that_does_not_answer_in_time_becomes_a_message_not_a_hang(pg, airflow_conn_env, store, monkeypatch):
    import socket

    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        monkeypatch.setenv(
            "AIRFLOW_CONN_SILENT_SEARCH",
            json.dumps({"conn_type": "elasticsearch", "host": "127.0.0.1", "port": port, "schema": "http"}),
        )
        monkeypatch.setenv("AIRFLOW__CHECKPOINT__ELASTICSEARCH_CONN_ID", "silent_search")
        copies, problems = rollback_copies(store, deadline=3)
    by = {p["component"]: p for p in problems}
    assert by["search"] == {"component": "search", "conn_id": "silent_search", "error": "no answer within 3 s"}
    assert "postgres" not in by
