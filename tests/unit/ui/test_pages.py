"""The Checkpoints page's model and HTML, over a real store (no Airflow server: the routes and their
authentication are tested against the real api-server in tests/integration/test_ui_browser.py)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.ui import html, model
from tests.unit.core.helpers import make_checkpoint


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "store", create=True, lock_timeout=30)


class _Text(HTMLParser):
    """Every text node and every element id of a page, to check what a user would read."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.ids: set[str] = set()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.ids.update(v for k, v in attrs if k == "id" and v)

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Text:
    p = _Text()
    p.feed(page)
    return p


def test_list_shows_every_checkpoint_newest_first_with_the_lkg_badge_and_a_chart(store):
    first = make_checkpoint(store, "r1", tags=("scheduled",))
    second = make_checkpoint(store, "r2", tags=("pre-migration",), pinned=True)
    store.mark_lkg(first.checkpoint_id)
    data = model.listing(store)
    assert [r["checkpoint_id"] for r in data.rows] == [second.checkpoint_id, first.checkpoint_id]
    assert [r["lkg"] for r in data.rows] == [False, True] and data.rows[0]["pinned"]
    assert data.rows[1]["size"] == store.get(first.checkpoint_id).size and data.rows[1]["stores"]
    page = html.list_page(data, base="/checkpoints", total=2)
    parsed = _parse(page)
    assert {"checkpoints", "storage-chart", "lkg", "lkg-history"} <= parsed.ids
    assert page.count("data-lkg=1") == 1 and page.count("<tr class=checkpoint") == 2
    assert "script" not in parsed.tags and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_a_list_page_cut_to_its_newest_rows_still_counts_and_charts_every_checkpoint(store):
    ids = [make_checkpoint(store, f"r{n}").checkpoint_id for n in range(3)]
    data = model.listing(store, limit=1)
    assert [r["checkpoint_id"] for r in data.rows] == [ids[-1]] and data.total == 3
    assert sum(n for _, _, n in data.days) == 3
    assert sum(b for _, b, _ in data.days) == sum(store.get(i).size for i in ids)
    page = html.list_view(store, base="/checkpoints", rows=1)
    assert page.count("<tr class=checkpoint") == 1 and "3 checkpoint(s)" in page


def test_type_filter_uses_the_tags_of_the_ready_made_dags_and_refuses_unknown_types(store):
    make_checkpoint(store, "r1", tags=("scheduled",))
    deploy = make_checkpoint(store, "r2", tags=("pre-deploy",))
    assert [r["checkpoint_id"] for r in model.listing(store, type_="deployment").rows] == [deploy.checkpoint_id]
    assert len(model.listing(store, type_="database").rows) == 2
    with pytest.raises(ValueError, match="unknown checkpoint type 'nope'"):
        model.listing(store, type_="nope")


def test_detail_has_manifest_fields_fingerprints_per_store_and_its_restores(store):
    m = make_checkpoint(store, "r1")
    d = model.detail(store, m.checkpoint_id)
    assert d["checkpoint_id"] == m.checkpoint_id and d["config_hash"] == m.config_hash
    assert {a["name"] for a in d["artifacts"]} == {a.name for a in m.artifacts}
    assert d["fingerprints"] == {a.store: {a.name: a.fingerprints} for a in m.artifacts} or all(
        d["fingerprints"][a.store][a.name] == a.fingerprints for a in m.artifacts
    )
    page = html.detail_page(d, base="/checkpoints")
    parsed = _parse(page)
    assert {"checkpoint-id", "restore-button", "restore-confirm", "manifest", "artifacts", "fingerprints"} <= parsed.ids
    assert f'action="/checkpoints/ui/{m.checkpoint_id}/restore"' in page


def test_text_from_the_store_is_escaped_so_no_markup_can_be_injected(store):
    m = make_checkpoint(store, "r1", tags=("<script>alert(1)</script>", 'a"b'))
    page = html.list_page(model.listing(store), base="/checkpoints", total=1)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&quot;b" in page
    assert "<script>" not in html.detail_page(model.detail(store, m.checkpoint_id), base="/checkpoints")


def test_storage_per_day_sums_bytes_and_counts_each_day():
    rows = [
        {"created_at": "2026-11-30T23:59:00Z", "size": 10, "search_snapshot_bytes": 5},
        {"created_at": "2026-12-01T00:01:00Z", "size": 7, "search_snapshot_bytes": None},
        {"created_at": "2026-12-01T10:00:00Z", "size": 3, "search_snapshot_bytes": None},
    ]
    assert model.storage_by_day(rows) == [("2026-11-30", 15, 1), ("2026-12-01", 10, 2)]
    svg = html.chart(model.storage_by_day(rows))
    assert len(re.findall(r"<rect class=day", svg)) == 2 and "2 checkpoint(s)" in svg


