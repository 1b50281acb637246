"""The workflow stores against real processes, a real PostgreSQL and a real S3 server (SeaweedFS):
SIGKILL during save, server restarts, two writers of one workflow, what the PostgreSQL tables hold,
and the file store on ``s3://`` (streamed states, damaged states set aside, lease locks)."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.fs_s3 import S3Options
from airflow_checkpoint_provider.core.workflow import FileWorkflowStore, PostgresWorkflowStore, Workflow
from tests.integration.workflow_child import payload
from tests.integration.workflow_support import restart_postgres

REPO = Path(__file__).resolve().parents[2]
#: kills per store: the file store gets the full 20, the PostgreSQL store (slower to start) 5, the
#: S3 store (each kill leaves a lease to expire) 4
KILLS = {"file": 20, "pg": 5, "s3": 4}
#: the lease of a writer that dies on S3 (the default is 30 s; short here, so the tests wait little)
LEASE = 4.0


def _pg_env(pg: dict[str, Any]) -> dict[str, str]:
    return {**os.environ, "WF_TEST_PG": json.dumps({k: pg[k] for k in ("host", "port", "user", "password")})}


def _db(pg: dict[str, Any], name: str) -> str:
    with psycopg.connect(
        host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _pg_store(pg: dict[str, Any], dbname: str) -> PostgresWorkflowStore:
    def connect() -> psycopg.Connection:
        return psycopg.connect(
            host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname=dbname, autocommit=True
        )

    return PostgresWorkflowStore(connect, location=f"postgresql://{pg['host']}:{pg['port']}/{dbname}")


def _s3(s3_server: dict[str, Any], tmp_path: Path) -> tuple[str, S3Options, dict[str, str]]:
    """A fresh prefix of the test bucket, its options, and a child environment naming the 0600 options file."""
    options = S3Options(
        endpoint_url=s3_server["url"],
        access_key_id=s3_server["access_key_id"],
        secret_access_key=s3_server["secret_access_key"],
        lease_seconds=LEASE,
    )
    creds = tmp_path / "s3.json"
    creds.touch(mode=0o600)
    creds.write_text(json.dumps(options.__dict__))
    url = f"s3://{s3_server['bucket']}/wf-{secrets.token_hex(6)}"
    return url, options, {**os.environ, "WF_TEST_S3": str(creds)}


@pytest.fixture
def s3_wstore(request, tmp_path) -> tuple[str, FileWorkflowStore, dict[str, str]]:
    """(spec for the child, the file workflow store on a fresh S3 prefix, the child's environment)."""
    url, options, env = _s3(request.getfixturevalue("s3_server"), tmp_path)
    return f"s3:{url}", FileWorkflowStore(Store.open(url, create=True, s3=options)), env


@pytest.fixture(params=["file", "pg", "s3"])
def stores(request, tmp_path, pg) -> tuple[str, Any, dict[str, str]]:
    """(spec for the child, the store, the child's environment) of the file, PostgreSQL or S3 store."""
    if request.param == "file":
        root = tmp_path / "store"
        return f"file:{root}", FileWorkflowStore(Store.open(root, create=True)), dict(os.environ)
    if request.param == "s3":
        return request.getfixturevalue("s3_wstore")
    db = _db(pg, f"wf_{request.node.name.split('[')[0][-20:]}_{os.getpid()}".lower())
    return f"pg:{db}", _pg_store(pg, db), _pg_env(pg)


def _child(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.workflow_child", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_at_random_points_of_save_always_leaves_a_complete_earlier_or_later_state(stores):
    spec, store, env = stores
    rng = random.Random(20260101)
    torn_writes, streamed_kills = 0, 0
    kills = KILLS[spec.partition(":")[0]]
    for attempt in range(kills):
        proc = _child("save-loop", spec, "killed", env=env)
        durations, acknowledged, first = [], 0, None
        target = rng.randint(1, 2)
        while True:  # let it save a step or two, learning how long a save takes, then kill mid-save
            line = proc.stdout.readline()
            assert line, proc.stderr.read()[-3000:]
            word, step, *rest = line.split()
            first = int(step) if first is None else first
            if word == "saved":
                acknowledged = int(step)
                durations.append(float(rest[0]))
            elif int(step) >= first + target and durations:
                time.sleep(rng.uniform(0, max(durations) * 1.1))
                os.kill(proc.pid, signal.SIGKILL)
                streamed_kills += int(step) % 2  # odd steps are streamed saves
                break
        out, _ = proc.communicate(timeout=30)
        acknowledged = max([acknowledged] + [int(ln.split()[1]) for ln in out.splitlines() if ln.startswith("saved")])
        if spec.startswith("file:"):
            torn = [
                p for p in store.fs.local_path(f"{store._dir('killed')}/states").iterdir() if p.name.startswith(".tmp-")
            ]
            torn_writes += bool(torn)
            for path in torn:  # the store's cleanup would remove them; count each kill's own
                path.unlink()
        if spec.startswith("s3:"):  # a killed upload stays incomplete: never listed, aborted by cleanup
            assert all(name.endswith(".state") for name in store.fs.listdir(f"{store._dir('killed')}/states"))
            for upload in store.fs.pending_uploads(store._dir("killed")):
                store.fs.abort_upload(upload)
        # the state a resume reads is exactly one that was saved, never a torn one, and no
        # acknowledged save is lost
        wf = Workflow(store, "killed", history=3)
        latest = wf.resumed_from
        assert latest is not None and latest.step in (acknowledged, acknowledged + 1), (attempt, latest, acknowledged)
        assert wf.state == payload(latest.step), f"kill {attempt}: the state of step {latest.step} is not the saved one"
        assert all(e.problem is None for e in store.entries("killed")), store.entries("killed")
        if spec.startswith("s3:"):  # every listed object is a complete state, not only the latest
            assert all(store.load("killed", e.seq).state() == payload(e.header.step) for e in store.entries("killed"))
        wf.close()
    if spec.startswith("file:"):
        assert torn_writes >= 2, f"only {torn_writes} of {kills} kills landed while a state file was being written"
        assert streamed_kills >= 2, f"only {streamed_kills} of {kills} kills hit a streamed save"


def test_two_writers_of_one_workflow_are_serialized(stores):
    spec, store, env = stores
    first = _child("writer", spec, "pair", "6", "3", "1.0", env=env)
    assert first.stdout.readline().startswith("start")
    assert first.stdout.readline().startswith("ran 1")
    second = _child("writer", spec, "pair", "6", "99", "0.1", env=env)  # waits for the first one's lock
    assert store.busy("pair"), "the first writer's lock should be held while it runs"
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err1[-2000:], err2[-2000:])
    ran1 = [1] + [int(ln.split()[1]) for ln in out1.splitlines() if ln.startswith("ran")]
    ran2 = [int(ln.split()[1]) for ln in out2.splitlines() if ln.startswith("ran")]
    started2 = float(out2.splitlines()[0].split()[1])
    stopped1 = float(next(ln for ln in out1.splitlines() if ln.startswith("stopped")).split()[1])
    assert (ran1, ran2) == ([1, 2, 3], [4, 5, 6]), (out1, out2)  # no step twice, none skipped
    assert started2 < stopped1, "the second writer should have been waiting while the first one ran"
    entries = store.entries("pair")
    assert [e.header.step for e in entries] == [6, 5, 4, 3, 2, 1]
    pids = {store.load("pair", e.seq).state()["pid"] for e in entries}
    assert pids == {first.pid, second.pid}
    assert not store.busy("pair")


def test_postgres_rows_hold_jsonb_metadata_and_the_bytea_payload_with_an_index(pg):
    db = _db(pg, "wf_rows")
    store = _pg_store(pg, db)
    wf = Workflow(store, "rows", config={"rate": 1})
    for step in wf.steps(["doc-1", "doc-2", "doc-3"]):
        wf.save(step, {"processed": step, "quality": 0.92}, fingerprints={"entities": 156})
    wf.summary()
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT seq, step, metadata, payload, saved_at FROM workflow_checkpoints "
            "WHERE workflow_id = 'rows' ORDER BY seq"
        ).fetchall()
        status = conn.execute(
            "SELECT status, completed_at IS NOT NULL FROM workflow_checkpoints_workflows WHERE workflow_id = 'rows'"
        ).fetchone()
        index = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'workflow_checkpoints_step_idx'"
        ).fetchone()[0]
        by_step = conn.execute(
            "SELECT seq FROM workflow_checkpoints WHERE workflow_id = 'rows' AND step = %s", (json.dumps("doc-2"),)
        ).fetchone()[0]
    assert [(r[0], r[1]) for r in rows] == [(1, "doc-1"), (2, "doc-2"), (3, "doc-3")]
    assert rows[2][2]["fingerprints"] == {"entities": 156} and rows[2][2]["parent"] == 2
    assert json.loads(bytes(rows[2][3])) == {"processed": "doc-3", "quality": 0.92}
    assert status == ("completed", True) and "(workflow_id, step)" in index and by_step == 2


