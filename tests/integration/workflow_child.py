"""Child process of the workflow store tests: a writer the parent kills, or one of two rivals.

Usage::

    python -m tests.integration.workflow_child save-loop STORE WORKFLOW_ID
    python -m tests.integration.workflow_child writer STORE WORKFLOW_ID STEPS STOP_AFTER DELAY

STORE is ``file:<store root>``, ``pg:<database>`` or ``s3:<s3://bucket/prefix>``; the PostgreSQL
server's host, port, user and password come in the environment variable ``WF_TEST_PG`` (JSON), the
S3 endpoint and keys in a private JSON file whose path is in ``WF_TEST_S3``, never in argv.
With ``WF_TEST_CRASH_AFTER=N`` the save loop SIGKILLs itself in the middle of the upload of the
state after step N (core/crashpoints.py; that step must be a streamed one, so an odd N + 1).
``save-loop`` saves steps 1, 2, 3, ... forever (each state a 4 or 9 MiB function of its step),
printing ``saving N`` before and ``saved N`` after each save. ``writer`` runs steps 1..STEPS
(sleeping DELAY seconds in each), printing ``ran N``, and stops after STOP_AFTER.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.workflow import FileWorkflowStore, Workflow

STATE_BYTES = 4 * 1024 * 1024
#: odd steps are above the streaming threshold (core/workflow/stream.py), so kills land in both kinds of save
STREAMED_BYTES = 9 * 1024 * 1024


def payload(step: int) -> bytes:
    """The state of ``step``: deterministic, so the parent can tell a complete one from a torn one."""
    return random.Random(step).randbytes(STREAMED_BYTES if step % 2 else STATE_BYTES)


def open_store(spec: str):
    kind, _, where = spec.partition(":")
    if kind == "file":
        return FileWorkflowStore(Store.open(where, create=True, lock_timeout=60))
    if kind == "s3":
        from airflow_checkpoint_provider.core.fs_s3 import S3Options

        options = S3Options.from_file(os.environ["WF_TEST_S3"])
        return FileWorkflowStore(Store.open(where, create=True, lock_timeout=60, s3=options))
    import psycopg

    from airflow_checkpoint_provider.core.workflow.pgstore import PostgresWorkflowStore

    info = json.loads(os.environ["WF_TEST_PG"])

    def connect():
        return psycopg.connect(
            host=info["host"],
            port=info["port"],
            user=info["user"],
            password=info["password"],
            dbname=where,
            autocommit=True,
        )

    return PostgresWorkflowStore(connect, location=f"postgresql://{info['user']}@{info['host']}:{info['port']}/{where}")


def save_loop(store, workflow_id: str) -> None:
    wf = Workflow(store, workflow_id, history=3)
    crash_after = int(os.environ.get("WF_TEST_CRASH_AFTER", "0"))
    for step in wf.steps(range(1, 100_000)):
        if crash_after and step == crash_after + 1:
            os.environ["CHECKPOINT_CRASH_AT"] = "s3.upload.part"
        state = payload(step)
        print(f"saving {step}", flush=True)
        started = time.monotonic()
        wf.save(step, state)
        print(f"saved {step} {time.monotonic() - started:.4f}", flush=True)


def writer(store, workflow_id: str, steps: int, stop_after: int, delay: float) -> None:
    print(f"start {time.time():.3f}", flush=True)
    wf = Workflow(store, workflow_id, lock_timeout=60)
    for step in wf.steps(range(1, steps + 1)):
        print(f"ran {step} {time.time():.3f}", flush=True)
        time.sleep(delay)
        wf.save(step, {"step": step, "pid": os.getpid()})
        if step == stop_after:
            print(f"stopped {time.time():.3f}", flush=True)
            os._exit(0)  # leaves like a killed task: no summary, the lock goes with the process
    wf.summary()
    print("done", flush=True)


if __name__ == "__main__":
    mode, spec, wid, *rest = sys.argv[1:]
    if mode == "save-loop":
        save_loop(open_store(spec), wid)
    else:
        writer(open_store(spec), wid, int(rest[0]), int(rest[1]), float(rest[2]))
