"""Search restore (side by side, then cut over) against real OpenSearch 2.19.1 and Elasticsearch 7.10.2.

No fakes: every test seeds real indices, captures them with ``search.capture`` into a real
checkpoint store, damages the data and restores. The nodes are shared by the session, so every
test works on its own ``r<uid>-*`` indices and ``rr-<uid>`` repository and removes them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines import search
from airflow_checkpoint_provider.core.engines.search.restore import short_id
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import CaptureError, EngineError
from tests.unit.core.helpers import plant_member, run_bomb_child, zstd_bomb

pytestmark = pytest.mark.integration

ARTIFACT = "search/snapshot.json"


# --------------------------------------------------------------------------- fixtures and helpers

from tests.integration.search_helpers import (  # noqa: E402,F401 - fixtures are used by name
    _alias_holders,
    _aliases,
    _bulk,
    _cleanup,
    _create,
    _docs,
    _http,
    _indices,
    _repo,
    _state,
    cleanup,
    client,
    http,
    node,
    uid,
)


@dataclasses.dataclass
class World:
    """Seeded indices (names), their original documents, and the checkpoint of them."""

    names: dict[str, str]
    original: dict[str, dict[str, Any]]
    checkpoint_id: str
    artifact: Any
    doc: dict[str, Any]
    repo: dict[str, Any]


ORDER_MAPPING = {"properties": {"sku": {"type": "keyword"}, "qty": {"type": "integer"}, "note": {"type": "text"}}}
NESTED_MAPPING = {
    "properties": {
        "order": {"type": "keyword"},
        "lines": {"type": "nested", "properties": {"sku": {"type": "keyword"}, "qty": {"type": "integer"}}},
    }
}


def _seed_and_capture(
    node: dict[str, Any],
    http: httpx.Client,
    client: search.SearchClient,
    uid: str,
    tmp_path: Path,
    *,
    shards: dict[str, int] | None = None,
) -> World:
    shards = shards or {}
    n = {
        "catalog": f"r{uid}-catalog",  # concrete now; a "migration" turns it into an alias later
        "gone": f"r{uid}-gone",  # deleted by the damage
        "nested": f"r{uid}-nested",  # nested documents; some deleted by the damage
        "orders": f"r{uid}-orders",  # reached through the alias below; a doc edited by the damage
        "users": f"r{uid}-users",  # junk added by the damage
        "orders_alias": f"r{uid}-orders-read",
    }
    _create(http, n["orders"], ORDER_MAPPING, shards=shards.get("orders", 1))
    _bulk(
        http, n["orders"], {f"o{i}": {"sku": f"sku-{i % 7}", "qty": i, "note": f"order number {i}"} for i in range(40)}
    )
    _aliases(http, [{"add": {"index": n["orders"], "alias": n["orders_alias"]}}])
    _create(http, n["nested"], NESTED_MAPPING)
    _bulk(
        http,
        n["nested"],
        {f"n{i}": {"order": f"o{i}", "lines": [{"sku": f"s{j}", "qty": j} for j in range(3)]} for i in range(12)},
    )
    _create(http, n["users"], {"properties": {"name": {"type": "keyword"}, "age": {"type": "integer"}}})
    _bulk(http, n["users"], {f"u{i}": {"name": f"user {i}", "age": 20 + i} for i in range(25)})
    _create(http, n["catalog"])  # dynamic mapping
    _bulk(http, n["catalog"], {f"c{i}": {"title": f"item {i}", "price": i * 1.5} for i in range(9)})
    _create(http, n["gone"])
    _bulk(http, n["gone"], {f"g{i}": {"v": i} for i in range(5)})
    original = {k: _docs(http, v) for k, v in n.items()}

    repo = _repo(node, uid)
    store = Store.open(tmp_path / "store", create=True, lock_timeout=30)
    staging = store.staging(staging_key("test_search_restore", uid))
    search.capture(
        SearchTarget(url=node["url"], timeout=120),
        staging,
        repository=repo["name"],
        repository_settings=repo["settings"],
        indices=[n["orders_alias"], n["nested"], n["users"], n["catalog"], n["gone"]],
        poll_interval=0.2,
        timeout=120,
    )
    manifest = store.seal(staging)
    cid = manifest.checkpoint_id
    artifact = manifest.artifact(ARTIFACT)
    with store.open_artifact(cid, ARTIFACT) as f:
        doc = json.loads(f.read())
    if "aliases" not in doc:
        # The capture does not record aliases yet; this is the record it is to add (taken here on the
        # quiet, just-captured indices, it is what capture_begin would see).
        doc["aliases"] = search.collect_aliases(client, sorted(artifact.fingerprints["indices"]))
    assert doc["aliases"] == {n["orders_alias"]: {n["orders"]: {}}}
    return World(names=n, original=original, checkpoint_id=cid, artifact=artifact, doc=doc, repo=repo)


def _damage(http: httpx.Client, w: World) -> None:
    n = w.names
    # an index deleted
    http.delete(f"/{n['gone']}").raise_for_status()
    # documents deleted from another
    http.post(
        f"/{n['nested']}/_delete_by_query",
        params={"refresh": "true"},
        json={"query": {"terms": {"order": ["o1", "o2", "o3"]}}},
    ).raise_for_status()
    # junk added to a third
    _bulk(http, n["users"], {f"junk{i}": {"name": "junk", "age": -1} for i in range(6)})
    # a document edited, and the alias moved to another index
    _bulk(http, n["orders"], {"o5": {"sku": "changed", "qty": -5, "note": "edited"}})
    junk = f"{n['orders']}-junk"
    _create(http, junk)
    _bulk(http, junk, {"x1": {"sku": "junk"}})
    _aliases(
        http,
        [
            {"remove": {"index": n["orders"], "alias": n["orders_alias"]}},
            {"add": {"index": junk, "alias": n["orders_alias"]}},
        ],
    )
    # a "migration": catalog reindexed into catalog-v2 (changed data), catalog now an alias of it
    v2 = f"{n['catalog']}-v2"
    _create(http, v2)
    _bulk(http, v2, {"c1": {"title": "migrated", "price": 0}, "c99": {"title": "new"}})
    http.delete(f"/{n['catalog']}").raise_for_status()
    _aliases(http, [{"add": {"index": v2, "alias": n["catalog"]}}])


# --------------------------------------------------------------------------- the full restore


def test_restore_after_damage_brings_back_every_document(node, http, client, uid, tmp_path, cleanup):
    w = _seed_and_capture(node, http, client, uid, tmp_path)
    n = w.names
    _damage(http, w)
    damaged = {k: _docs(http, n[k]) for k in ("orders", "nested", "users")}
    assert damaged["users"] != w.original["users"] and damaged["nested"] != w.original["nested"]
    assert _docs(http, n["orders_alias"]) == {"x1": {"sku": "junk"}}
    messages: list[str] = []

    outcome = search.restore(
        client,
        w.artifact,
        w.doc,
        checkpoint_id=w.checkpoint_id,
        wait_timeout=120,
        log=messages.append,
        poll_interval=0.2,
    )

    short = short_id(w.checkpoint_id)
    assert outcome.component == "search"
    assert outcome.restored == sorted([n["catalog"], n["gone"], n["nested"], n["orders"], n["users"]])
    details = outcome.details["indices"]
    assert {k: v["action"] for k, v in details.items()} == {
        n["catalog"]: "switch-alias",
        n["gone"]: "create",
        n["nested"]: "replace",
        n["orders"]: "replace",
        n["users"]: "replace",
    }
    # every document is back, exactly, also through the aliases
    for key in ("catalog", "gone", "nested", "orders", "users", "orders_alias"):
        assert _docs(http, n[key]) == w.original[key], key
    assert _alias_holders(http, n["orders_alias"]) == [n["orders"]]
    # the catalog alias now serves the restored copy, which keeps its side-by-side name
    assert _alias_holders(http, n["catalog"]) == [f"{n['catalog']}__restoring_{short}"]
    assert details[n["catalog"]]["serving_index"] == f"{n['catalog']}__restoring_{short}"

    # rollback copies hold the damaged state
    rollbacks = {r.split("__rollback_")[0]: r for r in outcome.rollback if "__rollback_" in r}
    assert sorted(rollbacks) == sorted([n["nested"], n["orders"], n["users"]])
    for key in ("nested", "orders", "users"):
        rb = rollbacks[n[key]]
        assert rb.startswith(f"{n[key]}__rollback_{short}_") and len(rb.rsplit("_", 1)[1]) == 14
        assert _docs(http, rb) == damaged[key], key
        assert (
            http.get(f"/{rb}/_settings", params={"flat_settings": "true"}).json()[rb]["settings"]["index.blocks.write"]
            == "true"
        )
    assert f"{n['catalog']}-v2" in outcome.rollback  # the previously aliased index, untouched
    assert _docs(http, f"{n['catalog']}-v2") == {"c1": {"title": "migrated", "price": 0}, "c99": {"title": "new"}}

    # restored indices are writable, have the original replica count, no side-by-side copies remain
    for key in ("gone", "nested", "orders", "users"):
        settings = http.get(f"/{n[key]}/_settings", params={"flat_settings": "true"}).json()[n[key]]["settings"]
        assert "index.blocks.write" not in settings or settings["index.blocks.write"] in (None, "false")
        assert settings["index.number_of_replicas"] == "0"
    http.put(f"/{n['orders']}/_doc/after", params={"refresh": "true"}, json={"sku": "new"}).raise_for_status()
    http.delete(f"/{n['orders']}/_doc/after", params={"refresh": "true"}).raise_for_status()
    assert _indices(http, f"r{uid}-*__restoring_*") == [f"{n['catalog']}__restoring_{short}"]
    assert any("rollback copy" in m for m in messages)

    # health passes with the checkpoint's fingerprints (mapping hashes included)
    checks = search.health(client, w.artifact.fingerprints)
    assert all(c.ok for c in checks), [str(c) for c in checks if not c.ok]
    names = {c.check for c in checks}
    assert {"cluster health", f"index {n['catalog']} docs", f"index {n['gone']} mapping"} <= names

    # rollback copies are listed and can be dropped; other indices cannot
    listed = {r["index"]: r for r in search.list_rollbacks(client)}
    for rb in rollbacks.values():
        assert rb in listed
        assert listed[rb]["created"].endswith("Z") and listed[rb]["size_bytes"] > 0
        assert listed[rb]["docs"] is not None and listed[rb]["source"] in n.values()
    for not_a_copy in (n["orders"], f"{n['catalog']}-v2", f"{n['catalog']}__restoring_{short}", f"r{uid}-*"):
        with pytest.raises(EngineError, match="not a rollback copy"):
            search.drop_rollback(client, not_a_copy)
    search.drop_rollback(client, rollbacks[n["users"]])
    assert rollbacks[n["users"]] not in {r["index"] for r in search.list_rollbacks(client)}
    assert http.get(f"/{rollbacks[n['users']]}").status_code == 404


def test_health_reports_missing_index_and_wrong_counts(node, http, client, uid, cleanup):
    name = f"r{uid}-h"
    _create(http, name)
    _bulk(http, name, {str(i): {"v": i} for i in range(10)})
    checks = search.health(client, {"indices": {name: {"docs": 10}, f"r{uid}-missing": {"docs": 1}}})
    by = {c.check: c for c in checks}
    assert by["cluster health"].actual in ("green", "yellow")
    assert by[f"index {name} docs"].ok and by[f"index {name} docs"].actual == 10
    assert not by[f"index r{uid}-missing exists"].ok
    checks = search.health(client, {"indices": {name: {"docs": 11}}})
    docs = next(c for c in checks if c.check == f"index {name} docs")
    assert not docs.ok and (docs.expected, docs.actual) == (11, 10) and "expected 11, got 10" in str(docs)
    checks = search.health(client, {"indices": {name: {"docs": 11}}}, tolerance=0.1)
    assert next(c for c in checks if c.check == f"index {name} docs").ok


# --------------------------------------------------------------------------- dry run


def test_plan_lists_actions_and_conflicts_and_changes_nothing(node, http, client, uid, tmp_path, cleanup):
    w = _seed_and_capture(node, http, client, uid, tmp_path)
    n = w.names
    _damage(http, w)
    short = short_id(w.checkpoint_id)
    # leftovers of earlier failed restores: one with this restore's name, one of another
    _create(http, f"{n['users']}__restoring_{short}")
    _create(http, f"{n['users']}__restoring_0ld1d")
    before = _state(http, uid)

    plan = search.plan_restore(client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id)

    assert _state(http, uid) == before
    assert plan.ok, plan.problems
    assert plan.checkpoint_id == w.checkpoint_id
    items = {i.target: i for i in plan.items}
    assert {t: i.action for t, i in items.items()} == {
        n["catalog"]: "switch-alias",
        n["gone"]: "create",
        n["nested"]: "replace",
        n["orders"]: "replace",
        n["users"]: "replace",
    }
    for item in plan.items:  # the leftover with this checkpoint's short id is not reused
        assert item.component == "search" and item.staging_name == f"{item.target}__restoring_{short}-2"
    text = str(plan)
    assert f"{n['orders']} exists and is open" in text
    assert "will be replaced" in " ".join(items[n["users"]].conflicts)
    assert any(f"alias of {n['catalog']}-v2" in c for c in items[n["catalog"]].conflicts)
    assert any(f"alias {n['orders_alias']} points at {n['orders']}-junk" in c for c in items[n["orders"]].conflicts)
    users = " ".join(items[n["users"]].conflicts)
    assert f"leftover from an earlier restore: {n['users']}__restoring_{short} (" in users
    assert f"{n['users']}__restoring_0ld1d (" in users and "left alone" in users
    assert any("does not exist" in note for note in items[n["gone"]].notes)

    # what would be refused, still without changing anything
    bad = search.plan_restore(
        client,
        w.artifact,
        w.doc,
        checkpoint_id=w.checkpoint_id,
        swap="alias",
        indices=[n["orders"], f"r{uid}-nope*"],
        include_global_state=True,
    )
    assert not bad.ok
    assert any(f"index {n['orders']} is a concrete index" in p for p in bad.problems)
    assert any(f"'r{uid}-nope*' matches no index" in p for p in bad.problems)
    assert any("does not include the global state" in p for p in bad.problems)
    with pytest.raises(search.RestoreRefusedError, match="concrete index"):
        search.restore(client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id, swap="alias", indices=[n["orders"]])
    assert _state(http, uid) == before


def test_zstd_bomb_in_the_snapshot_document_fails_the_dry_run_plan_and_changes_nothing(
    node, http, client, uid, tmp_path, cleanup
):
    w = _seed_and_capture(node, http, client, uid, tmp_path)
    store = Store.open(tmp_path / "store")
    bomb, _ = zstd_bomb()  # 35 KB that inflate to 1.1 GiB; the manifest keeps the real raw_size (a lie)
    plant_member(store, w.checkpoint_id, ARTIFACT, bomb)
    assert store.verify(w.checkpoint_id).ok  # sizes and checksums hold: only the raw_size bound can tell
    before = _state(http, uid)

    out = run_bomb_child(store, w.checkpoint_id, "plan", url=node["url"])

    assert out["error"] == "IntegrityError", out
    assert f"artifact {ARTIFACT} decompresses to more than its raw_size" in out["message"]
    assert out["max_rss_mb"] < 300, out
    assert _state(http, uid) == before


def test_plan_counts_nested_documents_like_the_checkpoint(node, http, client, uid, tmp_path, cleanup):
    """An untouched index with nested documents: the plan's "now" and "checkpoint" counts agree."""
    w = _seed_and_capture(node, http, client, uid, tmp_path)
    nested = w.names["nested"]
    cat = http.get(f"/_cat/indices/{nested}", params={"format": "json", "h": "docs.count"}).json()
    assert int(cat[0]["docs.count"]) == 48  # 12 documents with 3 nested lines each, as _cat counts them
    plan = search.plan_restore(client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id, indices=[nested])
    [item] = plan.items
    assert "checkpoint: 12 documents" in item.notes
    assert any(f"index {nested} exists and is open (12 documents now)" in c for c in item.conflicts)