@pytest.fixture(scope="module")
def private_pg(services_module, tmp_path_factory):
    """A PostgreSQL of these tests' own, so that restarting it disturbs nobody else."""
    state = tmp_path_factory.mktemp("private_pg")
    try:
        yield services_module.start(state, only=["postgres"])["postgres"]
    finally:
        services_module.stop(state)


def test_postgres_store_survives_a_server_restart_between_attempts(private_pg, services_module):
    db = _db(private_pg, "wf_restart")
    proc = _child("save-loop", f"pg:{db}", "attempts", env=_pg_env(private_pg))
    while not (line := proc.stdout.readline()).startswith("saved 3"):
        assert line, proc.stderr.read()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)  # the first attempt dies after step 3 was saved
    out, _ = proc.communicate(timeout=30)
    acknowledged = max(int(ln.split()[1]) for ln in ["saved 3"] + out.splitlines() if ln.startswith("saved"))
    restart_postgres(services_module, private_pg)
    wf = Workflow(_pg_store(private_pg, db), "attempts", history=3)  # the second attempt
    assert next(iter(wf.steps(range(1, 100)))) == acknowledged + 1
    assert wf.state == payload(acknowledged)
    wf.close()


def test_postgres_session_reconnects_and_keeps_its_lock_when_the_server_restarts_mid_run(
    private_pg, services_module, caplog
):
    caplog.set_level("INFO", logger="airflow_checkpoint_provider.core.workflow.pgstore")
    db = _db(private_pg, "wf_midrun")
    store = _pg_store(private_pg, db)
    wf = Workflow(store, "midrun")
    steps = wf.steps([1, 2, 3, 4])
    for step in steps:
        wf.save(step, {"step": step})
        if step == 2:
            restart_postgres(services_module, private_pg)  # the session's connection (and its lock) is gone
    wf.summary()
    assert "broke while saving state 3" in caplog.text and "took the lock of workflow 'midrun' back" in caplog.text
    assert [e.header.step for e in store.entries("midrun")] == [4, 3, 2, 1]
    assert store.load("midrun", 4).state() == {"step": 4}
    assert not store.busy("midrun")


