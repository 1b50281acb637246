"""What dead restores and killed captures leave behind, and the rollback lifecycle, against the real
OpenSearch 2.19 and Elasticsearch 7.10: leftovers, orphan snapshots, list/drop/prune rollbacks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines import search
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import EngineError
from tests.integration.search_helpers import (  # noqa: F401 - fixtures are used by name
    _aliases,
    _bulk,
    _cleanup,
    _create,
    _docs,
    _indices,
    _repo,
    cleanup,
    client,
    http,
    node,
    uid,
)

pytestmark = pytest.mark.integration


def test_restoring_copies_of_dead_restores_are_found_and_dropped(node, http, client, uid, cleanup):
    p = f"r{uid}"
    for name in (f"{p}-a__restoring_dead01", f"{p}-b__restoring_served", f"{p}-c__restoring_live01", f"{p}-d"):
        _bulk(http, name, {"x": {"v": 1}})
    _aliases(http, [{"add": {"index": f"{p}-b__restoring_served", "alias": f"{p}-b"}}])
    live = [f"{p}-c__restoring_live01"]  # named by the journal of a restore that is still running

    found = [x for x in search.find_leftovers(client, protected=live) if x["index"].startswith(p)]
    assert [(x["index"], x["source"], x["short_id"], x["docs"]) for x in found] == [
        (f"{p}-a__restoring_dead01", f"{p}-a", "dead01", 1)
    ]
    assert found[0]["created_at"].endswith("Z") and found[0]["age_seconds"] >= 0 and found[0]["size_bytes"] > 0
    assert not [x for x in search.find_leftovers(client, protected=live, older_than=3600) if x["index"].startswith(p)]

    dry = [x for x in search.drop_leftovers(client, protected=live) if x["index"].startswith(p)]
    assert [x["dropped"] for x in dry] == [False] and _indices(http, f"{p}-a__restoring_*") == [dry[0]["index"]]
    done = [
        x
        for x in search.drop_leftovers(SearchTarget(url=node["url"]), protected=live, dry_run=False)
        if x["index"].startswith(p)
    ]
    assert [x["dropped"] for x in done] == [True]
    assert _indices(http, f"{p}-*") == sorted([f"{p}-b__restoring_served", f"{p}-c__restoring_live01", f"{p}-d"])


def test_orphan_snapshots_of_killed_captures_are_listed_then_deleted(node, http, client, uid, tmp_path, cleanup):
    p = f"r{uid}"
    repo = _repo(node, uid)
    _bulk(http, f"{p}-a", {"x": {"v": 1}})
    # three captures killed after their snapshot started (no checkpoint was sealed), one that sealed
    for k in range(3):
        started = search.capture_begin(
            client, repository=repo["name"], repository_settings=repo["settings"], indices=[f"{p}-a"], key=f"killed-{k}"
        )
        client.wait_for_snapshot(repo["name"], started.snapshot, poll_interval=0.1, timeout=60)
    store = Store.open(tmp_path / "store", create=True)
    staging = store.staging(staging_key("sealed", uid))
    search.capture(
        SearchTarget(url=node["url"]), staging, repository=repo["name"], indices=[f"{p}-a"], poll_interval=0.1
    )
    sealed = store.seal(staging)
    referenced = [sealed.artifact("search/snapshot.json").meta["snapshot"]]
    # a snapshot somebody else took, without the provider's metadata
    http.put(
        f"/_snapshot/{repo['name']}/users-own", params={"wait_for_completion": "true"}, json={"indices": f"{p}-a"}
    ).raise_for_status()
    time.sleep(1.1)

    orphans = search.find_orphan_snapshots(client, repo["name"], referenced=referenced, older_than=1)
    assert sorted(o["snapshot"] for o in orphans) == sorted(
        s["snapshot"]
        for s in http.get(f"/_snapshot/{repo['name']}/_all").json()["snapshots"]
        if "killed" in s["snapshot"]
    )
    assert len(orphans) == 3 and all(o["state"] == "SUCCESS" and o["age_seconds"] >= 1 for o in orphans)
    assert search.find_orphan_snapshots(client, repo["name"], referenced=referenced, older_than=3600) == []

    listed = search.delete_orphan_snapshots(client, repo["name"], referenced=referenced, older_than=1)
    assert [o["dropped"] for o in listed] == [False] * 3
    assert len(http.get(f"/_snapshot/{repo['name']}/_all").json()["snapshots"]) == 5
    search.delete_orphan_snapshots(client, repo["name"], referenced=referenced, older_than=1, dry_run=False)
    left = sorted(s["snapshot"] for s in http.get(f"/_snapshot/{repo['name']}/_all").json()["snapshots"])
    assert left == sorted(referenced + ["users-own"])


def test_rollback_copies_are_listed_with_checkpoint_age_and_size_and_pruned(node, http, client, uid, tmp_path, cleanup):
    p = f"r{uid}"
    _create(http, f"{p}-a")
    _bulk(http, f"{p}-a", {f"a{i}": {"v": i} for i in range(4)})
    repo = _repo(node, uid)
    store = Store.open(tmp_path / "store", create=True)
    staging = store.staging(staging_key("rollbacks", uid))
    search.capture(
        SearchTarget(url=node["url"]),
        staging,
        repository=repo["name"],
        repository_settings=repo["settings"],
        indices=[f"{p}-a"],
        poll_interval=0.1,
    )
    cid = store.seal(staging).checkpoint_id
    artifact = store.get(cid).manifest.artifact("search/snapshot.json")
    with store.open_artifact(cid, "search/snapshot.json") as f:
        doc = json.loads(f.read())
    made = []
    for k in range(3):
        _bulk(http, f"{p}-a", {f"junk{k}": {"v": -k}})
        outcome = search.restore(client, artifact, doc, checkpoint_id=cid, poll_interval=0.1)
        made += outcome.rollback
        time.sleep(1.1)  # distinct stamps and creation times

    rows = [r for r in search.list_rollbacks(client, checkpoints=["ckpt-other", cid]) if r["source"] == f"{p}-a"]
    assert [r["index"] for r in rows] == list(reversed(made))  # newest first
    assert [r["docs"] for r in rows] == [5, 5, 5]  # each held the 4 documents and that round's junk
    assert all(
        r["kind"] == "index"
        and r["checkpoint"] == cid
        and r["created_at"].endswith("Z")
        and r["age_seconds"] >= 0
        and r["size_bytes"] > 0
        for r in rows
    )

    plan = [r for r in search.prune_rollbacks(client, keep=1) if r["source"] == f"{p}-a"]
    assert [(r["index"], r["dropped"]) for r in plan] == [(made[1], False), (made[0], False)]
    assert "more than the 1 newest" in plan[0]["reason"]
    kept = [
        r for r in search.prune_rollbacks(client, keep=1, protected=[made[0]], dry_run=False) if r["source"] == f"{p}-a"
    ]
    assert [(r["index"], r["dropped"]) for r in kept] == [(made[1], True), (made[0], False)]
    assert "a running restore uses it" in kept[1]["reason"]
    assert _indices(http, f"{p}-a__rollback_*") == sorted([made[0], made[2]])
    aged = [r for r in search.prune_rollbacks(client, keep=5, max_age=0.5, dry_run=False) if r["source"] == f"{p}-a"]
    assert sorted(r["index"] for r in aged if r["dropped"]) == sorted([made[0], made[2]])
    assert _indices(http, f"{p}-a__rollback_*") == []
    assert _docs(http, f"{p}-a") == {f"a{i}": {"v": i} for i in range(4)}

    for not_a_copy in (f"{p}-a", f"{p}-a__restoring_x", f"r{uid}-*"):
        with pytest.raises(EngineError, match="not a rollback copy"):
            search.drop_rollback(client, not_a_copy)
    with pytest.raises(EngineError, match="keep must be 0 or more"):
        search.prune_rollbacks(client, keep=-1)


def test_rollback_helpers_accept_a_target_as_well_as_a_client(node, uid, cleanup):
    target = SearchTarget(url=node["url"])
    assert isinstance(search.list_rollbacks(target), list)
    assert isinstance(search.find_leftovers(target), list)
    assert search.find_orphan_snapshots(target, f"rr-{uid}-missing", referenced=[], older_than=0) == []
    assert Path(search.__file__).exists()
