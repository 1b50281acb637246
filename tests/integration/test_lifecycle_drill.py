"""Restore drills on the real servers: every engine's checkpoint is restored side by side and dropped,
production stays byte-identical; a copy that does not match the manifest fails the drill, LKG unmoved."""

from __future__ import annotations

import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.drill import drill
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.journal import Journal, open_journals
from airflow_checkpoint_provider.core.lease import read_leases
from tests.integration.engine_samples import SAMPLES
from tests.integration.test_engine_contract import _builder
from tests.unit.core.helpers import forge_fields

pytestmark = pytest.mark.integration


def _capture(store, sample, name, run):
    staging = store.staging(staging_key("drill", f"{name}-{run}"))
    registry.get(name).capture(sample.target, staging, **sample.capture_options)
    return store.seal(staging).checkpoint_id


@pytest.mark.parametrize("name", registry.names())
def test_a_drill_restores_side_by_side_and_leaves_production_identical(name, request, tmp_path):
    sample = SAMPLES[name](request, tmp_path)
    store = Store.open(tmp_path / "store", create=True)
    try:
        sample.seed()
        cid = _capture(store, sample, name, "ok")
        store.mark_lkg(cid)
        before = sample.state()
        session = None
        if name == "postgres":  # a live session on the production database must survive the drill
            from tests.integration.test_postgres_restore import admin

            session = admin(sample.pg, sample.db)
            pid = session.execute("SELECT pg_backend_pid()").fetchone()[0]
        record = drill(store, "last-known-good", _builder(sample), components=(name,), by={"test": name})
        assert record.outcome == "ok", record.problems
        assert sample.differences(before, sample.state()) == []
        if session is not None:
            assert session.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
            session.close()
        assert store.state_of(store.get(cid)).label == "drilled"
        assert record.evidence["stores"][name]["load_and_verify_ms"] >= 0
        assert open_journals(store.fs) == [] and not [r for r in read_leases(store.fs) if r.live()]
        found = registry.get(name).leftovers(sample.target, store, set(), set(), True, **sample.leftover_options)
        assert not [line for line in found if sample.mine_leftover(line)], found  # the copies are gone
    finally:
        sample.cleanup()


def test_a_copy_that_does_not_match_the_manifest_fails_the_drill_and_the_lkg_stays(request, tmp_path):
    sample = SAMPLES["postgres"](request, tmp_path)
    store = Store.open(tmp_path / "store", create=True)
    try:
        sample.seed()
        good = _capture(store, sample, "postgres", "good")
        bad = _capture(store, sample, "postgres", "bad")
        store.mark_lkg(good)

        def more_rows(body):  # the manifest now promises a row the dump does not hold
            fp = body["artifacts"][0]["fingerprints"]["rows"]
            table = sorted(fp)[0]
            fp[table] += 1

        forge_fields(store, store.get(bad).manifest, more_rows)
        before = sample.state()
        record = drill(store, bad, _builder(sample), components=("postgres",))
        assert record.outcome == "failed" and "rows" in record.problems[0]["detail"], record.problems
        assert store.state_of(store.get(bad)).state == "drill_failed"
        assert store.lkg().checkpoint_id == good and sample.differences(before, sample.state()) == []
        with pytest.raises(Exception, match="it is drill_failed"):
            store.mark_lkg(bad)
    finally:
        sample.cleanup()


def _copies(sample, name: str) -> list[str]:
    """The drill copies of the sample's data now on its server (read with plain clients)."""
    if name == "postgres":
        from tests.integration.test_postgres_restore import databases

        return sorted(d for d in databases(sample.pg) if d.startswith(sample.db) and d != sample.db)
    import httpx

    with httpx.Client(base_url=sample.url, timeout=60) as http:
        rows = http.get(f"/_cat/indices/{sample.prefix}*", params={"format": "json", "h": "index"}).json()
    return sorted(r["index"] for r in rows if r["index"] not in sample.indices)


def _drill_in_child(store, sample, name: str, cid: str, crash_at: str):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from airflow_checkpoint_provider.core import crashpoints

    repo = Path(__file__).resolve().parents[2]
    fields = ("host", "port", "user", "password", "dbname") if name == "postgres" else ("url", "timeout")
    spec = {
        "root": store.root,
        "checkpoint_id": cid,
        "component": name,
        "target": {f: getattr(sample.target, f) for f in fields},
        "options": sample.restore_options,
    }
    return subprocess.run(
        [sys.executable, str(repo / "tests/integration/drill_crash_child.py")],
        input=json.dumps(spec) + "\n",
        env={**os.environ, crashpoints.ENV: crash_at, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo,
    )


@pytest.mark.parametrize("name", ["postgres", "search"])
def test_a_drill_killed_after_its_copies_verified_is_replayed_by_dropping_its_drill_named_copies(
    name, request, tmp_path
):
    from airflow_checkpoint_provider.core.replay import replay_interrupted

    sample = SAMPLES[name](request, tmp_path)
    store = Store.open(tmp_path / "store", create=True)
    try:
        sample.seed()
        cid = _capture(store, sample, name, "killed")
        before = sample.state()
        done = _drill_in_child(store, sample, name, cid, f"{name}.phase.verified")
        assert done.returncode == -9, done.stderr[-2000:]
        short = cid.rsplit("-", 1)[-1]
        expected = (
            [f"{sample.db}__drill_{short}"]
            if name == "postgres"
            else sorted(f"{i}__drill_{short}" for i in sample.indices)
        )
        assert _copies(sample, name) == expected  # <db>__drill_<id>, <index>__drill_<id>
        (restore_id,) = open_journals(store.fs)
        journal = Journal.load(store.fs, restore_id)
        assert journal.kind == "drill" and journal.components[name].phase == "verified"

        (replayed,) = replay_interrupted(store, lambda component, public: sample.target)
        assert replayed.error is None, replayed.error
        assert _copies(sample, name) == []  # dropped, never cut over
        assert sample.differences(before, sample.state()) == []
        assert open_journals(store.fs) == []
    finally:
        sample.cleanup()