# ---- the file store on s3:// ----------------------------------------------------------------------


def test_s3_store_names_its_real_url_and_round_trips_a_streamed_state_exactly(s3_wstore):
    spec, store, _ = s3_wstore
    url = spec.partition(":")[2]
    big = payload(1)  # 9 MiB of random bytes: above the streaming threshold, more than one upload part
    wf = Workflow(store, "big")
    for step in wf.steps([1, 2]):
        wf.save(step, big if step == 1 else {"after": step})
    wf.close()
    assert store.location == f"{url}/workflows"
    assert [i.location for i in store.workflows()] == [f"{url}/workflows/{store._dir('big').split('/')[-1]}"]
    record = store.load("big", 1)
    assert record.header.compression == "zstd" and record.header.raw_size == len(big)
    assert store.fs.size(record.source) > 8 * 1024 * 1024  # one object, header and payload, not a placeholder
    assert record.state() == big
    assert store.fs.pending_uploads() == []  # the upload completed, nothing left behind
    resumed = Workflow(store, "big", history=None)
    assert resumed.resumed_from.step == 2 and resumed.state == {"after": 2}
    resumed.close()


def test_damaged_state_on_s3_is_moved_under_damaged_not_deleted(s3_wstore):
    _, store, _ = s3_wstore
    wf = Workflow(store, "dmg")
    for step in wf.steps([1, 2, 3]):
        wf.save(step, {"step": step})
    wf.close()
    rel = store._state_rel("dmg", 3)
    body = bytearray(store.fs.read_bytes(rel))
    body[-3] ^= 0x01  # one flipped payload byte
    store.fs.write_bytes(rel, bytes(body))
    resumed = Workflow(store, "dmg")
    assert resumed.resumed_from.step == 2 and resumed.state == {"step": 2}
    resumed.close()
    assert not store.fs.exists(rel)
    assert store.fs.read_bytes(store._state_rel("dmg", 3, damaged=True)) == bytes(body)  # kept for inspection
    assert [(e.seq, e.damaged) for e in store.entries("dmg")] == [(3, True), (2, False), (1, False)]


