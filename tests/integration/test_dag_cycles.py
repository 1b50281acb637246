"""Recovery can be repeated: checkpoint, damage, recover, three times in a row, through the shipped DAGs.

The checkpoints capture the way the scheduled DAG does by default: every database (``all``),
every Redis db and every index of a pattern, so each one taken after a recovery sees the
provider's own rollback copies on the servers. They must be left out, or the next recovery
refuses (a rollback copy is not a restore target) and the servers fill up with copies of copies.
"""

from __future__ import annotations

import sys

import httpx
import pytest

from airflow_checkpoint_provider.core import Store
from tests.integration.conftest import REPO, run_dag

sys.path.insert(0, str(REPO / "scripts"))
import sample_data

pytestmark = pytest.mark.integration

DB = "cycle_app"
PREFIX = "cycletest-"
DBS = range(2)


def _state(services, indices):
    return {
        "postgres": sample_data.state_postgres(services["postgres"], DB),
        "redis": sample_data.state_redis(services["redis"], dbs=DBS),
        "search": sample_data.state_search(services["opensearch"]["url"], indices),
    }


def _damage(services, indices, n):
    with sample_data.pg_connect(services["postgres"], DB) as conn:
        conn.execute("DROP TABLE IF EXISTS attachments")
        conn.execute("INSERT INTO customers VALUES (%s, 'junk@example.com', '2026-01-01', NULL)", (800000 + n,))
    r = sample_data.redis_client(services["redis"])
    r.delete("hash:big")
    r.set(f"cycle-junk:{n}", "x")
    url = services["opensearch"]["url"]
    httpx.delete(f"{url}/{indices[0]}")


def test_checkpoint_damage_recover_three_times_in_a_row_is_exact(airflow_env, services):
    sample_data.seed_postgres(services["postgres"], DB)
    sample_data.seed_redis(services["redis"])
    indices = sample_data.seed_search(services["opensearch"]["url"], prefix=PREFIX)
    store = Store.open(airflow_env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"], create=True)
    original = _state(services, indices)
    for n in range(1, 4):
        taken = run_dag(airflow_env, "checkpoint_scheduled", {"databases": "all", "search_indices": f"{PREFIX}*"})
        assert taken["state"] == "success", (n, taken["tasks"], taken["log"][-4000:])
        cid = taken["xcom"]["checkpoint.bundle"]["checkpoint_id"]
        manifest = store.get(cid).manifest
        names = [str(a.meta.get("database") or a.name) for a in manifest.artifacts]
        assert not [x for x in names if "__rollback_" in x or x.endswith("__restoring")], (n, names)
        search_doc = [a for a in manifest.artifacts if a.store == "search"][0]
        captured = list(search_doc.fingerprints["indices"])
        assert captured and all(i.startswith(PREFIX) and "__" not in i for i in captured), (n, captured)
        _damage(services, indices, n)
        recovered = run_dag(airflow_env, "recovery_lkg", {})
        assert recovered["state"] == "success", (n, recovered["tasks"], recovered["log"][-6000:])
        now = _state(services, indices)
        assert now["postgres"] == original["postgres"], n
        assert sample_data.same_redis_state(original["redis"], now["redis"]) == [], n
        assert now["search"] == original["search"], n