def test_plan_refuses_missing_snapshot_and_closed_target(node, http, client, uid, tmp_path, cleanup):
    w = _seed_and_capture(node, http, client, uid, tmp_path)
    http.post(f"/{w.names['users']}/_close").raise_for_status()
    plan = search.plan_restore(client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id)
    assert any(f"index {w.names['users']} is closed" in p for p in plan.problems)
    other = dataclasses.replace(w.artifact, meta={**w.artifact.meta, "snapshot": "no-such-snapshot"})
    doc = {**w.doc, "snapshot": {**w.doc["snapshot"], "name": "no-such-snapshot"}}
    plan = search.plan_restore(client, other, doc, checkpoint_id=w.checkpoint_id)
    assert any("no-such-snapshot is not in the repository" in p for p in plan.problems)
    http.delete(f"/_snapshot/{w.repo['name']}/{w.artifact.meta['snapshot']}").raise_for_status()
    http.delete(f"/_snapshot/{w.repo['name']}").raise_for_status()
    plan = search.plan_restore(client, w.artifact, None, checkpoint_id=w.checkpoint_id)
    assert any(f"repository {w.repo['name']!r} is not registered" in p for p in plan.problems)


# --------------------------------------------------------------------------- failures


def test_verification_failure_leaves_the_originals_untouched(node, http, client, uid, tmp_path, cleanup):
    w = _seed_and_capture(node, http, client, uid, tmp_path)
    n = w.names
    _bulk(http, n["users"], {"junk": {"name": "junk"}})
    real = w.artifact.fingerprints["indices"][n["users"]]["docs"]
    doctored = json.loads(json.dumps(w.artifact.fingerprints))
    doctored["indices"][n["users"]]["docs"] = real + 3
    artifact = dataclasses.replace(w.artifact, fingerprints=doctored)
    doc = {**w.doc, "fingerprints": doctored}
    before = _state(http, uid)
    docs_before = {k: _docs(http, v) for k, v in n.items()}

    with pytest.raises(search.RestoreVerificationError) as err:
        search.restore(client, artifact, doc, checkpoint_id=w.checkpoint_id, wait_timeout=120, poll_interval=0.2)

    assert isinstance(err.value, CaptureError)
    msg = err.value.message
    assert f"index {n['users']}: docs expected {real + 3}, restored copy has {real}" in msg
    assert "nothing serving was changed" in msg
    assert err.value.mismatches == [
        {
            "index": n["users"],
            "staging": f"{n['users']}__restoring_{short_id(w.checkpoint_id)}",
            "what": "docs",
            "expected": real + 3,
            "actual": real,
        }
    ]
    assert _state(http, uid) == before
    assert {k: _docs(http, v) for k, v in n.items()} == docs_before
    assert _indices(http, f"r{uid}-*__restoring_*") == []


