"""Leftovers of dead restores and captures in the live stores, and their removal.

A restore's journal names every copy it makes, so the replay of a killed restore removes them.
What no journal names any more (a journal removed by hand, a restore of an older version, a
capture's search snapshot whose staging area died) is found by name and removed here:

* PostgreSQL: ``<db>__restoring`` databases;
* Redis: spare dbs marked ``loading`` by a restore that is not running;
* search: ``__restoring_`` indices, and snapshots the provider took that no sealed checkpoint
  references and that are older than the longest capture.

Nothing that a live restore (one holding a lease, :mod:`.lease`) made is ever touched. The next
capture of a server calls :func:`drop` for it, and ``airflow-checkpoint cleanup`` for every
server (``--dry-run`` lists them first).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_checkpoint_provider.core.journal import Journal, open_journals
from airflow_checkpoint_provider.core.lease import read_leases
from airflow_checkpoint_provider.core.store import Store

log = logging.getLogger(__name__)


def live_restores(store: Store) -> tuple[set[str], set[str]]:
    """(restore ids holding a live lease, the copies their journals name)."""
    live = {r.holder for r in read_leases(store.fs) if r.live()}
    copies: set[str] = set()
    for rid in open_journals(store.fs):
        if rid not in live:
            continue
        try:
            journal = Journal.load(store.fs, rid)
        except Exception:
            continue
        for entry in journal.components.values():
            for names in entry.copies.values():
                copies.update(str(n) for n in (names if isinstance(names, list) else [names]))
    return live, copies


def drop(component: str, target: Any, store: Store, *, dry_run: bool = False, **options: Any) -> list[str]:
    """Remove (or with ``dry_run`` list) the leftovers on one server; returns what, named."""
    from airflow_checkpoint_provider.core.engines import registry

    live, protected = live_restores(store)
    found = registry.get(component).leftovers(target, store, live, protected, dry_run, **options)
    for line in found:
        log.info("%s leftover %s", "Found" if dry_run else "Removed", line)
    return found
