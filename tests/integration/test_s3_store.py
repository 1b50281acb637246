"""The store on S3-compatible object storage, against the real S3 server of the test services (SeaweedFS).

Every test works below a prefix of its own in the services' bucket. Nothing here is faked: the
conditional writes, the multipart uploads, the lease lock and the LKG compare-and-swap are the
server's own answers.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.crypt import Cipher
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.envelope import rekey
from airflow_checkpoint_provider.core.errors import (
    ConcurrentUpdateError,
    IntegrityError,
    LkgConflictError,
    LockTimeoutError,
    StorePermissionError,
    VerificationFailedError,
)
from airflow_checkpoint_provider.core.fs_s3 import S3FS, S3Options
from airflow_checkpoint_provider.core.recovery import RestoreRequest, restore
from tests.integration.engine_samples import SAMPLES, S
from tests.integration.test_engine_contract import _builder

REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@pytest.fixture
def s3_options(s3_server) -> S3Options:
    return S3Options(
        endpoint_url=s3_server["url"],
        access_key_id=s3_server["access_key_id"],
        secret_access_key=s3_server["secret_access_key"],
    )


@pytest.fixture
def s3_url(s3_server) -> str:
    return f"s3://{s3_server['bucket']}/t-{secrets.token_hex(6)}"


@pytest.fixture
def s3_store(s3_url, s3_options) -> Store:
    return Store.open(s3_url, create=True, s3=s3_options)


def _small_checkpoint(store: Store, run: str, payload: bytes = b"x" * 1000) -> str:
    staging = store.staging(staging_key("s3", run))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(payload)
    return store.seal(staging).checkpoint_id


# ---- the server's conditional writes, which the store relies on ----------------------------------


def test_second_create_of_one_key_is_refused_by_the_server(s3_url, s3_options):
    fs = S3FS(s3_url, s3_options)
    fs.create_bytes("refs/x.json", b"first")
    with pytest.raises(ConcurrentUpdateError, match="changed by another writer"):
        fs.create_bytes("refs/x.json", b"second")
    assert fs.read_bytes("refs/x.json") == b"first"


def test_replace_with_a_stale_etag_is_refused_by_the_server(s3_url, s3_options):
    fs = S3FS(s3_url, s3_options)
    fs.create_bytes("refs/p.json", b"v1")
    _, tag = fs.read_tagged("refs/p.json")
    fs.replace_if("refs/p.json", b"v2", tag)
    with pytest.raises(ConcurrentUpdateError):
        fs.replace_if("refs/p.json", b"v3", tag)  # the tag of v1 no longer matches
    with pytest.raises(ConcurrentUpdateError):
        fs.replace_if("refs/p.json", b"v3", None)  # None means "only if absent"
    assert fs.read_bytes("refs/p.json") == b"v2"


def test_multipart_completion_over_an_existing_key_is_refused(s3_url, s3_options):
    fs = S3FS(s3_url, s3_options)
    fs.write_bytes("checkpoints/a.tar", b"published")
    with pytest.raises(ConcurrentUpdateError), fs.atomic_writer("checkpoints/a.tar") as w:
        w.write(os.urandom(9 * MiB))  # more than one part: a real multipart upload
        w.commit(create_only=True)
    assert fs.read_bytes("checkpoints/a.tar") == b"published"
    assert fs.pending_uploads() == []  # the refused upload was aborted, not left behind


def test_lease_lock_is_exclusive_and_names_its_holder(s3_url, s3_options):
    fs = S3FS(s3_url, s3_options)
    with fs.lock("locks/store.lock", 5), pytest.raises(LockTimeoutError, match=f"pid {os.getpid()}"):
        with S3FS(s3_url, s3_options).lock("locks/store.lock", 0.5):
            pass
    with fs.lock("locks/store.lock", 1):  # released: free again at once
        pass


def test_expired_lease_of_a_dead_holder_is_taken_over(s3_url, s3_options):
    fs = S3FS(s3_url, s3_options)
    dead = {"owner": "gone", "host": "elsewhere", "pid": 1, "since": 0, "expires": 1}
    fs.create_bytes("locks/store.lock", json.dumps(dead).encode())
    with fs.lock("locks/store.lock", 5):
        assert json.loads(fs.read_bytes("locks/store.lock"))["pid"] == os.getpid()


def test_streaming_reader_seeks_and_reads_in_constant_memory(s3_url, s3_options):
    fs = S3FS(s3_url, s3_options)
    data = os.urandom(20 * MiB + 123)
    with fs.atomic_writer("big.bin") as w:
        for i in range(0, len(data), MiB):
            w.write(data[i : i + MiB])
        assert w.upload_id is not None and len(w._buf) < s3_options.part_size + MiB
        w.commit()
    with fs.open_read("big.bin") as f:
        f.seek(5 * MiB + 7)
        assert f.read(100) == data[5 * MiB + 7 : 5 * MiB + 107]
        f.seek(0)
        assert f.read() == data


# ---- the store over S3 -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ("postgres", "redis") if n in registry.names()])
def test_checkpoint_round_trip_through_s3_restores_the_exact_data(name, request, tmp_path, s3_store):
    engine = registry.get(name)
    sample = SAMPLES[name](request, tmp_path)
    try:
        sample.seed()
        original = sample.state()
        staging = s3_store.staging(staging_key("s3-round-trip", name))
        engine.capture(sample.target, staging, **sample.capture_options)
        manifest = s3_store.seal(staging)
        cid = manifest.checkpoint_id
        assert [i.checkpoint_id for i in s3_store.list()] == [cid]
        assert s3_store.verify(cid, deep=True).ok
        s3_store.mark_lkg(cid)
        assert s3_store.lkg().checkpoint_id == cid

        sample.damage()
        assert sample.differences(original, sample.state())
        report = restore(
            s3_store, RestoreRequest(checkpoint_id="last-known-good", components=(name,)), _builder(sample)
        )
        assert sample.differences(original, sample.state()) == []
        assert report.healthy, [str(h) for h in report.health]
        assert report.safety_checkpoint_id and s3_store.exists(report.safety_checkpoint_id)
    finally:
        sample.cleanup()


def test_sigkill_mid_upload_lists_nothing_and_cleanup_aborts_the_upload(s3_server, s3_url, s3_options, tmp_path):
    creds = tmp_path / "s3.json"
    creds.write_text(json.dumps(s3_options.__dict__))
    os.chmod(creds, 0o600)
    child = (
        "import os, sys\n"
        "from airflow_checkpoint_provider.core import Store, staging_key\n"
        "from airflow_checkpoint_provider.core.fs_s3 import S3Options\n"
        "store = Store.open(sys.argv[1], create=True, s3=S3Options.from_file(sys.argv[2]))\n"
        "st = store.staging(staging_key('s3', 'killed'))\n"
        "with st.artifact('redis/dump.rdb', store='redis', kind='redis/rdb', compression='none') as sink:\n"
        "    sink.write(os.urandom(20 * 1024 * 1024))\n"
        "os.environ['CHECKPOINT_CRASH_AT'] = 's3.upload.part'\n"
        "store.seal(st)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child, s3_url, str(creds)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = Store.open(s3_url, s3=s3_options)
    assert store.list() == [] and store.scan()[1] == []
    pending = store.fs.pending_uploads()
    assert [u.rel for u in pending] == [f"checkpoints/{u.rel.split('/')[-1]}" for u in pending] and pending
    assert all(u.rel.endswith(".tar") for u in pending)

    removed = store.cleanup(stale_after=0)
    assert any("incomplete upload" in r for r in removed), removed
    assert store.fs.pending_uploads() == []
    assert store.fs.listdir("staging") == []


def test_two_concurrent_lkg_writers_exactly_one_wins(s3_url, s3_options):
    store = Store.open(s3_url, create=True, s3=s3_options)
    first = _small_checkpoint(store, "first")
    store.mark_lkg(first)
    seen = store.lkg()
    candidates = [_small_checkpoint(store, f"c{i}") for i in range(2)]
    gate, outcomes = threading.Barrier(2), {}

    def move(cid: str) -> None:
        mine = Store.open(s3_url, s3=s3_options)  # a writer of its own, with its own client
        gate.wait()
        try:
            mine.mark_lkg(cid, expect=seen)
            outcomes[cid] = "moved"
        except LkgConflictError as exc:
            outcomes[cid] = exc

    threads = [threading.Thread(target=move, args=(c,)) for c in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [c for c, o in outcomes.items() if o == "moved"]
    losers = [o for o in outcomes.values() if isinstance(o, LkgConflictError)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert winners[0] in losers[0].message and "was not moved" in losers[0].message
    assert "lkg set" in losers[0].hint
    pointer = store.lkg()
    assert pointer.checkpoint_id == winners[0] and pointer.previous == first
    assert [p.checkpoint_id for p in store.lkg_history()] == [winners[0], first]


def test_lkg_pointer_replaced_behind_the_writers_back_is_not_overwritten(s3_store):
    cid = _small_checkpoint(s3_store, "a")
    s3_store.mark_lkg(cid)
    other = _small_checkpoint(s3_store, "b")
    # a writer that does not take the lock (or lost its lease) replaces the pointer between the
    # read of its ETag and the conditional write of the store's own move
    fs, real, raced = s3_store.fs, s3_store.fs.read_tagged, []

    def read_then_race(rel):
        got = real(rel)
        if rel == "refs/lkg.json" and not raced:
            raced.append(rel)
            fs.client.put_object(Bucket=fs.bucket, Key=fs.key(rel), Body=got[0] + b"\n")  # a new ETag
        return got

    fs.read_tagged = read_then_race
    with pytest.raises(LkgConflictError, match="another writer replaced"):
        s3_store.mark_lkg(other)
    fs.read_tagged = real
    assert s3_store.lkg().checkpoint_id == cid


def test_wrong_secret_is_a_clear_permission_error_that_does_not_echo_it(s3_url, s3_server):
    wrong = S3Options(endpoint_url=s3_server["url"], access_key_id=s3_server["access_key_id"], secret_access_key="no")
    with pytest.raises(StorePermissionError) as err:
        Store.open(s3_url, create=True, s3=wrong)
    assert "storage_conn_id" in err.value.hint
    assert s3_server["secret_access_key"] not in str(err.value)


def test_credentials_never_reach_logs_manifest_or_store_objects(s3_server, s3_url, s3_options, caplog):
    caplog.set_level(logging.DEBUG)
    assert s3_options.secret_access_key not in repr(s3_options)
    store = Store.open(s3_url, create=True, s3=s3_options)
    cid = _small_checkpoint(store, "creds")
    store.mark_lkg(cid)
    store.verify(cid)
    store.cleanup(stale_after=0)
    secret, key = s3_server["secret_access_key"], s3_server["access_key_id"]
    assert secret not in caplog.text
    fs = store.fs
    for obj in fs._walk(""):
        body = fs.client.get_object(Bucket=fs.bucket, Key=obj["Key"])["Body"].read()
        assert secret.encode() not in body and key.encode() not in body, obj["Key"]
    assert not any(secret in v or key in v for v in os.environ.values())


def test_cli_lists_verifies_and_cleans_an_s3_store(s3_store, s3_server, tmp_path):
    cid = _small_checkpoint(s3_store, "cli")
    conn = {
        "conn_type": "aws",
        "login": s3_server["access_key_id"],
        "password": s3_server["secret_access_key"],
        "extra": {"endpoint_url": s3_server["url"]},
    }
    # the connection comes from a 0600 secrets file (the local filesystem secrets backend), not the environment
    secrets_file = tmp_path / "connections.json"
    secrets_file.write_text(json.dumps({"checkpoint_s3": conn}))
    os.chmod(secrets_file, 0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AWS_", "AIRFLOW__CHECKPOINT__"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "home"),
        AIRFLOW__CHECKPOINT__STORAGE_ROOT=s3_store.root,
        AIRFLOW__CHECKPOINT__STORAGE_CONN_ID="checkpoint_s3",
        AIRFLOW__SECRETS__BACKEND="airflow.secrets.local_filesystem.LocalFilesystemBackend",
        AIRFLOW__SECRETS__BACKEND_KWARGS=json.dumps({"connections_file_path": str(secrets_file)}),
    )
    cli = [sys.executable, "-m", "airflow_checkpoint_provider.cli"]
    listed = subprocess.run([*cli, "list", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout[listed.stdout.index("\n[") + 1 :] if not listed.stdout.startswith("[") else listed.stdout
    assert [c["checkpoint_id"] for c in json.loads(out)] == [cid]  # (Airflow may log a line before the JSON)
    verified = subprocess.run([*cli, "verify", cid], env=env, capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert s3_server["secret_access_key"] not in listed.stderr + verified.stderr + verified.stdout


# ---- encryption at rest (core/crypt.py) through the S3 store -------------------------------------


def _bucket_bytes(store: Store) -> bytes:
    fs = store.fs
    return b"".join(fs.client.get_object(Bucket=fs.bucket, Key=o["Key"])["Body"].read() for o in fs._walk(""))


def test_encrypted_artifact_leaves_no_plaintext_in_the_bucket(s3_url, s3_options):
    canary = f"row-canary-{secrets.token_hex(16)}".encode()
    plain = Store.open(f"{s3_url}-plain", create=True, s3=s3_options)
    _small_checkpoint(plain, "plain", canary * 100)
    assert canary in _bucket_bytes(plain)  # the control: without a key the bytes are stored as written

    cipher = Cipher(os.urandom(32))
    store = Store.open(s3_url, create=True, s3=s3_options, cipher=cipher)
    cid = _small_checkpoint(store, "secret", canary * 100)
    assert canary not in _bucket_bytes(store)
    [art] = store.get(cid).manifest.artifacts
    enc = art.meta["encryption"]
    assert {k: enc[k] for k in ("algorithm", "master_key_id", "chunk_size")} == {
        "algorithm": "AES-256-GCM-chunked-v1",
        "master_key_id": cipher.key_id,
        "chunk_size": MiB,
    }
    assert store.data_key(cid).key_id == enc["data_key_id"] != cipher.key_id  # a data key of its own
    assert store.verify(cid).ok  # checksums are over the ciphertext: no key needed
    assert Store.open(s3_url, s3=s3_options).verify(cid).ok
    assert store.read_artifact(cid, "redis/dump.rdb") == canary * 100


def test_wrong_key_is_one_clear_error_naming_both_key_ids(s3_url, s3_options):
    right, wrong = Cipher(os.urandom(32)), Cipher(os.urandom(32))
    cid = _small_checkpoint(Store.open(s3_url, create=True, s3=s3_options, cipher=right), "k", b"data" * 10)
    with pytest.raises(IntegrityError) as err:
        Store.open(s3_url, s3=s3_options, cipher=wrong).read_artifact(cid, "redis/dump.rdb")
    assert right.key_id in err.value.message and wrong.key_id in err.value.message
    assert right.key_id in err.value.hint
    with pytest.raises(IntegrityError, match="no master key is configured"):
        Store.open(s3_url, s3=s3_options).read_artifact(cid, "redis/dump.rdb")


def test_encrypted_redis_round_trip_through_s3_and_a_flipped_byte_is_refused_before_restore(
    request, tmp_path, s3_url, s3_options
):
    name = "redis"
    engine, sample = registry.get(name), SAMPLES[name](request, tmp_path)
    store = Store.open(s3_url, create=True, s3=s3_options, cipher=Cipher(os.urandom(32)))
    sample.seed()
    original = sample.state()
    staging = store.staging(staging_key("s3-encrypted", name))
    engine.capture(sample.target, staging, **sample.capture_options)
    cid = store.seal(staging).checkpoint_id
    assert all("encryption" in a.meta for a in store.get(cid).manifest.artifacts)
    sample.damage()
    report = restore(store, RestoreRequest(checkpoint_id=cid, components=(name,)), _builder(sample))
    assert sample.differences(original, sample.state()) == [] and report.healthy

    # one flipped ciphertext byte in the middle of the artifact: verify (no key needed) names it
    fs, rel = store.fs, store.get(cid).archive
    data = bytearray(fs.read_bytes(rel))
    data[len(data) // 2] ^= 0x01
    fs.write_bytes(rel, bytes(data))
    result = store.verify(cid)
    assert not result.ok and any(p.kind.value == "checksum_mismatch" for p in result.problems), result.problems
    sample.damage()
    damaged = sample.state()
    with pytest.raises(VerificationFailedError):
        restore(store, RestoreRequest(checkpoint_id=cid, components=(name,)), _builder(sample))
    assert sample.differences(damaged, sample.state()) == []  # nothing was touched


def test_two_workers_staging_into_one_s3_run_share_the_first_writers_data_key(s3_url, s3_options):
    cipher = Cipher(os.urandom(32))
    worker_a, worker_b = (Store.open(s3_url, create=True, s3=s3_options, cipher=cipher) for _ in range(2))
    key = staging_key("s3-workers", "one-run")
    with worker_a.staging(key).artifact("postgres/app.dump", store="postgres", kind="pg_dump/custom") as sink:
        sink.write(b"captured on worker a")
    with worker_b.staging(key).artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        sink.write(b"captured on worker b")
    cid = worker_a.seal(worker_a.staging(key)).checkpoint_id
    ids = {a.meta["encryption"]["data_key_id"] for a in worker_b.get(cid).manifest.artifacts}
    assert ids == {worker_b.data_key(cid).key_id}
    assert worker_b.read_artifact(cid, "postgres/app.dump") == b"captured on worker a"
    assert worker_b.read_artifact(cid, "redis/dump.rdb") == b"captured on worker b"


def test_rekeyed_encrypted_postgres_checkpoint_refuses_the_old_key_and_restores_exact_data_with_the_new(
    request, tmp_path, s3_url, s3_options
):
    name = "postgres"
    engine, sample = registry.get(name), SAMPLES[name](request, tmp_path)
    old, new = Cipher(os.urandom(32)), Cipher(os.urandom(32))
    store = Store.open(s3_url, create=True, s3=s3_options, cipher=old)
    sample.seed()
    token = secrets.token_hex(6)
    table, row = f"payroll_{token}", f"row-canary-{token}"
    with S.pg_connect(sample.pg, sample.db) as conn:
        conn.execute(f'CREATE TABLE "{table}" (v text)')
        conn.execute(f'INSERT INTO "{table}" VALUES (%s)', (row,))
    original = sample.state()
    staging = store.staging(staging_key("s3-rekey", name))
    engine.capture(sample.target, staging, **sample.capture_options)
    staged = _bucket_bytes(store)  # neither the row nor the table name, while staged nor once sealed
    assert row.encode() not in staged and table.encode() not in staged
    cid = store.seal(staging).checkpoint_id
    sealed = _bucket_bytes(store)
    assert row.encode() not in sealed and table.encode() not in sealed
    [art] = store.get(cid).manifest.artifacts
    assert art.fingerprints["rows"][f"public.{table}"] == 1  # decrypted with the key
    assert table.encode() in store.read_artifact(cid, art.name)  # the control: the dump's TOC names it

    archive = store.fs.read_tagged(store.get(cid).archive)
    report = rekey(store.fs, old, new)
    assert report.rewrapped == [f"checkpoints/{cid}.keys.json"]
    assert store.fs.read_tagged(store.get(cid).archive) == archive  # same bytes, same ETag: not rewritten

    sample.damage()
    damaged = sample.state()
    with pytest.raises(IntegrityError) as err:
        restore(
            Store.open(s3_url, s3=s3_options, cipher=old),
            RestoreRequest(checkpoint_id=cid, components=(name,)),
            _builder(sample),
        )
    assert f"wrapped by master key {new.key_id}, not by the configured key {old.key_id}" in err.value.message
    assert sample.state() == damaged  # refused before anything was touched
    rekeyed = Store.open(s3_url, s3=s3_options, cipher=new)
    report = restore(rekeyed, RestoreRequest(checkpoint_id=cid, components=(name,)), _builder(sample))
    assert sample.differences(original, sample.state()) == [] and report.healthy


def test_s3_credentials_are_in_a_private_file_not_on_the_server_command_line(s3_server):
    conf = Path(s3_server["config"])
    assert conf.stat().st_mode & 0o777 == 0o600
    argv = Path(f"/proc/{s3_server['pid']}/cmdline").read_bytes().decode()
    environ = Path(f"/proc/{s3_server['pid']}/environ").read_bytes().decode()
    for secret in (s3_server["secret_access_key"], s3_server["access_key_id"]):
        assert secret not in argv and secret not in environ