def _open_shards(http: httpx.Client) -> int:
    rows = http.get("/_cat/indices", params={"format": "json", "h": "status,pri,rep", "expand_wildcards": "all"}).json()
    return sum(int(r["pri"]) * (1 + int(r["rep"])) for r in rows if r["status"] == "open")


def test_cut_over_failure_rolls_everything_back(node, http, client, uid, tmp_path, cleanup):
    """A real failure in the middle of the cut-over: the checkpoint's orders index has 2 shards, the
    current one 1. With the cluster's shard limit set just high enough for the side-by-side copies
    and the rollback copy, restoring the 2-shard index into place is refused after the current
    index was already deleted; the restore must clone it back from the rollback copy and switch
    the already switched alias back."""
    w = _seed_and_capture(node, http, client, uid, tmp_path, shards={"orders": 2})
    n = w.names
    _damage(http, w)
    # the "migration" also recreated orders with one shard
    http.delete(f"/{n['orders']}").raise_for_status()
    _create(http, n["orders"], ORDER_MAPPING, shards=1)
    _bulk(http, n["orders"], {"m1": {"sku": "migrated"}})
    _aliases(http, [{"add": {"index": n["orders"], "alias": f"r{uid}-orders-extra"}}])
    subset = [n["catalog"], n["orders"]]  # catalog (alias switch) is cut over first, then orders
    before_docs = {k: _docs(http, n[k]) for k in ("catalog", "orders")}
    before = _state(http, uid)
    # side-by-side copies: catalog 1 + orders 2 shards; rollback copy of orders: 1 shard
    limit = _open_shards(http) + 3 + 1
    http.put("/_cluster/settings", json={"transient": {"cluster.max_shards_per_node": limit}}).raise_for_status()
    try:
        with pytest.raises(search.CutOverError) as err:
            search.restore(
                client,
                w.artifact,
                w.doc,
                checkpoint_id=w.checkpoint_id,
                indices=subset,
                wait_timeout=120,
                poll_interval=0.2,
            )
    finally:
        http.put("/_cluster/settings", json={"transient": {"cluster.max_shards_per_node": None}}).raise_for_status()

    e = err.value
    assert e.rolled_back, e.message
    assert f"{n['orders']}: restoring it from {w.repo['name']}:" in e.message
    assert "rolled back completely" in e.message
    assert e.state[n["orders"]].startswith("recreated from the rollback copy")
    assert e.state[n["catalog"]] == f"alias switched back to {n['catalog']}-v2"
    # what was serving serves again: same documents, same aliases, writable
    assert {k: _docs(http, n[k]) for k in ("catalog", "orders")} == before_docs
    assert _alias_holders(http, n["catalog"]) == [f"{n['catalog']}-v2"]
    assert _alias_holders(http, f"r{uid}-orders-extra") == [n["orders"]]
    settings = http.get(f"/{n['orders']}/_settings", params={"flat_settings": "true"}).json()[n["orders"]]["settings"]
    assert settings.get("index.blocks.write") in (None, "false")
    assert _indices(http, f"r{uid}-*__restoring_*") == []
    assert _indices(http, f"{n['orders']}__rollback_*") == []  # the original serves again: no copy kept
    after = _state(http, uid)
    # only the recreated orders index (new uuid) differs
    changed = {r[0] for r in set(after["indices"]) ^ set(before["indices"])}
    assert changed == {n["orders"]}
    assert after["aliases"] == before["aliases"]

    # and once the cause is gone, the same restore succeeds
    outcome = search.restore(
        client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id, indices=subset, wait_timeout=120, poll_interval=0.2
    )
    assert outcome.restored == sorted(subset)
    assert _docs(http, n["orders"]) == w.original["orders"]
    assert _docs(http, n["catalog"]) == w.original["catalog"]
    assert http.get(f"/{n['orders']}/_settings").json()[n["orders"]]["settings"]["index"]["number_of_shards"] == "2"


