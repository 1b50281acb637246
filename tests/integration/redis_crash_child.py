"""Child process of the Redis crash tests: one journaled restore, killed by ``CHECKPOINT_CRASH_AT``.

Reads a JSON job on stdin (the password travels there, never in argv or the environment):
``{"store", "target": {...}, "cid", "restore_id", "options": {...}, "rollback": bool}``. It
writes a real journal into the real store, plans, prepares and cuts over (then rolls back
when asked), as the orchestration does, and prints ``DONE`` if it was not killed.
"""

from __future__ import annotations

import json
import sys

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.engines.redis import RedisRestore
from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.journal import Journal


def main() -> None:
    job = json.loads(sys.stdin.read())
    store = Store.open(job["store"])
    target = RedisTarget(**job["target"])
    manifest = store.get(job["cid"]).manifest
    journal = Journal.begin(
        store.fs, checkpoint_id=job["cid"], restore_id=job["restore_id"], owner={"test": "redis crash"}
    )
    part = RedisRestore(target, store, job["cid"], manifest.artifacts, **job["options"])
    part.journal = journal.component(part.component, target.public())
    _, problems = part.plan()
    assert not problems, problems
    part.prepare()
    part.cutover()
    if job.get("rollback"):
        part.rollback()
    journal.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
