"""Child process of the PostgreSQL crash tests: one journaled restore that may SIGKILL itself.

Reads one JSON line on stdin (the password travels there, never in argv or the environment):
``{"root", "checkpoint_id", "restore_id", "target": {...}, "rename": {...}, "then": "rollback"|"fail"|null}``.
``CHECKPOINT_CRASH_AT`` names the crash point. ``then="rollback"`` undoes the cut-over after it
(as the orchestration does when a later component fails); ``then="fail"`` makes the session
termination fail after connections were blocked, so that the block is lifted again.
"""

from __future__ import annotations

import json
import sys

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.engines import postgres as P
from airflow_checkpoint_provider.core.engines.postgres import _cutover
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.journal import Journal


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    store = Store.open(spec["root"])
    target = PostgresTarget(**spec["target"])
    manifest = store.get(spec["checkpoint_id"]).manifest
    journal = Journal.begin(store.fs, checkpoint_id=manifest.checkpoint_id, restore_id=spec["restore_id"])
    part = P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts, rename=spec.get("rename"))
    part.journal = journal.component("postgres", target.public())
    part.prepare()
    if spec.get("then") == "fail":

        def refuse(self, name):
            raise CheckpointError(f"refusing to end the sessions on {name}", hint="test")

        _cutover.Server.terminate = refuse
        try:
            part.cutover()
        except CheckpointError:
            pass
        part.abort()
    else:
        part.cutover()
        if spec.get("then") == "rollback":
            part.rollback()
    journal.close()
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