def test_swap_replace_turns_an_alias_back_into_an_index(node, http, client, uid, tmp_path, cleanup):
    w = _seed_and_capture(node, http, client, uid, tmp_path)
    n = w.names
    _damage(http, w)
    outcome = search.restore(
        client,
        w.artifact,
        w.doc,
        checkpoint_id=w.checkpoint_id,
        indices=[n["catalog"]],
        swap="replace",
        wait_timeout=120,
        poll_interval=0.2,
    )
    assert outcome.details["indices"][n["catalog"]]["action"] == "replace-alias"
    assert outcome.rollback == [f"{n['catalog']}-v2"]
    assert _indices(http, n["catalog"]) == [n["catalog"]]  # a concrete index again
    assert _alias_holders(http, n["catalog"]) == []
    assert _docs(http, n["catalog"]) == w.original["catalog"]
    assert _indices(http, f"r{uid}-*__restoring_*") == []


def test_restoring_the_same_checkpoint_twice_keeps_the_first_copies(node, http, client, uid, tmp_path, cleanup):
    """The second alias switch must not reuse (or delete) the copy the first one made live."""
    w = _seed_and_capture(node, http, client, uid, tmp_path)
    n = w.names
    _damage(http, w)
    short = short_id(w.checkpoint_id)
    first = search.restore(
        client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id, wait_timeout=120, poll_interval=0.2
    )
    live = f"{n['catalog']}__restoring_{short}"
    assert _alias_holders(http, n["catalog"]) == [live]
    # writes after the first restore
    _bulk(http, n["catalog"], {"c-late": {"title": "written after the first restore"}})
    _bulk(http, n["users"], {"u-late": {"name": "late"}})

    second = search.restore(
        client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id, wait_timeout=120, poll_interval=0.2
    )

    assert second.details["short_id"] == f"{short}-2"
    assert _alias_holders(http, n["catalog"]) == [f"{n['catalog']}__restoring_{short}-2"]
    assert live in second.rollback
    assert _docs(http, live) == {**w.original["catalog"], "c-late": {"title": "written after the first restore"}}
    for key in ("catalog", "gone", "nested", "orders", "users", "orders_alias"):
        assert _docs(http, n[key]) == w.original[key], key
    # both restores' rollback copies of users exist, the second holds the late write
    users_rb = [r for r in second.rollback if r.startswith(f"{n['users']}__rollback_")]
    assert len(users_rb) == 1 and "u-late" in _docs(http, users_rb[0])
    assert [r for r in first.rollback if r.startswith(f"{n['users']}__rollback_")][0] in {
        r["index"] for r in search.list_rollbacks(client)
    }
    # a plan now reports the first copy as a leftover and would use <short>-3
    plan = search.plan_restore(client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id, indices=[n["catalog"]])
    (item,) = plan.items
    assert item.staging_name == f"{n['catalog']}__restoring_{short}-3"
    assert any(live in c for c in item.conflicts)


