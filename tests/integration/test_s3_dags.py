"""checkpoint_scheduled end to end through dag.test() into an S3 store, on the real PostgreSQL, Redis and S3 server.

The store's endpoint and credentials come from the Airflow ``aws`` connection of
``[checkpoint] storage_conn_id``, as a deployment would configure them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.fs_s3 import S3Options
from tests.integration.conftest import REPO, run_dag

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data

DB = "s3dag_app"


@pytest.fixture(scope="module")
def s3_airflow_env(services, services_module, s3_server, tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow_home_s3")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({k: v for k, v in services_module.connection_env(services).items() if "ELASTICSEARCH" not in k})
    conn = {
        "conn_type": "aws",
        "login": s3_server["access_key_id"],
        "password": s3_server["secret_access_key"],
        "extra": {"endpoint_url": s3_server["url"]},
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CHECKPOINT__STORAGE_ROOT": f"s3://{s3_server['bucket']}/dag-{secrets.token_hex(4)}",
            "AIRFLOW__CHECKPOINT__STORAGE_CONN_ID": "checkpoint_s3",
            "AIRFLOW_CONN_CHECKPOINT_S3": json.dumps(conn),
            "AIRFLOW__CHECKPOINT__TASK_RETRIES": "0",
            "PYTHONPATH": str(REPO),
        }
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    proc = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sample_data.seed_postgres(services["postgres"], DB)
    sample_data.seed_redis(services["redis"])
    return env


def test_scheduled_checkpoint_seals_and_marks_the_lkg_in_the_s3_store(s3_airflow_env, s3_server, pg, redis_server):
    conf = {"databases": DB, "components": ["postgres", "redis"]}
    result = run_dag(s3_airflow_env, "checkpoint_scheduled", conf)
    assert result["state"] == "success", result["tasks"]
    cid = result["xcom"]["checkpoint.bundle"]["checkpoint_id"]
    opts = S3Options(
        endpoint_url=s3_server["url"],
        access_key_id=s3_server["access_key_id"],
        secret_access_key=s3_server["secret_access_key"],
    )
    store = Store.open(s3_airflow_env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"], s3=opts)
    assert set(store.get(cid).manifest.stores()) == {"postgres", "redis"}
    assert store.verify(cid, deep=True).ok
    assert store.lkg() is not None and store.lkg().checkpoint_id == cid
    assert store.fs.listdir("staging") == [] and store.fs.pending_uploads() == []
    assert s3_server["secret_access_key"] not in result["log"]
    manifest = store.fs.read_bytes(f"checkpoints/{cid}.manifest.json").decode()
    assert s3_server["secret_access_key"] not in manifest and s3_server["access_key_id"] not in manifest
