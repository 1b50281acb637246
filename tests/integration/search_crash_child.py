"""Child process of the search crash tests: a real journaled restore that SIGKILLs itself at the
crash point named by ``$CHECKPOINT_CRASH_AT``.

Usage: python -m tests.integration.search_crash_child URL STORE_ROOT CHECKPOINT_ID RESTORE_ID SCENARIO INDICES
(``SCENARIO``: ``restore``, or ``rollback``: restore, then undo the completed cut-over as the
orchestration does when a later component fails; ``INDICES``: comma-separated selection).
"""

from __future__ import annotations

import sys

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.engines.search.component import SearchRestore
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.journal import Journal


def main(url: str, root: str, cid: str, rid: str, scenario: str, indices: str) -> None:
    store = Store.open(root)
    artifact = store.get(cid).manifest.artifact("search/snapshot.json")
    target = SearchTarget(url=url, timeout=60)
    part = SearchRestore(target, store, cid, artifact, wait_timeout=60, indices=indices.split(","))
    journal = Journal.begin(store.fs, checkpoint_id=cid, restore_id=rid)
    part.journal = journal.component("search", target.public())
    part.prepare()
    part.cutover()
    if scenario == "rollback":
        part.rollback()
    journal.close()
    print("DONE")


if __name__ == "__main__":
    main(*sys.argv[1:7])
