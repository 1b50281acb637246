"""Helpers for the search integration tests: plain HTTP seeding and checking, independent of the code
under test, against the real OpenSearch and Elasticsearch of the session."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_checkpoint_provider.core.engines import search
from airflow_checkpoint_provider.core.engines.targets import SearchTarget


@pytest.fixture(params=["opensearch", "elasticsearch"])
def node(request) -> dict[str, Any]:
    info = dict(request.getfixturevalue(request.param))
    info["kind"] = request.param
    return info


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:8]


def _http(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=120)


@pytest.fixture
def http(node) -> Iterator[httpx.Client]:
    """A plain client for seeding and checking, independent of the code under test."""
    with _http(node["url"]) as client:
        yield client


@pytest.fixture
def client(node) -> Iterator[search.SearchClient]:
    with search.SearchClient(SearchTarget(url=node["url"], timeout=120)) as c:
        yield c


def _cleanup(http: httpx.Client, uid: str) -> None:
    rows = http.get(
        f"/_cat/indices/r{uid}-*", params={"format": "json", "h": "index", "expand_wildcards": "all"}
    ).json()
    for row in rows if isinstance(rows, list) else []:
        http.delete(f"/{row['index']}")
    name = f"rr-{uid}"
    snaps = http.get(f"/_snapshot/{name}/_all")
    if snaps.status_code == 200:
        for s in snaps.json().get("snapshots", []):
            http.delete(f"/_snapshot/{name}/{s['snapshot']}")
    http.delete(f"/_snapshot/{name}")


@pytest.fixture
def cleanup(http, uid) -> Iterator[None]:
    yield
    _cleanup(http, uid)


def _repo(node: dict[str, Any], uid: str) -> dict[str, Any]:
    location = str(Path(node["path_repo"]) / f"rr-{uid}")
    return {"name": f"rr-{uid}", "location": location, "settings": {"type": "fs", "settings": {"location": location}}}


def _create(http: httpx.Client, name: str, mappings: dict[str, Any] | None = None, shards: int = 1) -> None:
    body: dict[str, Any] = {"settings": {"number_of_shards": shards, "number_of_replicas": 0}}
    if mappings:
        body["mappings"] = mappings
    resp = http.put(f"/{name}", json=body)
    assert resp.status_code == 200, resp.text


def _bulk(http: httpx.Client, index: str, docs: dict[str, dict[str, Any]]) -> None:
    lines = []
    for doc_id, doc in docs.items():
        lines.append(json.dumps({"index": {"_index": index, "_id": doc_id}}))
        lines.append(json.dumps(doc))
    resp = http.post(
        "/_bulk",
        content="\n".join(lines) + "\n",
        params={"refresh": "true"},
        headers={"content-type": "application/x-ndjson"},
    )
    assert resp.status_code == 200 and not resp.json()["errors"], resp.text


def _aliases(http: httpx.Client, actions: list[dict[str, Any]]) -> None:
    resp = http.post("/_aliases", json={"actions": actions})
    assert resp.status_code == 200, resp.text


def _docs(http: httpx.Client, name: str) -> dict[str, Any]:
    """Every document of an index or alias: ``{_id: _source}``."""
    http.post(f"/{name}/_refresh").raise_for_status()
    body = (
        http.post(
            f"/{name}/_search",
            json={"size": 10000, "sort": ["_doc"], "track_total_hits": True, "query": {"match_all": {}}},
        )
        .raise_for_status()
        .json()
    )
    hits = body["hits"]
    assert hits["total"]["value"] == len(hits["hits"]) < 10000
    return {h["_id"]: h["_source"] for h in hits["hits"]}


def _alias_holders(http: httpx.Client, alias: str) -> list[str]:
    resp = http.get(f"/_alias/{alias}")
    return sorted(resp.json()) if resp.status_code == 200 else []


def _indices(http: httpx.Client, pattern: str) -> list[str]:
    rows = http.get(
        f"/_cat/indices/{pattern}", params={"format": "json", "h": "index", "expand_wildcards": "all"}
    ).json()
    return sorted(r["index"] for r in rows)


def _state(http: httpx.Client, uid: str) -> dict[str, Any]:
    """Everything a dry run must not change: indices (uuid, status, docs, settings), aliases,
    repositories and their snapshots, cluster settings."""
    rows = http.get(
        "/_cat/indices",
        params={"format": "json", "h": "index,uuid,status,health,docs.count,pri,rep", "expand_wildcards": "all"},
    ).json()
    settings = http.get(f"/r{uid}-*/_settings", params={"flat_settings": "true", "expand_wildcards": "all"}).json()
    repos = http.get("/_snapshot").json()
    return {
        "indices": sorted((r["index"], r["uuid"], r["status"], r["docs.count"], r["pri"], r["rep"]) for r in rows),
        "aliases": {
            i: a for i, a in http.get("/_alias", params={"expand_wildcards": "all"}).json().items() if a.get("aliases")
        },
        "settings": settings,
        "repositories": repos,
        "snapshots": {
            name: sorted(s["snapshot"] for s in http.get(f"/_snapshot/{name}/_all").json()["snapshots"])
            for name in repos
        },
        "cluster_settings": http.get("/_cluster/settings").json(),
    }


def _settings(http: httpx.Client, index: str) -> dict[str, Any]:
    """The flat settings of an index, without what the server assigns itself."""
    body = http.get(f"/{index}/_settings", params={"flat_settings": "true", "expand_wildcards": "all"}).json()
    return {k: v for k, v in body[index]["settings"].items() if k not in search.SERVER_ASSIGNED_SETTINGS}


def _mappings(http: httpx.Client, index: str) -> dict[str, Any]:
    return http.get(f"/{index}/_mapping", params={"expand_wildcards": "all"}).json()[index]["mappings"]


def _writable(http: httpx.Client, name: str, doc: dict[str, Any] | None = None) -> None:
    """A write (and its delete) succeeds on ``name``; ``doc`` should use mapped fields only, so that the
    probe leaves the mappings as they were."""
    resp = http.put(f"/{name}/_doc/__probe", params={"refresh": "true"}, json=doc or {"probe": 1})
    assert resp.status_code in (200, 201), (name, resp.text)
    http.delete(f"/{name}/_doc/__probe", params={"refresh": "true"}).raise_for_status()
