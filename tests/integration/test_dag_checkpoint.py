"""checkpoint_scheduled and checkpoint_pre_migration end to end through dag.test(), on real servers.

Each run captures seeded PostgreSQL tables, every Redis type in two dbs, and several search
indices; the tests then look inside the sealed archive: ``pg_restore --list`` of the dump,
a full parse of the RDB, and the snapshot's presence in the repository.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest
import zstandard

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.engines.redis.rdb import Entry, RdbParser
from tests.integration.conftest import run_dag

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data

DB = "dag_app"
PREFIX = "dagtest-"


@pytest.fixture(scope="module")
def seeded(services):
    sample_data.seed_postgres(services["postgres"], DB)
    sample_data.seed_redis(services["redis"])
    indices = sample_data.seed_search(services["opensearch"]["url"], prefix=PREFIX)
    return {"indices": indices}


def _conf(**overrides):
    conf = {"databases": DB, "search_indices": f"{PREFIX}*"}
    conf.update(overrides)
    return conf


def _store(env) -> Store:
    return Store.open(env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"])


def _member(store: Store, cid: str, member: str) -> bytes:
    with tarfile.open(Path(store.root) / "checkpoints" / f"{cid}.tar") as tf:
        data = tf.extractfile(member).read()
    return zstandard.ZstdDecompressor().decompressobj().decompress(data) if member.endswith(".zst") else data


def test_scheduled_checkpoint_end_to_end(airflow_env, seeded, services, tmp_path):
    result = run_dag(airflow_env, "checkpoint_scheduled", _conf())
    assert result["state"] == "success", result["tasks"]
    bundle = result["xcom"]["checkpoint.bundle"]
    cid = bundle["checkpoint_id"]
    store = _store(airflow_env)

    # sealed, listed, verified, and the LKG
    info = store.get(cid)
    assert info.tags == ("scheduled",) and store.lkg().checkpoint_id == cid
    assert store.verify(cid, deep=True).ok
    manifest = info.manifest
    assert set(manifest.stores()) == {"postgres", "redis", "search"}
    assert (
        manifest.provenance["dag_id"] == "checkpoint_scheduled"
        and manifest.provenance["task_id"] == "checkpoint.bundle"
    )
    assert manifest.consistency()["skew_ms"] >= 0 and manifest.config_hash.startswith("sha256:")

    # PostgreSQL: pg_restore --list of the dump names every table; fingerprints are the real counts
    pg_art = next(a for a in manifest.artifacts if a.store == "postgres")
    dump = tmp_path / "app.dump"
    dump.write_bytes(_member(store, cid, pg_art.member))
    listing = subprocess.run(
        [str(Path(services["postgres"]["bin_dir"]) / "pg_restore"), "--list", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for table in ("customers", "orders", "attachments", "events"):
        assert f"TABLE DATA public {table}" in listing or f"TABLE DATA audit {table}" in listing, table
    truth = sample_data.state_postgres(services["postgres"], DB)
    assert pg_art.fingerprints["rows"] == {t: len(rows) for t, rows in truth.items() if t != "__sequences__"}

    # Redis: parse the whole RDB; (db, key, type) and expiries equal the server's
    rd_art = next(a for a in manifest.artifacts if a.store == "redis")
    assert rd_art.kind == "redis/rdb"
    entries = [
        r
        for r in RdbParser(io.BytesIO(_member(store, cid, rd_art.member))).records(values=False)
        if isinstance(r, Entry)
    ]
    live = sample_data.state_redis(services["redis"])
    assert {(e.db, e.key) for e in entries} == {(db, k) for db, keys in live.items() for k in keys}
    for e in entries:
        kind, _value, ttl = live[e.db][e.key]
        assert e.type_name.split("/")[0].startswith(kind) or kind in e.type_name, (e.key, e.type_name, kind)
        assert (e.expire_ms is None) == (ttl == -1), e.key
    assert rd_art.fingerprints["keys"] == {str(db): len(keys) for db, keys in live.items()}

    # search: the snapshot exists in the repository with our indices; doc counts are real
    se_art = next(a for a in manifest.artifacts if a.store == "search")
    url = services["opensearch"]["url"]
    snap = httpx.get(f"{url}/_snapshot/{se_art.meta['repository']}/{se_art.meta['snapshot']}").json()
    assert snap["snapshots"][0]["state"] == "SUCCESS"
    assert sorted(snap["snapshots"][0]["indices"]) == sorted(seeded["indices"])
    for index in seeded["indices"]:
        count = httpx.get(f"{url}/{index}/_count").json()["count"]
        assert se_art.fingerprints["indices"][index]["docs"] == count

    # staging is gone; the asset events carry the checkpoint id
    assert list((Path(store.root) / "staging").iterdir()) == []
    events = {e["asset"]: e["extra"] for e in result["asset_events"]}
    assert events["checkpoint"]["checkpoint_id"] == cid
    assert events["checkpoint/scheduled"]["checkpoint_id"] == cid


def test_components_param_selects_stores(airflow_env, seeded):
    result = run_dag(airflow_env, "checkpoint_scheduled", _conf(components=["redis"], mark_lkg=False))
    assert result["state"] == "success", result["tasks"]
    assert result["tasks"]["checkpoint.pg_dump"] == "skipped"
    assert result["tasks"]["checkpoint.search_snapshot"] == "skipped"
    cid = result["xcom"]["checkpoint.bundle"]["checkpoint_id"]
    store = _store(airflow_env)
    assert set(store.get(cid).manifest.stores()) == {"redis"}
    assert store.lkg() is None or store.lkg().checkpoint_id != cid


def test_redis_fence_param_pauses_writers_for_at_most_its_bound(airflow_env, seeded):
    result = run_dag(airflow_env, "checkpoint_scheduled", _conf(components=["redis"], mark_lkg=False, redis_fence=7.5))
    assert result["state"] == "success", (result["tasks"], result["log"][-4000:])
    [art] = result["xcom"]["checkpoint.redis_snapshot"]["artifacts"]
    assert art["meta"]["pause"]["max_ms"] == 7500 and not art["meta"]["pause"]["expired"]
    # without the Param there is no fence
    result = run_dag(airflow_env, "checkpoint_scheduled", _conf(components=["redis"], mark_lkg=False))
    [art] = result["xcom"]["checkpoint.redis_snapshot"]["artifacts"]
    assert "pause" not in art["meta"] or art["meta"]["pause"] is None


def test_pre_migration_checkpoint_is_pinned_tagged_and_announced(airflow_env, seeded):
    result = run_dag(airflow_env, "checkpoint_pre_migration", _conf(migration="add-orders-index"))
    assert result["state"] == "success", result["tasks"]
    cid = result["xcom"]["checkpoint.bundle"]["checkpoint_id"]
    info = _store(airflow_env).get(cid)
    assert info.pinned is True
    assert set(info.tags) == {"pre-migration", "migration:add-orders-index"}
    events = {e["asset"]: e["extra"] for e in result["asset_events"]}
    # the example migration DAG is scheduled on this asset: it runs only after this success
    assert events["checkpoint/pre-migration"]["checkpoint_id"] == cid


def _assert_nothing_published(env, before: list[str], lkg_before):
    store = _store(env)
    assert [i.checkpoint_id for i in store.list()] == before
    assert (store.lkg().checkpoint_id if store.lkg() else None) == lkg_before
    assert list((Path(store.root) / "staging").iterdir()) == []  # the failed run's staging was discarded


def _snapshot(env):
    root = Path(env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"])
    if not (root / "store.json").exists():
        return [], None
    store = _store(env)
    return [i.checkpoint_id for i in store.list()], (store.lkg().checkpoint_id if store.lkg() else None)


def test_wrong_connection_id_fails_cleanly(airflow_env, seeded):
    before, lkg = _snapshot(airflow_env)
    result = run_dag(airflow_env, "checkpoint_scheduled", _conf(postgres_conn_id="no_such_conn"))
    assert result["state"] == "failed"
    assert result["tasks"]["checkpoint.pg_dump"] == "failed"
    assert result["tasks"]["checkpoint.bundle"] == "upstream_failed"
    assert "no_such_conn" in result["log"]
    _assert_nothing_published(airflow_env, before, lkg)


def test_unreachable_server_fails_with_a_clear_error(airflow_env, seeded):
    before, lkg = _snapshot(airflow_env)
    result = run_dag(
        airflow_env,
        "checkpoint_scheduled",
        _conf(redis_conn_id="dead_redis"),
        extra_env={"AIRFLOW_CONN_DEAD_REDIS": "redis://:pw@127.0.0.1:1/0"},
    )
    assert result["state"] == "failed"
    assert result["tasks"]["checkpoint.redis_snapshot"] == "failed"
    assert "127.0.0.1:1" in result["log"] and "HINT" in result["log"]
    assert "pw@" not in result["log"]
    _assert_nothing_published(airflow_env, before, lkg)


def test_repository_outside_path_repo_fails_with_a_clear_error(airflow_env, seeded, tmp_path):
    before, lkg = _snapshot(airflow_env)
    result = run_dag(
        airflow_env,
        "checkpoint_scheduled",
        _conf(),
        extra_env={
            "AIRFLOW__CHECKPOINT__SEARCH_REPOSITORY": "outside",
            "AIRFLOW__CHECKPOINT__SEARCH_REPOSITORY_LOCATION": str(tmp_path / "elsewhere"),
        },
    )
    assert result["state"] == "failed"
    assert result["tasks"]["checkpoint.search_snapshot"] == "failed"
    assert "path.repo" in result["log"]
    _assert_nothing_published(airflow_env, before, lkg)


def test_redis_user_without_sync_falls_back_to_logical(airflow_env, seeded, services):
    r = sample_data.redis_client(services["redis"])
    r.execute_command("ACL", "SETUSER", "nosync", "on", ">nosync-pw", "~*", "&*", "+@all", "-sync", "-psync")
    port = services["redis"]["port"]
    result = run_dag(
        airflow_env,
        "checkpoint_scheduled",
        _conf(components=["redis"], redis_conn_id="nosync", mark_lkg=False),
        extra_env={"AIRFLOW_CONN_NOSYNC": f"redis://nosync:nosync-pw@127.0.0.1:{port}/0"},
    )
    assert result["state"] == "success", result["tasks"]
    cid = result["xcom"]["checkpoint.bundle"]["checkpoint_id"]
    art = _store(airflow_env).get(cid).manifest.artifacts[0]
    assert art.kind == "redis/logical"
    live = sample_data.state_redis(services["redis"])
    assert art.fingerprints["keys"] == {str(db): len(keys) for db, keys in live.items()}


def test_deferrable_search_snapshot_waits_in_the_trigger(airflow_env, seeded, services):
    result = run_dag(
        airflow_env,
        "checkpoint_scheduled",
        _conf(components=["search"], mark_lkg=False),
        extra_env={"AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True"},
    )
    assert result["state"] == "success", result["tasks"]
    assert "deferring" in result["log"].lower()  # the operator handed the wait to SearchSnapshotTrigger
    cid = result["xcom"]["checkpoint.bundle"]["checkpoint_id"]
    art = _store(airflow_env).get(cid).manifest.artifacts[0]
    assert art.kind == "search/snapshot"
    snap = httpx.get(f"{services['opensearch']['url']}/_snapshot/{art.meta['repository']}/{art.meta['snapshot']}")
    assert snap.json()["snapshots"][0]["state"] == "SUCCESS"
    for index in seeded["indices"]:
        assert (
            art.fingerprints["indices"][index]["docs"]
            == httpx.get(f"{services['opensearch']['url']}/{index}/_count").json()["count"]
        )
