"""Child process of the files crash tests: one journaled restore that may SIGKILL itself.

Reads one JSON line on stdin: ``{"root", "checkpoint_id", "restore_id", "path", "then": "rollback"|null}``.
``CHECKPOINT_CRASH_AT`` names the crash point. ``then="rollback"`` undoes the cut-over after it
(as the orchestration does when a later component fails).
"""

from __future__ import annotations

import json
import sys

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.engines import files as F
from airflow_checkpoint_provider.core.journal import Journal


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    store = Store.open(spec["root"])
    target = F.FilesTarget(spec["path"])
    manifest = store.get(spec["checkpoint_id"]).manifest
    journal = Journal.begin(store.fs, checkpoint_id=manifest.checkpoint_id, restore_id=spec["restore_id"])
    part = F.FilesRestore(target, store, manifest.checkpoint_id, manifest.artifacts)
    part.journal = journal.component("files", {**target.public(), "conn_id": "files_default"})
    part.prepare()
    part.cutover()
    if spec.get("then") == "rollback":
        part.rollback()
    journal.close()
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
