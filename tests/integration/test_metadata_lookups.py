"""A connection and a master-key Variable kept only in Airflow's metadata database reach the CLI.

Outside a task, ``airflow.sdk`` sees ``AIRFLOW_CONN_*``/``AIRFLOW_VAR_*`` and the secrets
backends, not the metadata database, where a user who created them in the UI keeps them
(hooks/lookup.py). Here the PostgreSQL connection and the encryption key exist only there: a
real migrated metadata database, a real PostgreSQL, the real ``airflow-checkpoint`` command.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.crypt import key_id

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "airflow-checkpoint")
DB = "lookup_app"

#: stores the connection and the Variable in the metadata database; secrets come on stdin
_KEEP = """
import json, sys
from airflow.models import Connection, Variable
from airflow.utils.session import create_session
given = json.loads(sys.stdin.read())
with create_session() as s:
    s.add(Connection(conn_id="pg_kept_in_db", conn_type="postgres", host=given["host"], port=given["port"],
                     login=given["user"], password=given["password"], schema="postgres"))
Variable.set("ckpt_master_key", given["key"])
"""


def test_cli_outside_a_task_finds_a_connection_and_a_key_variable_kept_in_the_metadata_database(
    airflow_env, services, tmp_path
):
    pg = services["postgres"]
    sample_data.seed_postgres(pg, DB, customers=50, orders=100)
    env = {k: v for k, v in airflow_env.items() if not k.startswith("AIRFLOW_CONN_POSTGRES")}
    key = secrets.token_hex(32)
    given = {"host": pg["host"], "port": pg["port"], "user": pg["user"], "password": pg["password"], "key": key}
    kept = subprocess.run(
        [sys.executable, "-c", _KEEP], env=env, input=json.dumps(given), capture_output=True, text=True
    )
    assert kept.returncode == 0, kept.stderr[-3000:]
    env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"] = str(tmp_path / "store")
    env["AIRFLOW__CHECKPOINT__ENCRYPTION_KEY_VARIABLE"] = "ckpt_master_key"

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *argv], env=env, capture_output=True, text=True, timeout=600)

    made = cli("create", "--components", "postgres", "--postgres-conn-id", "pg_kept_in_db", "--names",
               f"postgres={DB}", "--no-lkg", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr[-4000:]
    cid = json.loads(made.stdout)["checkpoint_id"]
    (art,) = Store.open(env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"]).get(cid).manifest.artifacts
    assert art.meta["encryption"]["master_key_id"] == key_id(bytes.fromhex(key))
    deep = cli("verify", cid, "--level", "deep", "--json")  # decrypts with the Variable's key again
    assert deep.returncode == 0, deep.stdout[-2000:] + deep.stderr[-2000:]
    assert key not in made.stdout + made.stderr + deep.stdout + deep.stderr
