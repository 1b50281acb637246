"""The search engine against real OpenSearch 2.19.1 and Elasticsearch 7.10.2 nodes (no fakes).

The nodes are shared by the whole session: every test uses its own uuid-named indices and
repositories and removes what could disturb others (red indices).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines import search
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import (
    CaptureError,
    ConnectionFailedError,
    EngineError,
    NotFoundError,
)
from airflow_checkpoint_provider.core.manifest import format_ts, parse_ts

pytestmark = pytest.mark.integration

EXPECTED = {"opensearch": ("opensearch", "2.19.1"), "elasticsearch": ("elasticsearch", "7.10.2")}


@pytest.fixture(params=["opensearch", "elasticsearch"])
def node(request) -> dict[str, Any]:
    info = dict(request.getfixturevalue(request.param))
    info["kind"] = request.param
    return info


@pytest.fixture
def http(node) -> Iterator[httpx.Client]:
    """A plain client for setting up and checking, independent of the code under test."""
    with httpx.Client(base_url=node["url"], timeout=60) as client:
        yield client


@pytest.fixture
def target(node) -> SearchTarget:
    return SearchTarget(url=node["url"], timeout=60)


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def staging(tmp_path, uid):
    store = Store.open(tmp_path / "store", create=True, lock_timeout=30)
    return store.staging(staging_key("test_search", uid))


@pytest.fixture
def repo(node, http, uid) -> Iterator[dict[str, Any]]:
    """A repository name and settings below the node's path.repo; unregistered afterwards."""
    name = f"repo-{uid}"
    location = str(Path(node["path_repo"]) / name)
    yield {"name": name, "location": location, "settings": {"type": "fs", "settings": {"location": location}}}
    snaps = http.get(f"/_snapshot/{name}/_all")
    if snaps.status_code == 200:
        for s in snaps.json().get("snapshots", []):
            http.delete(f"/_snapshot/{name}/{s['snapshot']}")
    http.delete(f"/_snapshot/{name}")


