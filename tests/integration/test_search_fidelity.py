"""Restore fidelity against the real OpenSearch 2.19 and Elasticsearch 7.10: settings, data streams,
templates, the repository on another cluster, the provider's own copies, and repeated recoveries.

Every test seeds its own ``f<uid>-*`` indices (and templates, data streams, repository) over plain
HTTP, captures them with ``search.capture`` into a real store, damages them and restores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines import search
from airflow_checkpoint_provider.core.engines.search.component import SearchRestore
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import CaptureError
from tests.integration.search_helpers import (  # noqa: F401 - fixtures are used by name
    _alias_holders,
    _aliases,
    _bulk,
    _cleanup,
    _create,
    _docs,
    _indices,
    _mappings,
    _repo,
    _settings,
    _writable,
    client,
    http,
    node,
    uid,
)

pytestmark = pytest.mark.integration
ARTIFACT = "search/snapshot.json"


class Checkpoint:
    """One checkpoint taken with ``search.capture`` into a real store."""

    def __init__(self, node: dict[str, Any], uid: str, tmp_path: Path, indices: Any, key: str = "f", **kw: Any):
        self.repo = _repo(node, uid)
        self.store = Store.open(tmp_path / "store", create=True, lock_timeout=30)
        staging = self.store.staging(staging_key("fidelity", f"{uid}-{key}"))
        search.capture(
            SearchTarget(url=node["url"], timeout=120),
            staging,
            repository=self.repo["name"],
            repository_settings=self.repo["settings"],
            indices=indices,
            poll_interval=0.1,
            timeout=120,
            **kw,
        )
        self.cid = self.store.seal(staging).checkpoint_id
        self.artifact = self.store.get(self.cid).manifest.artifact(ARTIFACT)
        with self.store.open_artifact(self.cid, ARTIFACT) as f:
            self.doc = json.loads(f.read())

    def restore(self, client: search.SearchClient, **kw: Any):
        return search.restore(
            client, self.artifact, self.doc, checkpoint_id=self.cid, wait_timeout=120, poll_interval=0.1, **kw
        )


@pytest.fixture
def clean(http, uid):
    yield
    _cleanup_all(http, uid)


def _cleanup_all(http: httpx.Client, uid: str) -> None:
    if http.get("/_data_stream").status_code == 200:
        http.delete(f"/_data_stream/r{uid}-*")
    for kind in ("_index_template", "_template", "_component_template"):
        for name in (f"r{uid}-tpl", f"r{uid}-legacy", f"r{uid}-comp", f"r{uid}-ds-tpl"):
            http.delete(f"/{kind}/{name}")
    _cleanup(http, uid)
    for row in (
        http.get(
            f"/_cat/indices/.ds-r{uid}-*", params={"format": "json", "h": "index", "expand_wildcards": "all"}
        ).json()
        or []
    ):
        http.delete(f"/{row['index']}")


def _has_streams(http: httpx.Client) -> bool:
    resp = http.get("/_data_stream")
    return resp.status_code == 200 and "data_streams" in resp.json()


# --------------------------------------------------------------------------- settings


def test_restored_index_settings_equal_the_original(node, http, client, uid, tmp_path, clean):
    p = f"r{uid}"
    http.put(
        f"/{p}-rich",
        json={
            "settings": {
                "number_of_shards": 2,
                "number_of_replicas": 0,
                "refresh_interval": "7s",
                "max_result_window": 20000,
                "routing_partition_size": 1,
                "analysis": {
                    "analyzer": {"folded": {"tokenizer": "standard", "filter": ["lowercase", "asciifolding"]}}
                },
            },
            "mappings": {
                "properties": {
                    "title": {"type": "text", "analyzer": "folded"},
                    "n": {"type": "integer"},
                    "lines": {"type": "nested", "properties": {"q": {"type": "integer"}}},
                }
            },
        },
    ).raise_for_status()
    _bulk(
        http, f"{p}-rich", {f"r{i}": {"title": f"Crème {i}", "n": i, "lines": [{"q": i}, {"q": -i}]} for i in range(8)}
    )
    _create(http, f"{p}-plain")
    _bulk(http, f"{p}-plain", {f"p{i}": {"v": i} for i in range(3)})
    _create(http, f"{p}-gone")
    _bulk(http, f"{p}-gone", {"g": {"v": 1}})
    names = [f"{p}-rich", f"{p}-plain", f"{p}-gone"]
    original = {n: (_settings(http, n), _mappings(http, n), _docs(http, n)) for n in names}
    ck = Checkpoint(node, uid, tmp_path, [f"{p}-*"])
    # damage: a dynamic setting changed, documents changed, an index deleted
    http.put(
        f"/{p}-rich/_settings", json={"index.refresh_interval": "30s", "index.max_result_window": 100}
    ).raise_for_status()
    _bulk(http, f"{p}-plain", {"junk": {"v": -1}})
    http.delete(f"/{p}-gone").raise_for_status()

    ck.restore(client)

    for n in names:
        raw = http.get(f"/{n}/_settings", params={"flat_settings": "true"}).json()[n]["settings"]
        assert "index.resize.source.name" not in raw and "index.resize.source.uuid" not in raw, n
        assert (_settings(http, n), _mappings(http, n), _docs(http, n)) == original[n], n
    assert "index.routing_partition_size" not in _settings(http, f"{p}-plain")  # not added where it was not set
    assert set(search.SERVER_ASSIGNED_SETTINGS) == {
        "index.uuid",
        "index.creation_date",
        "index.provided_name",
        "index.history.uuid",
        "index.version.upgraded",
    }


# --------------------------------------------------------------------------- data streams


def _stream_setup(http: httpx.Client, p: str) -> dict[str, Any]:
    http.put(
        f"/_index_template/{p}-ds-tpl",
        json={
            "index_patterns": [f"{p}-logs*"],
            "data_stream": {},
            "priority": 800,
            "template": {
                "settings": {"number_of_replicas": 0},
                "mappings": {"properties": {"msg": {"type": "keyword"}}},
            },
        },
    ).raise_for_status()
    for i in range(6):
        resp = http.put(
            f"/{p}-logs/_create/e{i}",
            params={"refresh": "true"},
            json={"@timestamp": f"2026-05-01T10:00:0{i}Z", "msg": f"event {i}"},
        )
        assert resp.status_code == 201, resp.text
    http.post(f"/{p}-logs/_rollover").raise_for_status()  # two backing indices
    resp = http.put(
        f"/{p}-logs/_create/e9",
        params={"refresh": "true"},
        json={"@timestamp": "2026-05-01T11:00:00Z", "msg": "after rollover"},
    )
    assert resp.status_code == 201, resp.text
    return _docs(http, f"{p}-logs")


def test_data_stream_is_restored_as_a_writable_data_stream(node, http, client, uid, tmp_path, clean):
    if not _has_streams(http):
        pytest.skip(
            "this Elasticsearch build has no data streams (they come with its x-pack data-streams module, "
            "which the Maven Central build lacks)"
        )
    p = f"r{uid}"
    docs = _stream_setup(http, p)
    _create(http, f"{p}-app")
    _bulk(http, f"{p}-app", {"a": {"v": 1}})
    backing = [i["index_name"] for i in http.get(f"/_data_stream/{p}-logs").json()["data_streams"][0]["indices"]]
    assert len(backing) == 2
    ck = Checkpoint(node, uid, tmp_path, [f"{p}-*"])  # a pattern: the stream must not be left out
    assert sorted(ck.doc["data_streams"]) == [f"{p}-logs"]
    assert ck.doc["data_streams"][f"{p}-logs"]["backing_indices"] == backing
    assert (
        set(backing) <= set(ck.artifact.fingerprints["indices"]) and f"{p}-app" in ck.artifact.fingerprints["indices"]
    )
    assert ck.doc["snapshot"]["data_streams"] == [f"{p}-logs"]

    http.delete(f"/_data_stream/{p}-logs").raise_for_status()  # damage
    plan = search.plan_restore(client, ck.artifact, ck.doc, checkpoint_id=ck.cid)
    assert {i.target: i.action for i in plan.items if i.target.startswith(p)} == {
        f"{p}-app": "replace",
        f"{p}-logs": "create-stream",
    }, plan

    ck.restore(client)

    ds = http.get(f"/_data_stream/{p}-logs").json()["data_streams"]
    assert [d["name"] for d in ds] == [f"{p}-logs"] and [i["index_name"] for i in ds[0]["indices"]] == backing
    assert _docs(http, f"{p}-logs") == docs
    checks = search.health(client, ck.artifact.fingerprints)
    assert all(c.ok for c in checks) and f"data stream {p}-logs exists" in {c.check for c in checks}, [
        str(c) for c in checks if not c.ok
    ]
    resp = http.post(
        f"/{p}-logs/_doc", params={"refresh": "true"}, json={"@timestamp": "2026-05-02T00:00:00Z", "msg": "new write"}
    )
    assert resp.status_code == 201 and resp.json()["_index"] == backing[-1], resp.text
    assert http.post(f"/{p}-logs/_rollover").status_code == 200


def test_existing_data_stream_is_replaced_and_its_rollback_snapshot_listed(node, http, client, uid, tmp_path, clean):
    if not _has_streams(http):
        pytest.skip("this Elasticsearch build has no data streams")
    p = f"r{uid}"
    docs = _stream_setup(http, p)
    ck = Checkpoint(node, uid, tmp_path, [f"{p}-logs"])  # named explicitly: captured as a data stream too
    assert sorted(ck.doc["data_streams"]) == [f"{p}-logs"]
    http.put(
        f"/{p}-logs/_create/junk",
        params={"refresh": "true"},
        json={"@timestamp": "2026-06-01T00:00:00Z", "msg": "junk"},
    ).raise_for_status()
    damaged = _docs(http, f"{p}-logs")

    outcome = ck.restore(client)

    assert _docs(http, f"{p}-logs") == docs
    (rb,) = [r for r in outcome.rollback if r.startswith("ckpt-rollback-")]
    listed = [
        r
        for r in search.list_rollbacks(client, repository=ck.repo["name"], checkpoints=[ck.cid])
        if r["kind"] == "snapshot"
    ]
    assert [(r["index"], r["source"], r["checkpoint"], r["docs"]) for r in listed] == [
        (rb, f"{p}-logs", ck.cid, len(damaged))
    ]
    assert listed[0]["size_bytes"] and listed[0]["age_seconds"] is not None
    search.drop_rollback(client, rb, repository=ck.repo["name"])
    assert not [r for r in search.list_rollbacks(client, repository=ck.repo["name"]) if r["kind"] == "snapshot"]


# --------------------------------------------------------------------------- templates


def _templates(http: httpx.Client, p: str) -> dict[str, Any]:
    out = {}
    comp = http.get(f"/_component_template/{p}-comp")
    out["component"] = comp.json()["component_templates"][0]["component_template"] if comp.status_code == 200 else None
    idx = http.get(f"/_index_template/{p}-tpl")
    out["index"] = idx.json()["index_templates"][0]["index_template"] if idx.status_code == 200 else None
    leg = http.get(f"/_template/{p}-legacy")
    out["legacy"] = leg.json()[f"{p}-legacy"] if leg.status_code == 200 else None
    return out


def _template_setup(http: httpx.Client, p: str) -> None:
    http.put(
        f"/_component_template/{p}-comp",
        json={
            "template": {
                "settings": {"index.refresh_interval": "3s"},
                "mappings": {"properties": {"c": {"type": "keyword"}}},
            },
            "version": 2,
        },
    ).raise_for_status()
    http.put(
        f"/_index_template/{p}-tpl",
        json={
            "index_patterns": [f"{p}-daily-*"],
            "composed_of": [f"{p}-comp"],
            "priority": 700,
            "template": {"settings": {"number_of_shards": 1, "number_of_replicas": 0}},
        },
    ).raise_for_status()
    http.put(
        f"/_template/{p}-legacy",
        json={
            "index_patterns": [f"{p}-old-*"],
            "order": 3,
            "settings": {"number_of_replicas": 0},
            "mappings": {"properties": {"l": {"type": "keyword"}}},
        },
    ).raise_for_status()


def test_templates_are_captured_and_recreated_in_a_cluster_that_lacks_them(node, http, client, uid, tmp_path, clean):
    p = f"r{uid}"
    _template_setup(http, p)
    http.put(
        f"/_index_template/{p}-unrelated", json={"index_patterns": [f"{p}-zzz-*"], "priority": 701}
    ).raise_for_status()
    _bulk(http, f"{p}-daily-1", {"d": {"c": "x"}})
    _bulk(http, f"{p}-old-1", {"o": {"l": "y"}})
    templates = _templates(http, p)
    docs = {n: _docs(http, n) for n in (f"{p}-daily-1", f"{p}-old-1")}
    ck = Checkpoint(node, uid, tmp_path, [f"{p}-daily-*", f"{p}-old-*"])
    http.delete(f"/_index_template/{p}-unrelated")
    assert {k: sorted(v) for k, v in ck.doc["templates"].items()} == {
        "component_templates": [f"{p}-comp"],
        "index_templates": [f"{p}-tpl"],
        "legacy_templates": [f"{p}-legacy"],
    }
    # a new cluster, as far as these are concerned: no indices, no templates
    for name in docs:
        http.delete(f"/{name}").raise_for_status()
    http.delete(f"/_index_template/{p}-tpl").raise_for_status()
    http.delete(f"/_component_template/{p}-comp").raise_for_status()
    http.delete(f"/_template/{p}-legacy").raise_for_status()
    plan = search.plan_restore(client, ck.artifact, ck.doc, checkpoint_id=ck.cid)
    assert sorted((i.action, i.target) for i in plan.items if i.action.endswith("-template")) == [
        ("create-template", f"{p}-comp"),
        ("create-template", f"{p}-legacy"),
        ("create-template", f"{p}-tpl"),
    ]

    ck.restore(client)

    assert _templates(http, p) == templates
    assert {n: _docs(http, n) for n in docs} == docs
    _bulk(http, f"{p}-daily-2", {"n": {"c": "new"}})  # tomorrow's index gets what the templates give it
    assert _settings(http, f"{p}-daily-2")["index.refresh_interval"] == "3s"
    assert _mappings(http, f"{p}-daily-2")["properties"]["c"] == {"type": "keyword"}


def test_differing_template_is_reported_and_not_silently_overwritten(node, http, client, uid, tmp_path, clean):
    p = f"r{uid}"
    _template_setup(http, p)
    _bulk(http, f"{p}-daily-1", {"d": {"c": "x"}})
    ck = Checkpoint(node, uid, tmp_path, [f"{p}-daily-1"])
    original = _templates(http, p)["index"]
    changed = {
        "index_patterns": [f"{p}-daily-*"],
        "composed_of": [f"{p}-comp"],
        "priority": 700,
        "template": {"settings": {"number_of_shards": 3, "number_of_replicas": 0}},
    }
    http.put(f"/_index_template/{p}-tpl", json=changed).raise_for_status()
    live = _templates(http, p)["index"]

    plan = search.plan_restore(client, ck.artifact, ck.doc, checkpoint_id=ck.cid)
    (item,) = [i for i in plan.items if i.target == f"{p}-tpl"]
    assert (
        item.action == "keep-template"
        and "template.settings.index.number_of_shards: '3' (checkpoint: '1')" in item.conflicts[0]
    ), item
    ck.restore(client)
    assert _templates(http, p)["index"] == live  # left as it is

    plan = search.plan_restore(client, ck.artifact, ck.doc, checkpoint_id=ck.cid, restore_templates=True)
    (item,) = [i for i in plan.items if i.target == f"{p}-tpl"]
    assert item.action == "overwrite-template" and "will be overwritten" in item.conflicts[0]
    ck.restore(client, restore_templates=True)
    assert _templates(http, p)["index"] == original


# --------------------------------------------------------------------------- the repository on another cluster


def test_search_restore_registers_a_missing_repository_from_repository_settings(node, http, uid, tmp_path, clean):
    p = f"r{uid}"
    _create(http, f"{p}-a")
    _bulk(http, f"{p}-a", {"a": {"v": 1}})
    ck = Checkpoint(node, uid, tmp_path, [f"{p}-a"])
    http.delete(f"/_snapshot/{ck.repo['name']}").raise_for_status()  # the other cluster never had it
    http.delete(f"/{p}-a").raise_for_status()
    target = SearchTarget(url=node["url"], timeout=120)

    bad = SearchRestore(
        target,
        ck.store,
        ck.cid,
        ck.artifact,
        repository_settings={"type": "fs", "settings": {"location": str(tmp_path / "not-below-path-repo")}},
    )
    _, problems = bad.plan()
    assert any("is not below path.repo" in x and str(tmp_path / "not-below-path-repo") in x for x in problems), problems
    with pytest.raises(search.RestoreRefusedError, match="path.repo") as err:
        bad.prepare()
    assert "HINT" in str(err.value) or err.value.hint
    assert http.get(f"/_snapshot/{ck.repo['name']}").status_code == 404

    part = SearchRestore(
        target,
        ck.store,
        ck.cid,
        ck.artifact,
        repository_settings={"type": "fs", "settings": {"location": ck.repo["location"], "readonly": True}},
    )
    items, problems = part.plan()
    assert not problems and "not registered yet" in " ".join(n for i in items for n in i.notes)
    part.prepare()
    part.cutover()
    repo = http.get(f"/_snapshot/{ck.repo['name']}").json()[ck.repo["name"]]
    assert repo["type"] == "fs" and repo["settings"]["readonly"] == "true"
    assert _docs(http, f"{p}-a") == {"a": {"v": 1}}


# --------------------------------------------------------------------------- own copies, counts, repetition


def test_captures_leave_out_the_provider_own_copies(node, http, client, uid, tmp_path, clean):
    p = f"r{uid}"
    for name in (
        f"{p}-a",
        f"{p}-a__rollback_abc123_20260101000000",
        f"{p}-a__restoring_abc123",
        f"{p}-b__restoring_def456",
        f"{p}-c__drill_x1",
    ):
        _bulk(http, name, {"d": {"v": 1}})
    _aliases(http, [{"add": {"index": f"{p}-b__restoring_def456", "alias": f"{p}-b"}}])  # an alias-mode restore

    names, _, _ = search.resolve_capture(client, [f"{p}-*"])
    assert names == [f"{p}-a", f"{p}-b__restoring_def456"]  # the served copy is application data
    everything, _, _ = search.resolve_capture(client, None)
    assert {n for n in everything if n.startswith(p)} == {f"{p}-a", f"{p}-b__restoring_def456"}
    assert set(search.resolve_capture(client, [f"{p}-*"], include_own_copies=True)[0]) == {
        f"{p}-a",
        f"{p}-a__rollback_abc123_20260101000000",
        f"{p}-a__restoring_abc123",
        f"{p}-b__restoring_def456",
        f"{p}-c__drill_x1",
    }
    with pytest.raises(CaptureError, match="copy made by a restore") as err:
        search.resolve_capture(client, [f"{p}-a__rollback_abc123_20260101000000"])
    assert "include_own_copies" in err.value.hint
    ck = Checkpoint(node, uid, tmp_path, [f"{p}-*"])
    assert sorted(ck.artifact.fingerprints["indices"]) == [f"{p}-a", f"{p}-b__restoring_def456"]


def test_plan_counts_nested_documents_the_way_the_checkpoint_does(node, http, client, uid, tmp_path, clean):
    p = f"r{uid}"
    http.put(
        f"/{p}-n",
        json={
            "settings": {"number_of_replicas": 0},
            "mappings": {"properties": {"lines": {"type": "nested", "properties": {"q": {"type": "integer"}}}}},
        },
    ).raise_for_status()
    _bulk(http, f"{p}-n", {f"n{i}": {"lines": [{"q": 1}, {"q": 2}, {"q": 3}]} for i in range(12)})
    ck = Checkpoint(node, uid, tmp_path, [f"{p}-n"])
    cat = http.get(f"/_cat/indices/{p}-n", params={"format": "json", "h": "docs.count"}).json()[0]["docs.count"]
    assert int(cat) == 48  # what the plan used to show: nested documents counted too

    (item,) = search.plan_restore(client, ck.artifact, ck.doc, checkpoint_id=ck.cid).items
    assert "checkpoint: 12 documents" in item.notes
    assert any("(12 documents now)" in c for c in item.conflicts), item.conflicts


def test_checkpoint_damage_restore_three_times_in_a_row_is_exact(node, http, client, uid, tmp_path, clean):
    """Recovery can be repeated: each cycle checkpoints what the previous restore left (rollback copies,
    an alias-served copy), damages it and restores; every document, setting and alias is exact."""
    p = f"r{uid}"
    _create(http, f"{p}-orders", shards=2)
    _bulk(http, f"{p}-orders", {f"o{i}": {"sku": f"s{i}", "qty": i} for i in range(20)})
    _aliases(http, [{"add": {"index": f"{p}-orders", "alias": f"{p}-orders-read"}}])
    _create(http, f"{p}-catalog")
    _bulk(http, f"{p}-catalog", {f"c{i}": {"title": f"item {i}"} for i in range(5)})
    for cycle in range(1, 4):
        serving = {"orders": f"{p}-orders", "catalog": _alias_holders(http, f"{p}-catalog") or [f"{p}-catalog"]}
        catalog = serving["catalog"][0]
        expected = {
            "orders": _docs(http, f"{p}-orders"),
            "read": _docs(http, f"{p}-orders-read"),
            "catalog": _docs(http, f"{p}-catalog"),
        }
        settings = {"orders": _settings(http, f"{p}-orders"), "catalog": _settings(http, catalog)}
        ck = Checkpoint(node, uid, tmp_path, [f"{p}-*"], key=f"c{cycle}")
        captured = sorted(ck.artifact.fingerprints["indices"])
        assert captured == sorted({f"{p}-orders", catalog}), (cycle, captured)  # no rollback copies
        # damage: documents changed and deleted, the alias moved, catalog migrated behind an alias
        _bulk(http, f"{p}-orders", {"o1": {"sku": "changed", "qty": -1}, f"junk{cycle}": {"sku": "junk"}})
        http.delete(f"/{p}-orders/_doc/o2", params={"refresh": "true"}).raise_for_status()
        _aliases(http, [{"remove": {"index": f"{p}-orders", "alias": f"{p}-orders-read"}}])
        _bulk(http, f"{p}-catalog-v{cycle}", {"x": {"title": "migrated"}})
        if http.get(f"/_alias/{p}-catalog").status_code == 200:
            holders = _alias_holders(http, f"{p}-catalog")
            _aliases(
                http,
                [{"remove": {"index": h, "alias": f"{p}-catalog"}} for h in holders]
                + [{"add": {"index": f"{p}-catalog-v{cycle}", "alias": f"{p}-catalog"}}],
            )
        else:
            http.delete(f"/{p}-catalog").raise_for_status()
            _aliases(http, [{"add": {"index": f"{p}-catalog-v{cycle}", "alias": f"{p}-catalog"}}])

        ck.restore(client)

        assert _docs(http, f"{p}-orders") == expected["orders"], cycle
        assert _docs(http, f"{p}-orders-read") == expected["read"], cycle
        assert _docs(http, f"{p}-catalog") == expected["catalog"], cycle
        assert _alias_holders(http, f"{p}-orders-read") == [f"{p}-orders"]
        assert _settings(http, f"{p}-orders") == settings["orders"], cycle
        (now_serving,) = _alias_holders(http, f"{p}-catalog")
        assert _settings(http, now_serving) == settings["catalog"], cycle
        _writable(http, f"{p}-orders", {"qty": 0})
        http.delete(f"/{p}-catalog-v{cycle}").raise_for_status()  # the migration's index, no longer wanted
        assert search.find_leftovers(client) == [] or all(
            not x["index"].startswith(p) for x in search.find_leftovers(client)
        )