def test_states_and_their_records_show_in_the_list_and_the_detail(store):
    good = make_checkpoint(store, "r1")
    bad = make_checkpoint(store, "r2")
    store.record_state(
        store.get(good.checkpoint_id),
        kind="verify",
        outcome="ok",
        level="standard",
        duration_ms=12,
        evidence={"external_bytes": 4096},
    )
    store.record_state(
        store.get(bad.checkpoint_id),
        kind="verify",
        outcome="corrupt",
        level="standard",
        problems=[{"kind": "checksum", "subject": "postgres/app.dump", "detail": "sha256 mismatch"}],
    )
    rows = {r["checkpoint_id"]: r for r in model.listing(store).rows}
    assert rows[good.checkpoint_id]["state"]["label"] == "verified:standard"
    assert rows[good.checkpoint_id]["search_snapshot_bytes"] == 4096  # measured by the verification
    assert rows[bad.checkpoint_id]["state"]["state"] == "corrupt"
    page = html.list_page(model.listing(store), base="/checkpoints", total=2)
    assert 'class="badge state bad"' in page and "verified:standard" in page and "+ 4.0 KiB search" in page
    detail = html.detail_page(model.detail(store, bad.checkpoint_id), base="/checkpoints")
    assert "id=records" in detail and "sha256 mismatch" in detail and ">corrupt<" in detail


def test_workflow_checkpoints_are_listed_on_the_page(store):
    from airflow_checkpoint_provider.core.workflow import FileWorkflowStore, Workflow

    wf = Workflow(FileWorkflowStore(store), "sim/run1/simulate", history=3)
    for step in wf.steps([2025, 2026]):
        wf.save(step, {"year": step})
    wf.summary()
    (row,) = model.workflows(store)
    assert row["workflow_id"] == "sim/run1/simulate" and row["states"] == 2 and row["latest_step"] == 2026
    page = html.list_page(model.listing(store), base="/checkpoints", total=0, workflows=model.workflows(store))
    assert "id=workflows" in page and "sim/run1/simulate" in page


def test_detail_page_offers_verify_now_for_that_checkpoint_at_a_chosen_level(store):
    m = make_checkpoint(store, "r1")
    page = html.detail_page(model.detail(store, m.checkpoint_id), base="/checkpoints")
    parsed = _parse(page)
    assert {"verify", "verify-level", "verify-button"} <= parsed.ids
    assert f'action="/checkpoints/ui/{m.checkpoint_id}/verify"' in page
    assert re.findall(r"<option value=(\w+)>", page) == ["standard", "basic", "deep"]
    assert "Verify now" in "".join(parsed.text)


def test_verify_now_asks_airflow_for_that_checkpoint_only_and_refuses_unknown_levels_and_ids(store):
    from fastapi import HTTPException

    from airflow_checkpoint_provider.ui.app import _verify_conf

    m = make_checkpoint(store, "r1")
    assert _verify_conf(store, m.checkpoint_id, "deep") == {"checkpoint_id": m.checkpoint_id, "level": "deep"}
    assert _verify_conf(store, m.checkpoint_id, "") == {"checkpoint_id": m.checkpoint_id, "level": None}
    with pytest.raises(HTTPException) as bad_level:
        _verify_conf(store, m.checkpoint_id, "thorough")
    assert bad_level.value.status_code == 400 and "'thorough'" in bad_level.value.detail
    with pytest.raises(HTTPException) as unknown:
        _verify_conf(store, "ckpt-20000101T000000Z-000000", None)
    assert unknown.value.status_code == 404


def test_rollbacks_page_lists_the_copies_and_names_each_store_that_did_not_answer():
    copies = [
        {
            "component": "postgres",
            "name": "app__rollback_abc_20261201T000000",
            "of": "app",
            "checkpoint": "abc",
            "created_at": "2026-12-01T00:00:00Z",
            "age_seconds": 7200,
            "size": 2048,
            "items": None,
            "conn_id": "postgres_default",
        }
    ]
    problems = [{"component": "search", "conn_id": "es<prod>", "error": "ConnectionFailedError: refused"}]
    page = html.rollbacks_page(copies, problems, base="/checkpoints")
    parsed = _parse(page)
    assert {"rollbacks", "store-problems"} <= parsed.ids and page.count("<tr class=rollback>") == 1
    text = "".join(parsed.text)
    assert "app__rollback_abc_20261201T000000" in text and "2 h" in text and "2.0 KiB" in text
    assert "es<prod>" in text and "es&lt;prod&gt;" in page and "ConnectionFailedError: refused" in text
    empty = html.rollbacks_page([], [], base="/checkpoints")
    assert "No rollback copies" in empty and "store-problems" not in empty


def test_list_page_links_to_the_rollback_copies(store):
    make_checkpoint(store, "r1")
    page = html.list_page(model.listing(store), base="/checkpoints", total=1)
    assert 'id=rollbacks-link href="/checkpoints/ui/rollbacks"' in page
