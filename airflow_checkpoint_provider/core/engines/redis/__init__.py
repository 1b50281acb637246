"""Redis engine: capture a server into staging, and read what was captured.

Modules, in the order data flows:

* :mod:`.resp`: a small RESP client on a raw socket (TLS, AUTH, pipelines).
* :mod:`.replication`: ``SYNC`` and the RDB payload framing (``$<len>`` / ``$EOF:<mark>``).
* :mod:`.rdb` and :mod:`.encoding`: the streaming RDB parser/validator and its building blocks
  (also what restore uses to turn entries into ``RESTORE`` payloads).
* :mod:`.logical`: the ``SCAN`` + ``DUMP`` capture and its framing (``redis/logical.bin``).
* :mod:`.fence`: the optional ``CLIENT PAUSE WRITE`` fence. The pause is always bounded: a
  capture that dies mid-fence blocks writers for at most ``pause_timeout`` seconds (default
  30 s, at most :data:`~.fence.MAX_PAUSE_S`), when the server lifts the pause by itself.
* :mod:`.capture`: :func:`capture`, the entry point (modes ``rdb``, ``logical``, ``auto``). The
  provider's own copies (dbs holding a marker) are left out unless ``include_own_copies``.
* :mod:`.restore`: :class:`RedisRestore`, a component of a checkpoint restore (spare dbs, verify,
  ``SWAPDB``), built on :mod:`._load` (fast RDB walk, pipelined ``RESTORE``), :mod:`._side`
  (the journaled side-by-side steps, :mod:`._swap`) and :mod:`._placement` (``dump.rdb``
  placement and restart for self-managed servers).
* :mod:`._recover`: :func:`recover`, the replay of a restore killed at any point, from its journal.
* :mod:`.copies`: the provider's own copies (spare dbs being loaded, rollback copies), their
  markers and the store's index of them: :func:`list_rollbacks`, :func:`drop_rollback`,
  :func:`prune_rollbacks`, :func:`find_leftovers`, :func:`drop_leftovers`.
* :mod:`.health`: server facts and health checks.

What the orchestration calls (besides the ``RedisRestore`` component)::

    recover(target, entry, *, store=None) -> list[str]     # replay a journal entry
    find_leftovers(target, live_restore_ids, *, store=None) -> list[dict]
    drop_leftovers(target, live_restore_ids, *, store=None, dry_run=False) -> list[str]
    list_rollbacks(target, *, store=None) -> list[dict]
    drop_rollback(target, db, *, store=None, live_restore_ids=()) -> None
    prune_rollbacks(target, *, keep=1, max_age=86400.0, store=None, live_restore_ids=(),
                    dry_run=False) -> list[dict]
    capture(target, staging, *, include_own_copies=False, pause_writes=False, pause_timeout=30.0, ...)
"""

from __future__ import annotations

from .capture import MODES, RDB_ARTIFACT, RDB_KIND, capture, capture_rdb
from .encoding import RDB_VERSION_MAX, RdbError, restore_payload, split_payload
from .logical import ARTIFACT as LOGICAL_ARTIFACT
from .logical import KIND as LOGICAL_KIND
from .logical import LogicalFunctions, LogicalKey, capture_logical, read_logical
from .rdb import Aux, Entry, Function, ModuleAux, RdbParser, ResizeDb
from .resp import server_info

__all__ = [
    "LOGICAL_ARTIFACT",
    "LOGICAL_KIND",
    "MODES",
    "RDB_ARTIFACT",
    "RDB_KIND",
    "RDB_VERSION_MAX",
    "Aux",
    "Entry",
    "Function",
    "LogicalFunctions",
    "LogicalKey",
    "ModuleAux",
    "RdbError",
    "RdbParser",
    "ResizeDb",
    "capture",
    "capture_logical",
    "capture_rdb",
    "read_logical",
    "restore_payload",
    "server_info",
    "split_payload",
]

# Restore (side by side + SWAPDB, in place, file placement), its replay, health and the own copies.
from ._recover import recover
from .copies import (
    PREFIX as MARKER_PREFIX,
)
from .copies import (
    drop_leftovers,
    drop_rollback,
    find_leftovers,
    list_rollbacks,
    prune_rollbacks,
    rollback_policy,
)
from .health import health, max_rdb_version
from .restore import STEPS, RedisRestore, RedisRestoreError

__all__ += [
    "MARKER_PREFIX",
    "STEPS",
    "RedisRestore",
    "RedisRestoreError",
    "drop_leftovers",
    "drop_rollback",
    "find_leftovers",
    "health",
    "list_rollbacks",
    "max_rdb_version",
    "prune_rollbacks",
    "recover",
    "rollback_policy",
]
