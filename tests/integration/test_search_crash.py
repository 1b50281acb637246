"""A search restore killed (SIGKILL) at every journaled step, then replayed from its journal.

For every crash point the search engine declares (``crashpoints.REGISTERED``, so a new step
without a test fails here), a child process runs a real journaled restore (or a restore and its
rollback, for the rollback's steps) into the real OpenSearch 2.19 / Elasticsearch 7.10 and kills
itself there. Then, with the journal entry the child left in the real store:

- before the replay, nothing is lost: each replaced index's documents are in it or in its
  rollback copy, and every index that is missing, closed or read-only is named by a journal step;
- :func:`search.recover` rolls forward (the copies had verified) or back (a rollback had begun);
- after it: every index and the data stream are present, open and writable, no write block and
  no side-by-side copy remain, and every document (``_id`` and ``_source``), the settings and the
  mappings are exactly the checkpoint's (forward) or exactly the damaged originals (back); the
  template is there (forward) or gone again (back); a second replay changes nothing.

The world is seeded and captured once per server; each point resets the damaged state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_checkpoint_provider.core import Store, crashpoints, staging_key
from airflow_checkpoint_provider.core.engines import search
from airflow_checkpoint_provider.core.engines.search import _steps
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.journal import Journal
from tests.integration.search_helpers import _bulk, _create, _docs, _mappings, _settings, _writable

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
#: a kill right after the data stream's RESTORE was sent is recovered with the data rolled forward,
#: but about one run in three the index template that the restore put first is then missing (404):
#: an open defect of the replay, kept visible here until it is fixed
POINTS = sorted(p for p in crashpoints.REGISTERED if p.startswith("search."))
PROBE = {"same": {"t": "probe"}, "shards": {"v": 0}, "swap": {"v": 0}, "gone": {"v": 0}}
STREAM_STEPS = {"snapshot_stream", "delete_stream", "restore_stream", "rollback_stream"}
#: what each step's restore selects: the smallest set that reaches the step (keeps the set fast); the
#: template is restored with any selection
SUBSET = {
    "delete": ["shards"],
    "alias_switch": ["same", "swap"],
    "rollback_alias": ["swap", "same"],
    "restore_index": ["gone", "same"],
    **{s: ["logs"] for s in STREAM_STEPS},
}


def _step(point: str) -> str:
    return point.split(".")[1]


@dataclass
class World:
    node: dict[str, Any]
    p: str  #: name prefix of everything this world makes
    store_root: Path
    cid: str
    repo: str
    streams: bool  #: the cluster has data streams (OpenSearch; Elasticsearch only with its x-pack module)
    original: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    mappings: dict[str, Any] = field(default_factory=dict)
    template: dict[str, Any] = field(default_factory=dict)
    damaged: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> dict[str, str]:
        p = self.p
        return {
            "same": f"{p}-same",
            "shards": f"{p}-shards",
            "swap": f"{p}-swap",
            "gone": f"{p}-gone",
            "logs": f"{p}-logs",
            "read": f"{p}-same-read",
        }


def _has_streams(http: httpx.Client) -> bool:
    resp = http.get("/_data_stream")
    return resp.status_code == 200 and "data_streams" in resp.json()


def _wipe(http: httpx.Client, w: World, *, keep_snapshot: bool = True) -> None:
    if w.streams:
        http.delete(f"/_data_stream/{w.p}-*")
    rows = http.get(
        f"/_cat/indices/{w.p}-*,.ds-{w.p}-*", params={"format": "json", "h": "index", "expand_wildcards": "all"}
    ).json()
    for row in rows if isinstance(rows, list) else []:
        http.delete(f"/{row['index']}")
    http.delete(f"/_index_template/{w.p}-tpl")
    snaps = http.get(f"/_snapshot/{w.repo}/_all")
    if snaps.status_code == 200:
        for s in snaps.json().get("snapshots", []):
            if not keep_snapshot or s["snapshot"].startswith("ckpt-rollback-"):
                http.delete(f"/_snapshot/{w.repo}/{s['snapshot']}")


def _stream_docs(http: httpx.Client, name: str) -> dict[str, Any]:
    return dict(_docs(http, name))


def _write_stream(http: httpx.Client, name: str, docs: dict[str, dict[str, Any]]) -> None:
    for doc_id, doc in docs.items():
        resp = http.put(f"/{name}/_create/{doc_id}", params={"refresh": "true"}, json=doc)
        assert resp.status_code == 201, resp.text


def _seed(http: httpx.Client, w: World) -> None:
    n = w.names
    http.put(
        f"/_index_template/{w.p}-tpl",
        json={
            "index_patterns": [f"{w.p}-same*"],
            "priority": 900,
            "template": {
                "settings": {"number_of_replicas": 0, "refresh_interval": "2s"},
                "mappings": {"properties": {"t": {"type": "keyword"}}},
            },
        },
    ).raise_for_status()
    _create(http, n["same"])
    _bulk(http, n["same"], {f"s{i}": {"t": f"same {i}"} for i in range(5)})
    http.post("/_aliases", json={"actions": [{"add": {"index": n["same"], "alias": n["read"]}}]}).raise_for_status()
    _create(http, n["shards"], shards=2)
    _bulk(http, n["shards"], {f"h{i}": {"v": i} for i in range(6)})
    _create(http, n["swap"])
    _bulk(http, n["swap"], {f"w{i}": {"v": i} for i in range(3)})
    _create(http, n["gone"])
    _bulk(http, n["gone"], {f"g{i}": {"v": i} for i in range(2)})
    if w.streams:
        http.put(
            f"/_index_template/{w.p}-ds-tpl",
            json={
                "index_patterns": [f"{w.p}-logs*"],
                "data_stream": {},
                "priority": 900,
                "template": {"settings": {"number_of_replicas": 0}},
            },
        ).raise_for_status()
        _write_stream(http, n["logs"], {f"l{i}": {"@timestamp": f"2026-01-01T00:00:0{i}Z", "m": i} for i in range(4)})


def _damage(http: httpx.Client, w: World) -> None:
    """The state a restore replaces: every kind of cut-over has something to do."""
    _wipe(http, w)
    n = w.names
    _create(http, n["same"])  # no template now: dynamic mapping
    _bulk(http, n["same"], {"s0": {"t": "changed"}, "junk": {"t": "junk"}})
    _create(http, n["shards"], shards=1)
    _bulk(http, n["shards"], {"m1": {"v": "migrated"}})
    _create(http, f"{n['swap']}-v2")
    _bulk(http, f"{n['swap']}-v2", {"v2": {"v": 2}})
    http.post(
        "/_aliases",
        json={
            "actions": [
                {"add": {"index": f"{n['swap']}-v2", "alias": n["swap"]}},
                {"add": {"index": n["shards"], "alias": n["read"]}},
            ]
        },
    ).raise_for_status()
    if w.streams:
        _write_stream(http, n["logs"], {"d1": {"@timestamp": "2026-02-01T00:00:00Z", "m": "damaged"}})


def _snapshot_docs(http: httpx.Client, w: World) -> dict[str, Any]:
    n = w.names
    out = {k: _docs(http, n[k]) for k in ("same", "shards", "swap", "read")}
    if w.streams:
        out["logs"] = _stream_docs(http, n["logs"])
    return out


@pytest.fixture(scope="module", params=["opensearch", "elasticsearch"])
def world(request, tmp_path_factory):
    node = dict(request.getfixturevalue(request.param))
    uid = uuid.uuid4().hex[:6]
    repo = f"kr-{uid}"
    store_root = tmp_path_factory.mktemp(f"crash-{request.param}") / "store"
    with httpx.Client(base_url=node["url"], timeout=120) as http:
        w = World(node=node, p=f"k{uid}", store_root=store_root, cid="", repo=repo, streams=_has_streams(http))
        _seed(http, w)
        w.original = {k: _docs(http, v) for k, v in w.names.items() if k != "logs"}
        if w.streams:
            w.original["logs"] = _stream_docs(http, w.names["logs"])
        w.settings = {k: _settings(http, w.names[k]) for k in ("same", "shards", "swap", "gone")}
        w.mappings = {k: _mappings(http, w.names[k]) for k in ("same", "shards", "swap", "gone")}
        w.template = http.get(f"/_index_template/{w.p}-tpl").json()["index_templates"][0]["index_template"]
        store = Store.open(store_root, create=True, lock_timeout=30)
        staging = store.staging(staging_key("crash", uid))
        location = str(Path(node["path_repo"]) / repo)
        search.capture(
            SearchTarget(url=node["url"], timeout=120),
            staging,
            repository=repo,
            repository_settings={"type": "fs", "settings": {"location": location}},
            indices=[f"{w.p}-*"],
            poll_interval=0.1,
            timeout=120,
        )
        w.cid = store.seal(staging).checkpoint_id
        _damage(http, w)
        w.damaged = _snapshot_docs(http, w)
        yield w
        _wipe(http, w, keep_snapshot=False)
        http.delete(f"/_index_template/{w.p}-ds-tpl")
        http.delete(f"/_snapshot/{repo}")


def _run_child(w: World, point: str, scenario: str, keys: list[str]) -> tuple[subprocess.CompletedProcess, str]:
    rid = f"kill-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CHECKPOINT_CRASH_AT": point, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.search_crash_child",
            w.node["url"],
            str(w.store_root),
            w.cid,
            rid,
            scenario,
            ",".join(w.names[k] for k in keys),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, rid


def _blocked(http: httpx.Client, name: str) -> bool:
    resp = http.get(f"/{name}/_settings", params={"flat_settings": "true", "expand_wildcards": "all"})
    return resp.status_code == 200 and any(
        s["settings"].get("index.blocks.write") == "true" for s in resp.json().values()
    )


def _status(http: httpx.Client, name: str) -> str:
    rows = http.get(f"/_cat/indices/{name}", params={"format": "json", "h": "index,status", "expand_wildcards": "all"})
    return "missing" if rows.status_code == 404 or not rows.json() else rows.json()[0]["status"]


def _assert_nothing_lost(http: httpx.Client, w: World, entry: Any) -> None:
    """Right after the kill: every replaced index's documents are somewhere, and every index that is
    not serving and writable is named by a step of the journal (nothing unjournaled happened)."""
    plan = entry.data["plan"]
    named = json.dumps([s.intent for s in entry.steps])
    for it in plan["items"]:
        x = it["target"]
        if it["kind"] == "stream":
            continue
        status = _status(http, x)
        if status != "open" or _blocked(http, x):
            assert json.dumps(x) in named, (x, status, named)
        if it["action"] == "replace":
            key = next(k for k, v in w.names.items() if v == x)
            places = [x] + ([it["rollback"]] if it["rollback"] else [])
            found = [
                p for p in places if _status(http, p) == "open" and _docs(http, p) in (w.damaged[key], w.original[key])
            ]
            assert found, (x, places)


def _assert_final(http: httpx.Client, w: World, forward: bool, keys: list[str]) -> None:
    n = w.names
    done = set(keys) if forward else set()  # what now holds the checkpoint's data
    if "same" in done:
        done.add("read")
    leftovers = [
        r["index"]
        for r in http.get(
            f"/_cat/indices/{w.p}-*__restoring_*,.ds-{w.p}-*__restoring_*",
            params={"format": "json", "h": "index", "expand_wildcards": "all"},
        ).json()
    ]
    serving = [i for i in leftovers if i.startswith(f"{n['swap']}__restoring_")]
    assert leftovers == serving and len(serving) == (1 if "swap" in done else 0), leftovers
    for key in ("same", "shards", "swap"):
        assert _docs(http, n[key]) == (w.original[key] if key in done else w.damaged[key]), key
    holder = "same" if "same" in done else "shards"  # the alias follows its holder (recorded, or kept)
    assert _docs(http, n["read"]) == (w.original[holder] if holder in done else w.damaged[holder])
    for key in sorted(done & {"same", "shards", "gone"}):
        assert _settings(http, n[key]) == w.settings[key], key
        assert _mappings(http, n[key]) == w.mappings[key], key
    if "swap" in done:
        assert _settings(http, serving[0]) == w.settings["swap"]
        assert _mappings(http, serving[0]) == w.mappings["swap"]
    if "gone" in done:
        assert _docs(http, n["gone"]) == w.original["gone"]
        _writable(http, n["gone"], PROBE["gone"])
    else:
        assert _status(http, n["gone"]) == "missing"
    for key in ("same", "shards", "swap"):
        assert _status(http, n[key]) == "open" and not _blocked(http, n[key]), key
        _writable(http, n[key], PROBE[key])
    assert http.get(f"/_alias/{n['read']}").json().keys() == {n["same"] if "same" in done else n["shards"]}
    tpl = http.get(f"/_index_template/{w.p}-tpl")
    if forward:
        assert tpl.status_code == 200 and tpl.json()["index_templates"][0]["index_template"] == w.template
    else:
        assert tpl.status_code == 404
        assert http.get(f"/_cat/indices/{w.p}-*__rollback_*", params={"format": "json"}).json() == []
    if w.streams:
        ds = http.get(f"/_data_stream/{n['logs']}").json()["data_streams"]
        assert [d["name"] for d in ds] == [n["logs"]]
        assert _stream_docs(http, n["logs"]) == (w.original["logs"] if "logs" in done else w.damaged["logs"])
        for b in ds[0]["indices"]:
            assert not _blocked(http, b["index_name"]), b
        resp = http.post(
            f"/{n['logs']}/_doc", params={"refresh": "true"}, json={"@timestamp": "2026-03-01T00:00:00Z", "probe": True}
        )
        assert resp.status_code == 201, resp.text
        http.post(
            f"/{n['logs']}/_delete_by_query", params={"refresh": "true"}, json={"query": {"term": {"probe": True}}}
        ).raise_for_status()
        rollbacks = [
            s["snapshot"]
            for s in http.get(f"/_snapshot/{w.repo}/_all").json()["snapshots"]
            if s["snapshot"].startswith("ckpt-rollback-")
        ]
        assert len(rollbacks) == (1 if "logs" in done else 0), rollbacks


def test_every_step_of_the_search_cut_over_is_declared():
    """Every ``journal.step("<name>"`` in the engine's source is a declared step (so it has crash points)."""
    import re

    src = "".join(p.read_text() for p in Path(search.__file__).parent.glob("*.py"))
    used = set(re.findall(r'ctx\.step\(\s*"([a-z_]+)"', src))
    assert used and used <= set(_steps.STEPS), used - set(_steps.STEPS)
    assert set(_steps.STEPS) <= used, set(_steps.STEPS) - used  # and no declared step is dead


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_crash_point_then_recover_leaves_every_index_serving_and_writable(world, point):
    w = world
    if _step(point) in STREAM_STEPS and not w.streams:
        pytest.skip(
            "this Elasticsearch build has no data streams (they come with its x-pack data-streams module, "
            "which the Maven Central build lacks)"
        )
    backward = _step(point) in _steps.BACKWARD_STEPS or point == "search.phase.rolling_back"
    scenario = "rollback" if backward else "restore"
    keys = SUBSET.get(_step(point), ["same"])
    with httpx.Client(base_url=w.node["url"], timeout=120) as http:
        _damage(http, w)
        proc, rid = _run_child(w, point, scenario, keys)
        assert proc.returncode == -9, f"{point} was not reached (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        store = Store.open(w.store_root)
        entry = Journal.load(store.fs, rid).components["search"]
        _assert_nothing_lost(http, w, entry)
        forward = entry.roll_forward and not entry.data.get("rolling_back")
        # killed before the copies verified, or once a rollback had begun: the replay goes back
        assert forward == (scenario == "restore" and point != "search.phase.loading"), (
            entry.phase,
            entry.data.get("rolling_back"),
        )

        lines = search.recover(SearchTarget(url=w.node["url"], timeout=120), entry, poll_interval=0.1)

        assert lines, lines
        _assert_final(http, w, forward, keys)
        again = search.recover(SearchTarget(url=w.node["url"], timeout=120), entry, poll_interval=0.1)
        assert again and not any("WARNING" in line for line in again), again
        _assert_final(http, w, forward, keys)


def test_kill_while_the_copies_load_then_recover_drops_them_and_touches_nothing(world):
    """A kill between the journal's ``loading`` phase and ``verified`` (no crash point there: the
    copies' restore request was sent, the process died waiting): the replay rolls back, deleting the
    copies, even while the server is still restoring them."""
    from airflow_checkpoint_provider.core.engines.search import _ops, _plan
    from airflow_checkpoint_provider.core.engines.search._source import snapshot_source

    w = world
    with (
        httpx.Client(base_url=w.node["url"], timeout=120) as http,
        search.SearchClient(SearchTarget(url=w.node["url"], timeout=120)) as client,
    ):
        _damage(http, w)
        store = Store.open(w.store_root)
        artifact = store.get(w.cid).manifest.artifact("search/snapshot.json")
        with store.open_artifact(w.cid, "search/snapshot.json") as f:
            doc = json.loads(f.read())
        planned = _plan.make_plan(
            client,
            snapshot_source(artifact, doc),
            checkpoint_id=w.cid,
            indices=None,
            swap="auto",
            include_global_state=False,
            repository_settings=None,
        )
        journal = Journal.begin(store.fs, checkpoint_id=w.cid)
        cj = journal.component("search", {"url": w.node["url"]})
        cj.note(plan=planned.record())
        cj.phase("loading", staging=planned.copies())
        names = [it["source"] for it in planned.items if it["kind"] == "index"] + [
            b for it in planned.items if it["kind"] == "stream" for b in it["staging_backing"]
        ]
        _ops.restore_snapshot(client, w.repo, doc["snapshot"]["name"], names, suffix="__restoring_" + planned.short)
        entry = Journal.load(store.fs, journal.restore_id).components["search"]
        assert not entry.roll_forward

        lines = search.recover(client, entry, poll_interval=0.1)

        assert any("rolling back" in line for line in lines), lines
        _assert_final(http, w, False, [])
        journal.close()
