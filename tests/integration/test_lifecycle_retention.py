"""Retention of checkpoints holding a search snapshot, on the real OpenSearch: the snapshot goes with them."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core import expire as expire_mod
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.expire import expire, plan_store, tombstones
from airflow_checkpoint_provider.core.levels import verify_at
from airflow_checkpoint_provider.core.retention import Policy
from tests.integration.engine_samples import SAMPLES

pytestmark = pytest.mark.integration

KEEP_ONE = Policy.parse({"keep_last": 1})


def _snapshot_exists(sample, store, cid) -> bool:
    [art] = [a for a in store.get(cid).manifest.artifacts if a.store == "search"]
    r = httpx.get(f"{sample.url}/_snapshot/{art.meta['repository']}/{art.meta['snapshot']}", timeout=30)
    return r.status_code == 200


def _snapshot_gone(sample, snapshot) -> bool:
    r = httpx.get(f"{sample.url}/_snapshot/{sample.repository}/{snapshot}", timeout=30)
    return r.status_code == 404


def test_expire_deletes_the_snapshot_retries_when_the_cluster_was_down_and_after_a_kill(request, tmp_path):
    sample = SAMPLES["search"](request, tmp_path)
    store = Store.open(tmp_path / "store", create=True)
    try:
        sample.seed()
        ids = []
        for run in ("old", "killed", "newest"):
            staging = store.staging(staging_key("retention", run))
            registry.get("search").capture(sample.target, staging, **sample.capture_options)
            ids.append(store.seal(staging).checkpoint_id)
        old, killed, newest = ids
        snapshots = {cid: store.get(cid).manifest.artifacts[0].meta["snapshot"] for cid in ids}
        assert all(_snapshot_exists(sample, store, cid) for cid in ids)
        verify_at(store, old, "deep", targets={"search": sample.target})
        verify_at(store, newest, "standard")  # else the only verified one, old, would be protected
        sizes = {d.checkpoint_id: d.size for d in plan_store(store, KEEP_ONE, requires="verified").decisions}
        assert sizes[old] > store.get(old).size  # the snapshot's own size counts

        # a kill right before the snapshot is deleted: the next run finishes it
        pid = os.fork()
        if pid == 0:
            expire_mod.crashpoint = lambda name: (
                os.kill(os.getpid(), signal.SIGKILL) if name == "expire.states" else None
            )
            try:
                expire_mod.delete(store, killed, targets={"search": sample.target})
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert tombstones(store) == [killed] and not _snapshot_gone(sample, snapshots[killed])

        # the cluster is down: the store part goes, the snapshots wait in their tombstones, reported
        down = SearchTarget(url="http://127.0.0.1:9", timeout=2)
        report = expire(store, KEEP_ONE, requires="verified", targets={"search": down}, execute=True)
        assert [i.checkpoint_id for i in store.list()] == [newest]
        assert sorted(tombstones(store)) == sorted([old, killed]) and len(report.pending) == 2
        assert all("127.0.0.1:9" in line for line in report.pending), report.pending
        assert not _snapshot_gone(sample, snapshots[old])

        # the next run with the cluster up deletes them
        report = expire(store, KEEP_ONE, requires="verified", targets={"search": sample.target}, execute=True)
        assert report.pending == [] and tombstones(store) == []
        assert _snapshot_gone(sample, snapshots[old]) and _snapshot_gone(sample, snapshots[killed])
        assert _snapshot_exists(sample, store, newest)
    finally:
        sample.cleanup()
