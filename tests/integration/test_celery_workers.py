"""One checkpoint captured on two Celery workers, then restored: the real CeleryExecutor.

Airflow runs for real: api-server, scheduler and dag-processor on PostgreSQL (the metadata
database and Celery's result backend), a Redis broker, and two Celery workers with their own
names, queues, ``AIRFLOW_HOME`` and temporary directories. The workers share nothing but the
broker and the S3 store (SeaweedFS): worker A captures PostgreSQL and seals the bundle, worker B
captures Redis and search. The manifest must record who captured what, and ``recovery_lkg``
must bring back exactly the captured data.

The broker is a Redis server of its own: the application's Redis is captured and restored
whole, and a broker inside it would be rolled back with it.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.fs_s3 import S3Options
from tests.integration.airflow_support import Airflow, admin_password, airflow_env, free_port
from tests.integration.airflow_support import wait as _wait

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import sample_data  # noqa: E402

pytestmark = pytest.mark.integration

DB = "celery_app"
PREFIX = "celery-"
META_DB = "airflow_meta_celery"
QUEUES = {"postgres": "worker-a", "redis": "worker-b", "search": "worker-b", "bundle": "worker-a"}
WORKERS = {"worker-a": "worker-a,default", "worker-b": "worker-b"}


def _pg_url(pg: dict[str, Any], db: str, driver: str = "postgresql+psycopg") -> str:
    return f"{driver}://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{db}"


def _recreate_db(pg: dict[str, Any], name: str) -> None:
    with sample_data.pg_connect(pg, pg["database"]) as conn:
        conn.autocommit = True
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="module")
def broker(services_module, tmp_path_factory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("celery_broker")
    try:
        yield services_module.start(state, only=["redis"])["redis"]
    finally:
        services_module.stop(state)


@pytest.fixture(scope="module")
def celery(services, services_module, s3_server, broker, tmp_path_factory) -> Iterator[dict[str, Any]]:
    pg = services["postgres"]
    _recreate_db(pg, META_DB)
    home = tmp_path_factory.mktemp("celery_airflow_home")
    port = free_port()
    password, passwords = admin_password(home)
    root = f"s3://{s3_server['bucket']}/celery-{secrets.token_hex(4)}"
    s3_conn = {
        "conn_type": "aws",
        "login": s3_server["access_key_id"],
        "password": s3_server["secret_access_key"],
        "extra": {"endpoint_url": s3_server["url"]},
    }
    env = airflow_env(
        home,
        services_module.connection_env({k: v for k, v in services.items() if k != "elasticsearch"}),
        port=port,
        password_file=passwords,
        dags_folder=REPO / "dags",
        extra={
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _pg_url(pg, META_DB),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://:{broker['password']}@{broker['host']}:{broker['port']}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + _pg_url(pg, META_DB),
            "AIRFLOW__CHECKPOINT__STORAGE_ROOT": root,
            "AIRFLOW__CHECKPOINT__STORAGE_CONN_ID": "checkpoint_s3",
            "AIRFLOW_CONN_CHECKPOINT_S3": json.dumps(s3_conn),
            "AIRFLOW__CHECKPOINT__CAPTURE_QUEUES": json.dumps(QUEUES),
            "AIRFLOW__CHECKPOINT__SEARCH_REPOSITORY_LOCATION": str(
                Path(services["opensearch"]["path_repo"]) / "celery"
            ),
            "AIRFLOW__CHECKPOINT__TASK_RETRIES": "0",
            "AIRFLOW__CHECKPOINT__SCHEDULE": "0 0 29 2 *",  # no scheduled run while the test runs
            "AIRFLOW_CONN_AIRFLOW_API": f"http://admin:{password}@127.0.0.1:{port}",
        },
    )
    af = Airflow(
        home,
        env,
        port,
        password,
        components=("api-server", "scheduler", "dag-processor"),
        dag_ids=("checkpoint_scheduled", "recovery_lkg"),
    )
    try:
        af.start()
        for name, queues in WORKERS.items():
            own = home / name
            (own / "tmp").mkdir(parents=True)
            worker_env = {
                **env,
                "AIRFLOW_HOME": str(own),
                "TMPDIR": str(own / "tmp"),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.integration.celery_support.worker_hostname",
                "CHECKPOINT_TEST_WORKER_NAME": name,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            }
            af.spawn(
                name,
                ["celery", "worker", "--queues", queues, "--celery-hostname", f"{name}@%h", "--concurrency", "2"],
                worker_env,
            )
        _wait("Airflow to be healthy with the capture and recovery DAGs parsed", af.ready, timeout=240)
        opts = S3Options(
            endpoint_url=s3_server["url"],
            access_key_id=s3_server["access_key_id"],
            secret_access_key=s3_server["secret_access_key"],
        )
        yield {"airflow": af, "store": Store.open(root, create=True, s3=opts), "home": home}
    except BaseException:
        print(af.logs())
        raise
    finally:
        af.stop()
        _recreate_db(pg, META_DB)


def _state(services: dict[str, Any], indices: list[str]) -> dict[str, Any]:
    return {
        "postgres": sample_data.state_postgres(services["postgres"], DB),
        "redis": sample_data.state_redis(services["redis"], dbs=range(2)),  # spare dbs hold rollback copies
        "search": sample_data.state_search(services["opensearch"]["url"], indices),
    }


def _worker_logs(home: Path) -> str:
    return "\n".join(
        f"--- {p.relative_to(home)}\n" + p.read_text(errors="replace")[-2500:]
        for p in sorted(home.glob("worker-*/logs/**/*.log"))
    )


def test_capture_on_two_celery_workers_seals_one_checkpoint_that_names_each_worker_and_restores_exactly(
    celery, services
):
    af, store = celery["airflow"], celery["store"]
    sample_data.seed_postgres(services["postgres"], DB, customers=300, orders=1200)
    sample_data.seed_redis(services["redis"])
    indices = sample_data.seed_search(services["opensearch"]["url"], prefix=PREFIX)
    original = _state(services, indices)

    run_id = af.trigger(
        "checkpoint_scheduled",
        {"databases": DB, "components": ["postgres", "redis", "search"], "search_indices": f"{PREFIX}*"},
    )
    run = af.finish("checkpoint_scheduled", run_id, timeout=600)
    assert run["state"] == "success", (run["tasks"], _worker_logs(celery["home"]), af.logs())
    where = {t["task_id"]: (t["hostname"], t["queue"]) for t in af.task_instances("checkpoint_scheduled", run_id)}
    assert where["checkpoint.pg_dump"] == ("worker-a", "worker-a"), where
    assert where["checkpoint.redis_snapshot"] == ("worker-b", "worker-b"), where
    assert where["checkpoint.search_snapshot"] == ("worker-b", "worker-b"), where
    assert where["checkpoint.bundle"] == ("worker-a", "worker-a"), where

    cid = af.xcom("checkpoint_scheduled", run_id, "checkpoint.bundle")["checkpoint_id"]
    manifest = store.get(cid).manifest
    assert set(manifest.stores()) == {"postgres", "redis", "search"}
    on = manifest.provenance["captured_on"]
    assert {c: (on[c]["hostname"], on[c]["queue"]) for c in on} == {
        "postgres": ("worker-a", "worker-a"),
        "redis": ("worker-b", "worker-b"),
        "search": ("worker-b", "worker-b"),
    }
    assert manifest.provenance["hostname"] == "worker-a"  # the bundle sealed it there
    assert store.state_of(store.get(cid)).label == "verified:standard"
    assert store.lkg() is not None and store.lkg().checkpoint_id == cid
    assert store.fs.listdir("staging") == []

    with sample_data.pg_connect(services["postgres"], DB) as conn:
        conn.execute("DROP TABLE attachments")
        conn.execute("UPDATE orders SET status = 'damaged' WHERE id % 3 = 0")
    sample_data.redis_client(services["redis"]).flushdb()
    httpx.delete(f"{services['opensearch']['url']}/{indices[0]}").raise_for_status()

    run_id = af.trigger("recovery_lkg")
    run = af.finish("recovery_lkg", run_id, timeout=900)
    assert run["state"] == "success", (run["tasks"], _worker_logs(celery["home"]), af.logs())
    now = _state(services, indices)
    assert now["postgres"] == original["postgres"]
    assert sample_data.same_redis_state(original["redis"], now["redis"]) == []
    assert now["search"] == original["search"]
