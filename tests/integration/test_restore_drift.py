"""Drift shown before a restore, and the engine compatibility refusal, on the real servers.

A migration after a checkpoint (a table added, a column added, a column dropped, a search mapping
changed) and a changed deployment (a config file, an environment variable, a package version) are
listed exactly in the plan; ``allow_drift`` makes them accepted notes; a checkpoint whose recorded
server version is newer than the target is refused, ``allow_drift`` or not, and nothing is touched.
"""

from __future__ import annotations

import json

import httpx
import pytest

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.drift import DEPLOYMENT, deployment_config
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.recovery import RestoreRefusedError, RestoreRequest, restore
from airflow_checkpoint_provider.core.workflow.codec import config_digest
from tests.integration.engine_samples import SAMPLES
from tests.integration.test_engine_contract import _builder
from tests.integration.test_lifecycle_drill import _capture
from tests.unit.core.helpers import forge_fields

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_sample(request, tmp_path):
    sample = SAMPLES["postgres"](request, tmp_path)
    sample.seed()
    yield sample
    sample.cleanup()


def _migrate(sample) -> None:
    """A migration: a table added, a column added, a column dropped."""
    from tests.integration.test_postgres_restore import S

    with S.pg_connect(sample.pg, sample.db) as conn:
        conn.execute("CREATE TABLE public.refunds (id int PRIMARY KEY, amount numeric(10,2))")
        conn.execute("ALTER TABLE public.orders ADD COLUMN shipped_at timestamptz")
        conn.execute("ALTER TABLE public.customers DROP COLUMN profile")


