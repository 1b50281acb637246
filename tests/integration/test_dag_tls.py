"""checkpoint_scheduled through dag.test() against TLS-only PostgreSQL and Redis servers.

The connections are what users write: a ``postgres`` connection with ``sslmode=verify-full``
and ``sslrootcert``, and a ``rediss`` connection with a CA and a client certificate that the
server requires. The run must succeed, and no password may show in XCom, the task logs or
the sealed archive.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

from airflow_checkpoint_provider.core import Store
from tests.integration.conftest import run_dag
from tests.integration.tls import HOST, Pki, postgres_tls_server, redis_tls_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data as S

pytestmark = pytest.mark.integration


def test_checkpoint_dag_over_tls_keeps_passwords_out_of_xcom_logs_and_archive(airflow_env, services_module, tmp_path):
    pki = Pki(tmp_path / "pki")
    with (
        postgres_tls_server(services_module, pki) as pg,
        redis_tls_server(tmp_path / "redis", pki, auth_clients="yes") as rd,
    ):
        db = f"dagtls_{uuid.uuid4().hex[:8]}"
        S.seed_postgres(pg, db, customers=200, orders=800)
        S.seed_redis(rd)
        connections = {
            "AIRFLOW_CONN_PG_TLS": json.dumps(
                {
                    "conn_type": "postgres",
                    "host": HOST,
                    "port": pg["port"],
                    "login": pg["user"],
                    "password": pg["password"],
                    "schema": "postgres",
                    "extra": {"sslmode": "verify-full", "sslrootcert": pki.ca},
                }
            ),
            "AIRFLOW_CONN_REDIS_TLS": json.dumps(
                {
                    "conn_type": "rediss",
                    "host": HOST,
                    "port": rd["port"],
                    "password": rd["password"],
                    "extra": {
                        "ssl_ca_certs": pki.ca,
                        "ssl_certfile": rd["client_cert"],
                        "ssl_keyfile": rd["client_key"],
                    },
                }
            ),
        }
        store_root = tmp_path / "store"
        result = run_dag(
            airflow_env,
            "checkpoint_scheduled",
            {
                "components": ["postgres", "redis"],
                "databases": db,
                "postgres_conn_id": "pg_tls",
                "redis_conn_id": "redis_tls",
            },
            extra_env={**connections, "AIRFLOW__CHECKPOINT__STORAGE_ROOT": str(store_root)},
        )
        assert result["state"] == "success", (result["tasks"], result["log"][-4000:])
        cid = result["xcom"]["checkpoint.bundle"]["checkpoint_id"]
        store = Store.open(store_root)
        manifest = store.get(cid).manifest
        assert set(manifest.stores()) == {"postgres", "redis"} and store.lkg().checkpoint_id == cid
        rdb = next(a for a in manifest.artifacts if a.store == "redis")
        assert rdb.fingerprints["keys"] == {"0": S.redis_client(rd, 0).dbsize(), "1": S.redis_client(rd, 1).dbsize()}

        xcom = json.dumps(result["xcom"], default=str)
        for secret in (pg["password"], rd["password"]):
            assert secret not in xcom and secret not in result["log"]
            assert [p for p in store_root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()] == []