# --------------------------------------------------------------------------- across clusters


def _copy_repo(src_node: dict[str, Any], dst_node: dict[str, Any], w: World, uid: str) -> str:
    """The source repository's files, copied below the other node's path.repo (a shared location)."""
    dst = Path(dst_node["path_repo"]) / f"rr-{uid}-copy"
    shutil.copytree(w.repo["location"], dst)
    return str(dst)


def test_opensearch_snapshot_into_elasticsearch_is_refused(opensearch, elasticsearch, uid, tmp_path):
    os_node = {**opensearch, "kind": "opensearch"}
    with (
        _http(opensearch["url"]) as os_http,
        _http(elasticsearch["url"]) as es_http,
        search.SearchClient(SearchTarget(url=opensearch["url"], timeout=120)) as os_client,
        search.SearchClient(SearchTarget(url=elasticsearch["url"], timeout=120)) as es_client,
    ):
        try:
            w = _seed_and_capture(os_node, os_http, os_client, uid, tmp_path)
            location = _copy_repo(opensearch, elasticsearch, w, uid)
            es_http.put(
                f"/_snapshot/{w.repo['name']}",
                json={"type": "fs", "settings": {"location": location, "readonly": True}},
            ).raise_for_status()
            # Elasticsearch lists the foreign snapshot (with a nonsense version) ...
            listed = es_http.get(f"/_snapshot/{w.repo['name']}/{w.artifact.meta['snapshot']}").json()
            assert listed["snapshots"][0]["uuid"] == w.artifact.meta["uuid"]
            before = _state(es_http, uid)

            plan = search.plan_restore(es_client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id)

            # ... but the plan says why it cannot be restored there
            assert not plan.ok
            assert any(
                "the snapshot was taken by OpenSearch 2.19.1; Elasticsearch cannot restore OpenSearch "
                "snapshots (the target cluster runs Elasticsearch 7.10.2)" in p
                for p in plan.problems
            ), plan.problems
            with pytest.raises(search.RestoreRefusedError, match="Elasticsearch cannot restore OpenSearch"):
                search.restore(es_client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id)
            assert _state(es_http, uid) == before
        finally:
            _cleanup(os_http, uid)
            _cleanup(es_http, uid)


