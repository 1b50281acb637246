"""Rollback copies of Redis and search, listed and expired through the one policy, on real servers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from airflow_checkpoint_provider.core import rollbacks
from airflow_checkpoint_provider.core.engines import search
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.rollbacks import RollbackPolicy
from airflow_checkpoint_provider.core.store import Store
from tests.integration.redis_support import (  # noqa: F401 - fixtures are used by name
    checkpoint,
    damage,
    run_restore,
    server,
    store,
    target,
)
from tests.integration.redis_support import client as redis_client
from tests.integration.search_helpers import cleanup, client, http, node, uid  # noqa: F401
from tests.integration.test_search_restore import _seed_and_capture

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data as S


def test_redis_rollback_copies_are_listed_per_db_and_expired_by_the_policy(server, store):
    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    for _ in range(2):
        damage(info)  # empties db1: an empty db has nothing to keep, so give it a key of its own
        redis_client(info, 1).set("junk:db1", "x")
        run_restore(store, manifest.checkpoint_id, info, safety=False)
        time.sleep(1.1)
    copies = rollbacks.list_copies("redis", target(info), store)
    assert sorted(c.of for c in copies) == ["db0", "db0", "db1", "db1"], copies
    assert all(c.name.startswith("db") and c.items is not None and c.age >= 0 for c in copies)
    newest = {c.of: c.name for c in sorted(copies, key=lambda c: c.created_at)}
    dropped = rollbacks.expire("redis", target(info), RollbackPolicy.parse("last=1"), store)
    assert len(dropped) == 2
    left = rollbacks.list_copies("redis", target(info), store)
    assert {c.of: c.name for c in left} == newest  # the newest copy of each db stays


def test_search_rollback_copies_are_listed_per_index_and_expired_by_the_policy(
    node, http, client, uid, tmp_path, cleanup
):
    w = _seed_and_capture(node, http, client, uid, tmp_path)
    names = [w.names["users"], w.names["catalog"]]
    for _ in range(2):
        search.restore(
            client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id, indices=names, wait_timeout=120, poll_interval=0.2
        )
        time.sleep(1.1)  # rollback names carry the second
    tgt = SearchTarget(url=node["url"], timeout=120)
    store = Store.open(tmp_path / "store")
    copies = [c for c in rollbacks.list_copies("search", tgt, store) if c.of in names]
    assert sorted(c.of for c in copies) == sorted(names * 2), copies
    assert all(c.checkpoint == w.checkpoint_id for c in copies)
    dropped = [c for c in rollbacks.expire("search", tgt, RollbackPolicy.parse("last=1"), store) if c.of in names]
    assert sorted(c.of for c in dropped) == sorted(names)
    assert sorted(c.of for c in rollbacks.list_copies("search", tgt, store) if c.of in names) == sorted(names)


def test_retention_dag_sweeps_rollback_copies_a_dry_run_first_and_keeps_the_newest(
    server, store, services_module, airflow_env
):
    """The daily retention run also applies ``[checkpoint] rollback_keep`` to the copies in the live
    stores, so the copies of restores that never pruned their own (failed, killed, or kept under
    another policy) do not pile up. A dry run drops nothing."""
    from tests.integration.conftest import run_dag

    info = server()
    S.seed_redis(info)
    manifest = checkpoint(store, info)
    for _ in range(2):
        damage(info)
        redis_client(info, 1).set("junk:db1", "x")
        run_restore(store, manifest.checkpoint_id, info, safety=False)
        time.sleep(1.1)
    before = rollbacks.list_copies("redis", target(info), store)
    assert len(before) == 4, before
    newest = {c.of: c.name for c in sorted(before, key=lambda c: c.created_at)}
    closed = _closed_port()  # PostgreSQL and search do not answer: reported, and Redis is still swept
    env = {
        **services_module.connection_env(
            {
                "redis": info,
                "postgres": {"user": "u", "password": "p", "host": "127.0.0.1", "port": closed, "database": "d"},
                "opensearch": {"host": "127.0.0.1", "port": closed},
            }
        ),
        "AIRFLOW__CHECKPOINT__STORAGE_ROOT": store.root,
        "AIRFLOW__CHECKPOINT__ROLLBACK_KEEP": "last=1",
    }

    dry = run_dag(airflow_env, "checkpoint_retention", {"dry_run": True}, extra_env=env)
    assert dry["state"] == "success", dry["log"][-3000:]
    planned = [c for c in dry["xcom"]["expire_rollbacks"]["copies"] if c["component"] == "redis"]
    assert sorted(c["action"] for c in planned) == ["would drop", "would drop"]
    assert len(rollbacks.list_copies("redis", target(info), store)) == 4

    done = run_dag(airflow_env, "checkpoint_retention", {}, extra_env=env)
    assert done["state"] == "success", done["log"][-3000:]
    dropped = [c for c in done["xcom"]["expire_rollbacks"]["copies"] if c["component"] == "redis"]
    assert sorted(c["action"] for c in dropped) == ["dropped", "dropped"]
    assert {"postgres", "search"} <= set(done["xcom"]["expire_rollbacks"]["unreachable"])
    assert {c.of: c.name for c in rollbacks.list_copies("redis", target(info), store)} == newest


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