def _create_index(
    http: httpx.Client,
    name: str,
    mappings: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    body: dict[str, Any] = {"settings": {"number_of_shards": 1, "number_of_replicas": 0, **(settings or {})}}
    if mappings is not None:
        body["mappings"] = mappings
    resp = http.put(f"/{name}", json=body, params=params)
    assert resp.status_code == 200, resp.text


def _bulk(http: httpx.Client, index: str, docs: list[dict[str, Any]]) -> None:
    lines = []
    for i, doc in enumerate(docs):
        lines.append(json.dumps({"index": {"_index": index, "_id": str(i)}}))
        lines.append(json.dumps(doc))
    resp = http.post(
        "/_bulk",
        content="\n".join(lines) + "\n",
        params={"refresh": "true"},
        headers={"content-type": "application/x-ndjson"},
    )
    assert resp.status_code == 200 and not resp.json()["errors"], resp.text


def _delete_indices(http: httpx.Client, *names: str) -> None:
    for name in names:
        http.delete(f"/{name}")


def _real_count(http: httpx.Client, index: str) -> int:
    return http.get(f"/{index}/_count").raise_for_status().json()["count"]


def _real_mapping_hash(http: httpx.Client, index: str) -> str:
    mappings = http.get(f"/{index}/_mapping").raise_for_status().json()[index]["mappings"]
    return hashlib.sha256(json.dumps(mappings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_artifact(staging, name: str) -> dict[str, Any]:
    with staging.open_data(name) as f:
        return json.loads(zstandard.ZstdDecompressor().stream_reader(f).read())


@pytest.fixture
def sample_indices(http, uid) -> Iterator[dict[str, str]]:
    """Three indices with different counts (one with nested documents), an alias and a dot-index."""
    names = {
        "plain": f"idx-{uid}-plain",
        "empty": f"idx-{uid}-empty",
        "nested": f"idx-{uid}-nested",
        "dot": f".idx-{uid}-dot",
    }
    _create_index(http, names["plain"], {"properties": {"title": {"type": "text"}, "n": {"type": "integer"}}})
    _bulk(http, names["plain"], [{"title": f"doc {i}", "n": i} for i in range(7)])
    _create_index(http, names["empty"], {"properties": {"k": {"type": "keyword"}}})
    _create_index(
        http,
        names["nested"],
        {
            "properties": {
                "order": {"type": "keyword"},
                "lines": {"type": "nested", "properties": {"sku": {"type": "keyword"}, "qty": {"type": "integer"}}},
            }
        },
    )
    _bulk(
        http,
        names["nested"],
        [{"order": f"o{i}", "lines": [{"sku": f"s{j}", "qty": j} for j in range(3)]} for i in range(4)],
    )
    _create_index(http, names["dot"])
    _bulk(http, names["dot"], [{"x": 1}])
    assert (
        http.post(
            "/_aliases", json={"actions": [{"add": {"index": names["empty"], "alias": f"alias-{uid}"}}]}
        ).status_code
        == 200
    )
    try:
        yield names
    finally:
        _delete_indices(http, *names.values())


# --------------------------------------------------------------------------- info


def test_info_detects_flavor_and_version(node, target):
    with search.SearchClient(target) as client:
        info = client.info()
        assert (info["flavor"], info["version"]) == EXPECTED[node["kind"]]
        assert info["cluster_name"] == node["cluster_name"]
        assert info["cluster_uuid"]
        assert client.cluster_health()["status"] in ("green", "yellow")

    async def via_async():
        async with search.AsyncSearchClient(target) as aclient:
            return await aclient.info()

    assert asyncio.run(via_async()) == info


# --------------------------------------------------------------------------- capture


def test_capture_several_indices(node, target, http, staging, repo, sample_indices, uid):
    names = sample_indices
    # four top-level documents with three nested lines each: _cat counts 16, _count counts 4
    cat = http.get(f"/_cat/indices/{names['nested']}", params={"format": "json", "h": "docs.count"}).json()
    assert int(cat[0]["docs.count"]) == 16

    expressions = [f"idx-{uid}-p*", names["nested"], f"alias-{uid}", f"*{uid}-dot-nomatch*"]
    artifacts = search.capture(
        target,
        staging,
        repository=repo["name"],
        repository_settings=repo["settings"],
        indices=expressions,
        poll_interval=0.2,
        timeout=120,
    )
    assert len(artifacts) == 1
    art = artifacts[0]
    expected_indices = sorted([names["plain"], names["empty"], names["nested"]])

    assert (art.name, art.store, art.kind) == ("search/snapshot.json", "search", "search/snapshot")
    assert (art.engine, art.engine_version) == EXPECTED[node["kind"]]
    assert staging.artifacts() == [art]

    doc = _read_artifact(staging, art.name)
    snap = doc["snapshot"]
    assert snap["indices"] == expected_indices
    assert snap["state"] == "SUCCESS"
    assert snap["include_global_state"] is False
    assert snap["shards"] == {"total": 3, "successful": 3, "failed": 0}
    assert doc["repository"] == {"name": repo["name"], "type": "fs", "settings": {"location": repo["location"]}}
    assert doc["engine"] == EXPECTED[node["kind"]][0]
    assert doc["requested_indices"] == expressions

    # the snapshot really is in the repository, and its files are on disk below path.repo
    real = http.get(f"/_snapshot/{repo['name']}/{snap['name']}").raise_for_status().json()["snapshots"][0]
    assert real["state"] == "SUCCESS"
    assert real["uuid"] == snap["uuid"] == art.meta["uuid"] == art.fingerprints["snapshot_uuid"]
    assert sorted(real["indices"]) == expected_indices
    repo_dir = Path(repo["location"])
    assert (repo_dir / f"snap-{snap['uuid']}.dat").is_file()
    assert (repo_dir / "index.latest").is_file()
    assert len(list((repo_dir / "indices").iterdir())) == 3

    # fingerprints equal what the cluster reports
    fps = art.fingerprints["indices"]
    assert sorted(fps) == expected_indices
    for index in expected_indices:
        assert fps[index] == {"docs": _real_count(http, index), "mapping_sha256": _real_mapping_hash(http, index)}
    assert fps[names["plain"]]["docs"] == 7
    assert fps[names["empty"]]["docs"] == 0
    assert fps[names["nested"]]["docs"] == 4
    assert len({fp["mapping_sha256"] for fp in fps.values()}) == 3
    assert doc["fingerprints"] == art.fingerprints

    assert art.meta == {"repository": repo["name"], "snapshot": snap["name"], "uuid": snap["uuid"]}
    assert snap["name"].startswith("ckpt-test_search__") and snap["name"] == snap["name"].lower()
    assert art.capture_start == format_ts(parse_ts(real["start_time"].replace("Z", "000Z")))
    assert art.capture_end == format_ts(parse_ts(real["end_time"].replace("Z", "000Z")))
    assert art.capture_start <= art.capture_end

    # retention / restore helpers
    with search.SearchClient(target) as client:
        assert client.snapshot_exists(repo["name"], snap["name"]) is True
        assert client.delete_snapshot(repo["name"], snap["name"]) is True
        assert client.snapshot_exists(repo["name"], snap["name"]) is False
        assert client.delete_snapshot(repo["name"], snap["name"], missing_ok=True) is False
        with pytest.raises(NotFoundError, match=snap["name"]):
            client.delete_snapshot(repo["name"], snap["name"])
        with pytest.raises(NotFoundError, match="repository does not exist"):
            client.snapshot_exists(f"no-repo-{uid}", snap["name"])


def test_patterns_skip_dot_indices_unless_named(target, sample_indices, uid):
    names = sample_indices
    with search.SearchClient(target) as client:
        resolved, mappings = client.resolve_indices(f"*{uid}*")
        assert resolved == sorted([names["plain"], names["empty"], names["nested"]])
        assert set(mappings) == set(resolved)
        resolved, _ = client.resolve_indices([f"*{uid}*", names["dot"], f"-*{uid}-n*"])
        assert resolved == sorted([names["dot"], names["plain"], names["empty"]])
        resolved, _ = client.resolve_indices(f".idx-{uid}*")
        assert resolved == [names["dot"]]
        with pytest.raises(NotFoundError, match="no index matches"):
            client.resolve_indices(f"nothing-{uid}-*")


def test_existing_repository_and_explicit_snapshot_name(target, http, staging, repo, sample_indices, uid):
    assert http.put(f"/_snapshot/{repo['name']}", json=repo["settings"]).status_code == 200
    name = f"manual-{uid}"
    [art] = search.capture(
        target,
        staging,
        repository=repo["name"],
        indices=sample_indices["plain"],
        snapshot=name,
        include_global_state=True,
        poll_interval=0.2,
        timeout=120,
    )
    doc = _read_artifact(staging, art.name)
    assert doc["snapshot"]["name"] == name and doc["snapshot"]["include_global_state"] is True
    assert doc["repository"]["settings"] == {"location": repo["location"]}
    assert art.fingerprints["indices"] == {
        sample_indices["plain"]: {"docs": 7, "mapping_sha256": _real_mapping_hash(http, sample_indices["plain"])}
    }
    # the same name again: the server refuses it, and the message says why
    with pytest.raises(CaptureError, match=name) as exc:
        search.capture(target, staging, repository=repo["name"], indices=sample_indices["plain"], snapshot=name)
    assert "HINT:" in str(exc.value)
    with pytest.raises(EngineError, match="invalid snapshot name"):
        search.capture(target, staging, repository=repo["name"], snapshot="Not Lower")


def test_ensure_repository(target, repo):
    with search.SearchClient(target) as client:
        assert client.get_repository(repo["name"]) is None
        # flat settings work too; registering twice with the same settings is a no-op plus verify
        flat = {"location": repo["location"], "compress": True}
        assert client.ensure_repository(repo["name"], flat) == {
            "type": "fs",
            "settings": {"location": repo["location"], "compress": "true"},
        }
        assert client.ensure_repository(repo["name"], flat)["settings"]["compress"] == "true"
        # without settings it must exist, and is returned as registered
        assert client.ensure_repository(repo["name"])["type"] == "fs"
        # other settings re-register it
        moved = repo["location"] + "-moved"
        assert client.ensure_repository(repo["name"], {"type": "fs", "settings": {"location": moved}}) == {
            "type": "fs",
            "settings": {"location": moved},
        }
        assert len(client.verify_repository(repo["name"])) == 1  # the single node


def test_deferrable_path_async_wait_reaches_success(target, http, staging, repo, sample_indices):
    with search.SearchClient(target) as client:
        started = search.capture_begin(
            client,
            repository=repo["name"],
            repository_settings=repo["settings"],
            indices=[sample_indices["plain"], sample_indices["nested"]],
            key=staging.key,
        )
    # what travels through a trigger event / XCom is plain JSON
    carried = json.loads(json.dumps(started.to_dict()))

    state = asyncio.run(
        search.async_wait_for_snapshot(target, repo["name"], carried["snapshot"], poll_interval=0.1, timeout=120)
    )
    assert state["state"] == "SUCCESS"
    assert state["indices"] == sorted([sample_indices["plain"], sample_indices["nested"]])
    assert state["shards"]["failed"] == 0 and state["failures"] == []

    with search.SearchClient(target) as client:
        art = search.capture_finish(
            client, staging, repository=repo["name"], snapshot=carried["snapshot"], started=carried, state=state
        )
    assert art.fingerprints["indices"][sample_indices["nested"]]["docs"] == 4
    assert art.meta["uuid"] == state["uuid"]
    assert art.capture_start == state["start_time"] and art.capture_end == state["end_time"]
    real = http.get(f"/_snapshot/{repo['name']}/{carried['snapshot']}").json()["snapshots"][0]
    assert real["state"] == "SUCCESS" and real["uuid"] == state["uuid"]


# --------------------------------------------------------------------------- bad input


def test_repository_location_outside_path_repo(node, target, staging, sample_indices, tmp_path, uid):
    settings = {"type": "fs", "settings": {"location": str(tmp_path / "outside")}}
    with pytest.raises(EngineError, match="path.repo") as exc:
        search.capture(
            target, staging, repository=f"bad-{uid}", repository_settings=settings, indices=sample_indices["plain"]
        )
    message = str(exc.value)
    assert node["url"] in message
    assert "doesn't match any of the locations specified by path.repo" in message  # the server's reason
    assert str(tmp_path / "outside") in message
    assert "HINT:" in message and "every" in message.split("HINT:")[1]


def test_unknown_repository_without_settings(node, target, staging, sample_indices, uid):
    with pytest.raises(NotFoundError, match=f"nope-{uid}") as exc:
        search.capture(target, staging, repository=f"nope-{uid}", indices=sample_indices["plain"])
    assert node["url"] in str(exc.value) and "HINT:" in str(exc.value)


def test_unknown_index(node, target, staging, repo, uid):
    with pytest.raises(NotFoundError, match=f"missing-{uid}") as exc:
        search.capture(
            target, staging, repository=repo["name"], repository_settings=repo["settings"], indices=[f"missing-{uid}"]
        )
    assert node["url"] in str(exc.value) and "HINT:" in str(exc.value)


def test_closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    target = SearchTarget(url=url, username="elastic", password="s3cret-pw", timeout=5)
    with pytest.raises(ConnectionFailedError, match=f"127.0.0.1:{port}") as exc:
        search.SearchClient(target).info()
    assert "HINT:" in str(exc.value) and "s3cret-pw" not in str(exc.value)

    async def via_async():
        async with search.AsyncSearchClient(target) as client:
            await client.info()

    with pytest.raises(ConnectionFailedError, match=f"127.0.0.1:{port}"):
        asyncio.run(via_async())


@pytest.fixture
def red_index(http, uid) -> Iterator[str]:
    """An index whose only primary shard can never be allocated (health red)."""
    name = f"red-{uid}"
    _create_index(
        http,
        name,
        settings={"index.routing.allocation.require._name": "nonexistent"},
        params={"wait_for_active_shards": "0"},
    )
    try:
        yield name
    finally:
        _delete_indices(http, name)


def test_partial_snapshot_raises_capture_error_listing_shard_failures(target, http, repo, red_index, sample_indices):
    http.put(f"/_snapshot/{repo['name']}", json=repo["settings"]).raise_for_status()
    snap = "partial-snap"
    # partial=true is the only way the server lets a snapshot of an unassigned shard start
    resp = http.put(
        f"/_snapshot/{repo['name']}/{snap}",
        params={"wait_for_completion": "false"},
        json={"indices": f"{red_index},{sample_indices['plain']}", "partial": True, "include_global_state": False},
    )
    assert resp.status_code == 200, resp.text

    with search.SearchClient(target) as client:
        with pytest.raises(search.SnapshotFailedError) as exc:
            client.wait_for_snapshot(repo["name"], snap, poll_interval=0.1, timeout=60)
    message = str(exc.value)
    assert isinstance(exc.value, CaptureError)
    assert "ended PARTIAL" in message and "1 of 2 shards failed" in message
    assert f"index {red_index} shard 0: primary shard is not allocated" in message
    assert sample_indices["plain"] not in message.split("failed indices:")[1].splitlines()[0]
    assert "HINT:" in message

    with pytest.raises(CaptureError, match=f"index {red_index} shard 0"):
        asyncio.run(search.async_wait_for_snapshot(target, repo["name"], snap, poll_interval=0.1, timeout=60))


def test_red_index_refused_before_and_by_the_server(target, staging, repo, red_index, sample_indices):
    # capture() checks index health before anything starts
    with pytest.raises(CaptureError, match=red_index) as exc:
        search.capture(
            target,
            staging,
            repository=repo["name"],
            repository_settings=repo["settings"],
            indices=[red_index, sample_indices["plain"]],
        )
    assert "red" in str(exc.value)
    # and a snapshot started directly with partial=false is refused by the server, naming the index
    with search.SearchClient(target) as client:
        client.ensure_repository(repo["name"], repo["settings"])
        with pytest.raises(CaptureError, match=red_index) as exc:
            client.start_snapshot(repo["name"], "refused", [red_index, sample_indices["plain"]])
        assert "primary shards" in str(exc.value)
        assert client.snapshot_exists(repo["name"], "refused") is False
    assert staging.artifacts() == []


def test_closed_index_is_refused(target, http, staging, repo, sample_indices):
    http.post(f"/{sample_indices['empty']}/_close").raise_for_status()
    with pytest.raises(CaptureError, match=f"closed indices.*{sample_indices['empty']}"):
        search.capture(
            target,
            staging,
            repository=repo["name"],
            repository_settings=repo["settings"],
            indices=[sample_indices["empty"]],
        )


def test_an_index_whose_restore_is_accepted_but_not_yet_recovering_counts_as_restored_from_its_snapshot(
    target, http, repo, uid
):
    """Just after a RESTORE is accepted, ``_recovery`` lists no shard of the index; the replay must
    still see which snapshot it is coming from, or it takes an in-flight restore of a data stream for
    a writer's re-creation and deletes it again. The restored primary is kept unassigned here (an
    allocation filter no node matches), so the window stays open for the whole test."""
    from airflow_checkpoint_provider.core.engines.search import _ops

    name = f"pending-{uid}"
    _create_index(http, name)
    _bulk(http, name, [{"v": i} for i in range(5)])
    http.put(f"/_snapshot/{repo['name']}", json=repo["settings"]).raise_for_status()
    http.put(
        f"/_snapshot/{repo['name']}/s1", params={"wait_for_completion": "true"}, json={"indices": name}
    ).raise_for_status()
    try:
        http.delete(f"/{name}").raise_for_status()
        resp = http.post(
            f"/_snapshot/{repo['name']}/s1/_restore",
            json={"indices": name, "index_settings": {"index.routing.allocation.require._name": "nonexistent"}},
        )
        assert resp.status_code == 200, resp.text
        assert http.get(f"/{name}/_recovery").json().get(name, {}).get("shards", []) == []
        with search.SearchClient(target) as client:
            assert _ops.recovered_from(client, name) == (repo["name"], "s1")
            assert _ops.recovered_from(client, name + "-none") is None
    finally:
        _delete_indices(http, name)