def test_elasticsearch_snapshot_restores_into_opensearch(opensearch, elasticsearch, uid, tmp_path):
    """Restoring into another cluster: the repository is registered there (read-only) by the restore
    itself. Elasticsearch 7.10 snapshots are readable by OpenSearch 2.x (its documented migration path)."""
    es_node = {**elasticsearch, "kind": "elasticsearch"}
    with (
        _http(opensearch["url"]) as os_http,
        _http(elasticsearch["url"]) as es_http,
        search.SearchClient(SearchTarget(url=opensearch["url"], timeout=120)) as os_client,
        search.SearchClient(SearchTarget(url=elasticsearch["url"], timeout=120)) as es_client,
    ):
        try:
            w = _seed_and_capture(es_node, es_http, es_client, uid, tmp_path)
            location = _copy_repo(elasticsearch, opensearch, w, uid)
            settings = {"type": "fs", "settings": {"location": location, "readonly": True}}
            plan = search.plan_restore(
                os_client, w.artifact, w.doc, checkpoint_id=w.checkpoint_id, repository_settings=settings
            )
            assert plan.ok, plan.problems
            assert {i.action for i in plan.items} == {"create"}
            assert "cross-product restore: Elasticsearch 7.10.2 snapshot into OpenSearch 2.19.1" in str(plan)
            assert "not registered yet" in str(plan)

            outcome = search.restore(
                os_client,
                w.artifact,
                w.doc,
                checkpoint_id=w.checkpoint_id,
                repository_settings=settings,
                wait_timeout=120,
                poll_interval=0.2,
            )

            assert outcome.restored == sorted(v for k, v in w.names.items() if k != "orders_alias")
            for key, name in w.names.items():
                assert _docs(os_http, name) == w.original[key], key
            assert _alias_holders(os_http, w.names["orders_alias"]) == [w.names["orders"]]
            checks = search.health(os_client, w.artifact.fingerprints)
            assert all(c.ok for c in checks), [str(c) for c in checks if not c.ok]
        finally:
            _cleanup(os_http, uid)
            _cleanup(es_http, uid)


