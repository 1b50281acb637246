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