def test_writer_sigkilled_mid_upload_on_s3_leaves_the_last_state_and_the_resume_continues_after_it(s3_wstore, tmp_path):
    spec, store, env = s3_wstore
    spool = tmp_path / "spool"
    spool.mkdir()
    proc = _child("save-loop", spec, "cut", env={**env, "WF_TEST_CRASH_AFTER": "2", "TMPDIR": str(spool)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    assert list(spool.iterdir()) == []  # the spooled payload had no name: nothing of it outlives the process
    assert "saved 2" in out and "saving 3" in out and "saved 3" not in out
    states = f"{store._dir('cut')}/states"
    assert store.fs.listdir(states) == ["000000000001.state", "000000000002.state"]  # the partial one is not listed
    assert [u.rel.rpartition("/")[0] for u in store.fs.pending_uploads(store._dir("cut"))] == [states]
    assert store.busy("cut"), "the killed writer's lease should still hold the workflow"
    started = time.monotonic()
    wf = Workflow(store, "cut", lock_timeout=30).resume()  # waits for the dead writer's lease to expire
    assert time.monotonic() - started <= LEASE + 5
    assert wf.resumed_from.step == 2 and wf.state == payload(2)
    assert next(iter(wf.steps(range(1, 10)))) == 3  # continues from the last saved step
    wf.close()
    assert store.load("cut", 1).state() == payload(1)


def test_task_state_values_on_s3_round_trip_and_expire(s3_wstore):
    from airflow_checkpoint_provider.core.workflow.blobs import TaskStateBlobs, task_rel

    _, store, _ = s3_wstore
    blobs = TaskStateBlobs(store.store)
    rel = task_rel("dag", "run", "task", -1, "big")
    text = json.dumps({"rows": list(range(50_000))})
    assert blobs.put(rel, text, about={"key": "big"}) == f"checkpoint-store:{rel}"
    assert blobs.get(rel) == text
    assert blobs.expire(3600) == [] and blobs.get(rel) == text  # written just now: kept
    assert blobs.expire(0, dry_run=True) == [rel] and blobs.get(rel) == text
    assert blobs.expire(0) == [rel] and blobs.get(rel) is None


def test_workflow_expiry_on_s3_deletes_old_workflows_and_skips_one_whose_writer_holds_its_lease(s3_wstore):
    from datetime import timedelta

    from airflow_checkpoint_provider.core.workflow import expire

    _, store, _ = s3_wstore
    for wid in ("old", "running"):
        wf = Workflow(store, wid)
        for step in wf.steps([1]):
            wf.save(step, {"step": step})
        wf.close()
    holder = Workflow(store, "running").resume()  # holds the workflow's lease, as a running task does
    try:
        done = {d.workflow.workflow_id: (d.removed, d.skipped) for d in expire(store, older_than=timedelta(0))}
    finally:
        holder.close()
    assert done == {"old": (True, None), "running": (False, "a writer is running it")}
    assert [i.workflow_id for i in store.workflows()] == ["running"]
    assert store.fs.listdir(store._dir("old")) == []


_THROUGH_AIRFLOW = """
import json, sys
from airflow_checkpoint_provider import cli
from airflow_checkpoint_provider.core.workflow import Workflow
from airflow_checkpoint_provider.workflow import CheckpointStateBackend
from airflow_checkpoint_provider.workflow.task import open_store
wstore = open_store()  # [checkpoint] storage_root and storage_conn_id, as a task opens it
wf = Workflow(wstore, "via-airflow")
for step in wf.steps([1, 2]):
    wf.save(step, {"step": step})
wf.close()
blobs = CheckpointStateBackend(threshold=10).blobs
from airflow_checkpoint_provider.dags.choices import checkpoint_choices
choices = checkpoint_choices()[0]  # the restore DAGs' trigger form lists the store's checkpoints
print(json.dumps({"location": wstore.location, "blobs_root": blobs.store.root, "choices": choices}), flush=True)
sys.exit(cli.main(["workflow", "list", "--json"]))
"""


def test_task_backend_and_cli_open_the_s3_store_with_the_storage_connection(s3_server, tmp_path):
    url, options, _ = _s3(s3_server, tmp_path)
    checkpoints = Store.open(url, create=True, s3=options)
    staging = checkpoints.staging(staging_key("wf-s3", "choices"))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(b"x" * 100)
    cid = checkpoints.seal(staging).checkpoint_id
    conn = {
        "conn_type": "aws",
        "login": options.access_key_id,
        "password": options.secret_access_key,
        "extra": {"endpoint_url": options.endpoint_url},
    }
    # the connection comes from a 0600 secrets file (the local filesystem secrets backend), not the environment
    secrets_file = tmp_path / "connections.json"
    secrets_file.touch(mode=0o600)
    secrets_file.write_text(json.dumps({"checkpoint_s3": conn}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AWS_", "AIRFLOW__CHECKPOINT__"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "home"),
        AIRFLOW__CHECKPOINT__STORAGE_ROOT=url,
        AIRFLOW__CHECKPOINT__STORAGE_CONN_ID="checkpoint_s3",
        AIRFLOW__SECRETS__BACKEND="airflow.secrets.local_filesystem.LocalFilesystemBackend",
        AIRFLOW__SECRETS__BACKEND_KWARGS=json.dumps({"connections_file_path": str(secrets_file)}),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _THROUGH_AIRFLOW], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    opened = json.loads(next(ln for ln in lines if ln.startswith('{"location"')))
    assert opened == {"location": f"{url}/workflows", "blobs_root": url, "choices": ["last-known-good", cid]}
    listed = json.loads(proc.stdout[proc.stdout.index("\n[") + 1 :])
    assert [(w["workflow_id"], w["states"], w["latest_step"]) for w in listed] == [("via-airflow", 2, 2)]
    store = FileWorkflowStore(Store.open(url, s3=options))  # what the task wrote is in the bucket
    assert store.load("via-airflow", 2).state() == {"step": 2}
    assert options.secret_access_key not in proc.stdout + proc.stderr