# --------------------------------------------------------------------------- compatibility rules


@pytest.mark.parametrize(
    ("snap", "cluster", "ok"),
    [
        (("opensearch", "2.19.1"), ("opensearch", "2.19.1"), True),
        (("opensearch", "2.11.0"), ("opensearch", "2.19.1"), True),
        (("opensearch", "2.19.1"), ("opensearch", "3.0.0"), True),
        (("opensearch", "1.3.20"), ("opensearch", "3.1.0"), False),  # two majors up
        (("opensearch", "2.19.1"), ("opensearch", "2.17.0"), False),  # older cluster
        (("opensearch", "2.19.1"), ("elasticsearch", "7.10.2"), False),
        (("opensearch", "1.0.0"), ("elasticsearch", "8.15.0"), False),
        (("elasticsearch", "7.10.2"), ("elasticsearch", "7.10.2"), True),
        (("elasticsearch", "7.17.0"), ("elasticsearch", "8.15.0"), True),
        (("elasticsearch", "7.17.0"), ("elasticsearch", "9.0.0"), False),
        (("elasticsearch", "8.15.0"), ("elasticsearch", "7.17.0"), False),
        (("elasticsearch", "7.10.2"), ("opensearch", "1.3.0"), True),
        (("elasticsearch", "7.10.2"), ("opensearch", "2.19.1"), True),
        (("elasticsearch", "6.8.0"), ("opensearch", "1.3.0"), True),
        (("elasticsearch", "6.8.0"), ("opensearch", "2.19.1"), False),
        (("elasticsearch", "7.10.2"), ("opensearch", "3.0.0"), False),
        (("elasticsearch", "7.17.0"), ("opensearch", "2.19.1"), False),
        (("elasticsearch", "8.0.0"), ("opensearch", "2.19.1"), False),
        (("", "2.19.1"), ("opensearch", "2.19.1"), False),
        (("opensearch", "garbage"), ("opensearch", "2.19.1"), False),
    ],
)
def test_compatibility_rules(snap, cluster, ok):
    problems = search.compatibility_problems(snap[0], snap[1], cluster[0], cluster[1])
    assert (not problems) == ok, problems
    assert all(isinstance(p, str) and p for p in problems)


def test_compatibility_messages_say_why():
    (older,) = search.compatibility_problems("elasticsearch", "8.15.0", "elasticsearch", "7.17.0")
    assert "never restores into an older version" in older
    (jump,) = search.compatibility_problems("opensearch", "1.3.20", "opensearch", "3.1.0")
    assert "from major 1 restores into 1.x or 2.x only" in jump
    (fork,) = search.compatibility_problems("elasticsearch", "7.17.0", "opensearch", "2.19.1")
    assert "up to 7.10.2" in fork
