"""Redis engine: capture a server into staging, and read what was captured.

Modules, in the order data flows:

* :mod:`.resp`: a small RESP client on a raw socket (TLS, AUTH, pipelines).
* :mod:`.replication`: ``SYNC`` and the RDB payload framing (``$<len>`` / ``$EOF:<mark>``).
* :mod:`.rdb` and :mod:`.encoding`: the streaming RDB parser/validator and its building blocks
  (also what restore uses to turn entries into ``RESTORE`` payloads).
* :mod:`.logical`: the ``SCAN`` + ``DUMP`` capture and its framing (``redis/logical.bin``).
* :mod:`.fence`: the optional ``CLIENT PAUSE WRITE`` fence.
* :mod:`.capture`: :func:`capture`, the entry point (modes ``rdb``, ``logical``, ``auto``).
* :mod:`.restore`: :class:`RedisRestore`, a component of a checkpoint restore (spare dbs, verify,
  ``SWAPDB``), built on :mod:`._load` (fast RDB walk, pipelined ``RESTORE``) and
  :mod:`._placement` (``dump.rdb`` placement and restart for self-managed servers).
* :mod:`.health`: health checks, the rollback marker, listing and dropping rollback copies.
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

# Restore (side by side + SWAPDB, in place, file placement), health and rollback copies.
from .health import MARKER as ROLLBACK_MARKER  # noqa: E402
from .health import drop_rollback, health, list_rollbacks, max_rdb_version  # noqa: E402
from .restore import RedisRestore, RedisRestoreError  # noqa: E402

__all__ += ["ROLLBACK_MARKER", "RedisRestore", "RedisRestoreError", "drop_rollback", "health", "list_rollbacks",
            "max_rdb_version"]
