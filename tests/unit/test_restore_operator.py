"""RestoreOperator's health expectations: the manifest, except Redis keys that expired before the restore."""

from __future__ import annotations

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.recovery import RestoreReport
from airflow_checkpoint_provider.core.restore import RestoreOutcome, RestorePlan
from airflow_checkpoint_provider.operators.restore import RestoreOperator


def test_expectations_use_the_keys_the_restore_loaded(tmp_path):
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
    report = RestoreReport(checkpoint_id=cid, plan=RestorePlan(cid), dry_run=False,
                           outcomes=[RestoreOutcome("redis", details={"keys": {"db0": 8, "db1": 2}})])
    expected = op.expectations(report, ("postgres", "redis"))
    assert expected["redis"]["keys"] == {"0": 8, "1": 2}  # two keys of db0 expired before the restore
    assert expected["postgres"] == {"databases": {"app_copy": {"rows": {"public.t": 5}}}}


def test_a_checkpoint_id_that_a_native_template_turned_into_a_number_is_refused(tmp_path):
    import pytest
    from airflow.sdk.exceptions import AirflowFailException

    Store.open(tmp_path / "store", create=True)
    op = RestoreOperator(task_id="restore", storage_root=str(tmp_path / "store"), checkpoint_id=1000)
    with pytest.raises(AirflowFailException, match="arrived as int 1000, not as a string"):
        op.execute({"dag": None, "run_id": "r", "ti": None})


def test_ownership_switches_reach_pg_restore_as_booleans():
    op = RestoreOperator(task_id="restore", pg_options={"no_owner": "False", "no_privileges": True})
    assert op._pg_options() == {"no_owner": False, "no_privileges": True}
    assert {"pg_options", "search_options"} <= set(RestoreOperator.template_fields)