def test_a_migration_after_the_checkpoint_is_listed_as_exactly_what_the_restore_undoes(pg_sample, tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    cid = _capture(store, pg_sample, "postgres", "drift")
    before = pg_sample.state()
    _migrate(pg_sample)
    where = f"postgres: {pg_sample.target.label}/{pg_sample.db}"

    plan = restore(store, RestoreRequest(cid, components=("postgres",), dry_run=True), _builder(pg_sample)).plan
    assert plan.drift == [
        f"{where}: table public.refunds was added since the checkpoint; the restore removes it",
        f"{where}: column public.customers.profile was removed since the checkpoint; the restore brings it back",
        f"{where}: column public.orders.shipped_at was added since the checkpoint; the restore removes it",
    ]
    assert not plan.drift_accepted and "  DRIFT: " + plan.drift[0] in plan.describe()

    report = restore(
        store,
        RestoreRequest(cid, components=("postgres",), allow_drift=True, safety_checkpoint=False),
        _builder(pg_sample),
    )
    assert report.plan.drift_accepted and report.to_dict()["plan"]["drift"] == plan.drift
    assert "drift (accepted): " + plan.drift[0] in report.plan.describe()
    assert pg_sample.state() == before  # the migration was undone
    again = restore(store, RestoreRequest(cid, components=("postgres",), dry_run=True), _builder(pg_sample)).plan
    assert again.drift == []


def test_a_column_type_change_is_listed_with_both_types(pg_sample, tmp_path):
    from tests.integration.test_postgres_restore import S

    store = Store.open(tmp_path / "store", create=True)
    cid = _capture(store, pg_sample, "postgres", "retype")
    with S.pg_connect(pg_sample.pg, pg_sample.db) as conn:
        conn.execute("ALTER TABLE audit.events ALTER COLUMN what TYPE varchar(40)")
    plan = restore(store, RestoreRequest(cid, components=("postgres",), dry_run=True), _builder(pg_sample)).plan
    assert plan.drift == [
        f"postgres: {pg_sample.target.label}/{pg_sample.db}: column audit.events.what is character varying(40) "
        "now, text in the checkpoint; the restore changes it back"
    ]


def test_a_checkpoint_without_column_records_still_lists_added_tables(pg_sample, tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    cid = _capture(store, pg_sample, "postgres", "old")

    def older_format(body):  # a manifest written before per-column schema records
        del body["artifacts"][0]["fingerprints"]["columns"]

    forge_fields(store, store.get(cid).manifest, older_format)
    _migrate(pg_sample)
    plan = restore(store, RestoreRequest(cid, components=("postgres",), dry_run=True), _builder(pg_sample)).plan
    assert plan.drift == [
        f"postgres: {pg_sample.target.label}/{pg_sample.db}: table public.refunds was added since the checkpoint; "
        "the restore removes it"
    ]


def test_a_changed_search_mapping_is_listed_and_an_unchanged_one_is_not(request, tmp_path):
    sample = SAMPLES["search"](request, tmp_path)
    store = Store.open(tmp_path / "store", create=True)
    try:
        sample.seed()
        cid = _capture(store, sample, "search", "mapping")
        products = f"{sample.prefix}products"
        with httpx.Client(base_url=sample.url, timeout=60) as http:
            http.put(f"/{products}/_mapping", json={"properties": {"sku": {"type": "keyword"}}}).raise_for_status()
        plan = restore(store, RestoreRequest(cid, components=("search",), dry_run=True), _builder(sample)).plan
        assert plan.drift == [
            f"search: {sample.url}: index {products}: the mapping changed since the checkpoint; the restore puts "
            "the checkpoint's mapping back"
        ]
    finally:
        sample.cleanup()


def test_changed_config_keys_are_listed_by_name_never_by_value(pg_sample, tmp_path, monkeypatch):
    store = Store.open(tmp_path / "store", create=True)
    app_cfg = tmp_path / "app.yaml"
    app_cfg.write_text("workers: 4\n")
    monkeypatch.setenv("SHOP_API_TOKEN", "s3cret-value")
    deployment = {"config_files": [str(app_cfg)], "env": ["SHOP_API_TOKEN"], "packages": ["psycopg", "redis"]}
    keys = config_digest({"postgres": {"databases": [pg_sample.db]}, DEPLOYMENT: deployment_config(**deployment)})
    staging = store.staging("drift-config")
    registry.get("postgres").capture(pg_sample.target, staging, **pg_sample.capture_options)
    cid = store.seal(staging, config_keys=keys).checkpoint_id
    assert "s3cret-value" not in store.get(cid).manifest.to_bytes().decode()

    app_cfg.write_text("workers: 8\n")
    monkeypatch.delenv("SHOP_API_TOKEN")
    request_ = RestoreRequest(
        cid, components=("postgres",), dry_run=True, deployment={"env": ["SHOP_REGION"], "packages": ["psycopg"]}
    )
    plan = restore(store, request_, _builder(pg_sample)).plan
    assert plan.drift == [
        f"config deployment.config_files.{app_cfg} changed since the checkpoint",
        "config deployment.env.SHOP_API_TOKEN changed since the checkpoint",
        "config deployment.env.SHOP_REGION is new since the checkpoint (the checkpoint did not record it)",
    ]  # psycopg's version did not change, and no other key is compared
    assert "s3cret-value" not in str(plan.to_dict())


def _newer_than_the_target(name: str):
    """A re-sealed forgery: the checkpoint says it was written by a newer server than any target."""

    def edit(body):
        for art in body["artifacts"]:
            if name == "postgres":
                art["engine_version"] = "99.1"
            elif name == "redis":
                art["fingerprints"]["rdb_version"] = 99
            else:
                art["engine_version"] = "99.0.0"
        for store in body["stores"].values():  # the derived section follows the artifacts
            store["engine_version"] = body["artifacts"][0]["engine_version"]

    return edit


@pytest.mark.parametrize(
    ("name", "says"),
    [("postgres", "PostgreSQL 99.1"), ("redis", "RDB version 99"), ("search", "99.0.0, newer than the target")],
)
def test_a_checkpoint_of_a_newer_engine_is_refused_even_with_allow_drift_and_nothing_is_touched(
    name, says, request, tmp_path
):
    sample = SAMPLES[name](request, tmp_path)
    store = Store.open(tmp_path / "store", create=True)
    try:
        sample.seed()
        cid = _capture(store, sample, name, "newer")
        forge_fields(store, store.get(cid).manifest, _newer_than_the_target(name))
        sample.damage()
        before, listed = sample.state(), [i.checkpoint_id for i in store.list()]
        for allow_drift in (False, True):
            with pytest.raises(RestoreRefusedError, match=says) as caught:
                restore(store, RestoreRequest(cid, components=(name,), allow_drift=allow_drift), _builder(sample))
            assert caught.value.hint and "nothing was changed" in caught.value.hint
        assert sample.differences(before, sample.state()) == []  # the damaged state still serves, untouched
        assert [i.checkpoint_id for i in store.list()] == listed  # no safety checkpoint was taken
        leftovers = registry.get(name).leftovers(sample.target, store, set(), set(), True, **sample.leftover_options)
        assert not [line for line in leftovers if sample.mine_leftover(line)], leftovers
    finally:
        sample.cleanup()


def test_the_plan_command_lists_the_drift_and_allow_drift_accepts_it(pg_sample, tmp_path, airflow_conn_env, capsys):
    from airflow_checkpoint_provider import cli

    store = Store.open(tmp_path / "store", create=True)
    cid = _capture(store, pg_sample, "postgres", "cli")
    _migrate(pg_sample)
    argv = ["--root", store.root, "plan", cid, "--component", "postgres"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"DRIFT: postgres: {pg_sample.target.label}/{pg_sample.db}: table public.refunds was added" in out
    assert "--allow-drift records them as accepted" in out
    assert cli.main([*argv, "--allow-drift", "--json"]) == 0
    out = capsys.readouterr().out  # Airflow's logging, once imported for the connections, writes here too
    plan = json.loads(out[out.index("\n{\n") :] if not out.startswith("{") else out)
    assert plan["drift_accepted"] is True and len(plan["drift"]) == 3
    assert store.audit_log() == [] and store.state_records(cid) == []  # a plan records nothing
