"""RestoreOperator: its health expectations (each engine's reading of the manifest) and its arguments."""

from __future__ import annotations

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.recovery import RestoreReport
from airflow_checkpoint_provider.core.restore import RestoreOutcome, RestorePlan
from airflow_checkpoint_provider.operators.restore import RestoreOperator


def test_expectations_are_the_manifest_counts_with_expired_keys_counted_as_such(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    staging = store.staging(staging_key("d", "r"))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb") as sink:
        sink.write(b"rdb")
        sink.fingerprints = {"keys": {"0": 10, "1": 2}}
    with staging.artifact("postgres/app.dump", store="postgres", kind="pg_dump/custom") as sink:
        sink.write(b"dump")
        sink.fingerprints = {"rows": {"public.t": 5}}
        sink.meta = {"database": "app"}
    cid = store.seal(staging).checkpoint_id
    op = RestoreOperator(task_id="restore", storage_root=store.root, rename_databases={"app": "app_copy"})
    report = RestoreReport(
        checkpoint_id=cid,
        plan=RestorePlan(cid),
        dry_run=False,
        outcomes=[RestoreOutcome("redis", details={"keys": {"db0": 8, "db1": 2}, "skipped_expired": {"db0": 2}})],
    )
    expected = op.expectations(report, ("postgres", "redis"))
    # the manifest's counts, and the two keys of db0 that expired before the load, counted as such
    assert expected["redis"] == {"keys": {"0": 10, "1": 2}, "expired": {"0": 2}}
    assert expected["postgres"] == {"databases": {"app_copy": {"rows": {"public.t": 5}, "row_counts": "exact"}}}


def test_a_checkpoint_id_that_a_native_template_turned_into_a_number_is_refused(tmp_path):
    import pytest
    from airflow.sdk.exceptions import AirflowFailException

    Store.open(tmp_path / "store", create=True)
    op = RestoreOperator(task_id="restore", storage_root=str(tmp_path / "store"), checkpoint_id=1000)
    with pytest.raises(AirflowFailException, match="arrived as int 1000, not as a string"):
        op.execute({"dag": None, "run_id": "r", "ti": None})


def test_engine_arguments_land_in_each_engines_options():
    op = RestoreOperator(
        task_id="restore",
        postgres_conn_id="pg_prod",
        databases="app",
        rename_databases={"a": "b"},
        pg_options={"no_owner": "False", "no_privileges": True},
        indices="products",
        search_options={"swap": "alias"},
        redis_options={"spare_db": 9},
    )
    assert op.conn_ids == {"postgres": "pg_prod"}
    assert op.options == {
        "postgres": {"databases": "app", "rename": {"a": "b"}, "no_owner": "False", "no_privileges": True},
        "search": {"indices": "products", "swap": "alias"},
        "redis": {"spare_db": 9},
    }
    assert {"conn_ids", "options"} <= set(RestoreOperator.template_fields)


def test_ownership_switches_reach_pg_restore_as_booleans(tmp_path):
    from airflow_checkpoint_provider.core.engines.postgres.engine import restore
    from airflow_checkpoint_provider.core.engines.targets import PostgresTarget

    part = restore(PostgresTarget(host="h"), None, "c", [], no_owner="False", no_privileges="true")
    assert (part.no_owner, part.no_privileges) == (False, True)
