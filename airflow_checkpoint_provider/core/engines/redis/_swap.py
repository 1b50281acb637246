"""The journaled steps of a side-by-side Redis restore, shared by the restore and its replay.

Every destructive step is declared once here (:data:`STEPS`; crash points
``redis.<step>.intent`` / ``.applied``) and built by one function, so that
:class:`~.restore.RedisRestore` and :func:`~._recover.recover` send exactly the same
transactions:

* ``reclaim``: ``FLUSHDB`` of a rollback copy beyond the retention policy, to make room;
* ``swapdb``: the cut-over, one ``MULTI``/``EXEC``: the checkpoint's functions, then per pair
  ``SELECT s``, ``DEL <marker>``, ``SWAPDB t s``, ``SELECT s``, ``SET <marker> <rollback>``,
  ``DBSIZE`` (1: the replaced db was empty, so there is no rollback copy to keep);
* ``swap_back``: the rollback, one ``MULTI``/``EXEC``: per pair ``SWAPDB t s``, ``SELECT t``,
  ``DEL <marker>``, ``SELECT s``, ``FLUSHDB``; ``FLUSHDB`` of the targets that were empty
  before; ``FUNCTION RESTORE <previous dump> FLUSH``;
* ``load_in_place``: an in-place restore (no rollback copy; the safety checkpoint is the way back);
* ``place_file``, ``restart``, ``unplace_file``: file placement (:mod:`._placement`): the renames
  of ``dump.rdb``, the restart, and the renames back plus restart of a rollback.

Function commands go into the journal (base64) when they are small enough
(:data:`MAX_JOURNALED_FUNCTIONS`), so that a replay can finish a cut-over.
"""

from __future__ import annotations

import base64
from typing import Any

from airflow_checkpoint_provider.core import crashpoints

from .health import COMPONENT

STEPS = crashpoints.declare(
    COMPONENT, ("reclaim", "swapdb", "swap_back", "load_in_place", "place_file", "restart", "unplace_file")
)
#: the cut-over's function commands (library code or a FUNCTION DUMP) are journaled up to this size
MAX_JOURNALED_FUNCTIONS = 1 << 20
SWAP_IN_WIDTH = 6  # commands per pair in swap_in_commands


def swap_in_commands(
    pairs: list[tuple[int, int]], markers: dict[int, bytes], values: dict[int, bytes]
) -> list[tuple[Any, ...]]:
    """Per (target, spare): drop the loading marker, ``SWAPDB``, mark the spare a rollback copy, count it."""
    cmds: list[tuple[Any, ...]] = []
    for t, s in pairs:
        cmds += [
            ("SELECT", s),
            ("DEL", markers[s]),
            ("SWAPDB", t, s),
            ("SELECT", s),
            ("SET", markers[s], values[s]),
            ("DBSIZE",),
        ]
    return cmds


def swap_back_commands(
    pairs: list[tuple[int, int]], flush: list[int], markers: dict[int, bytes], previous_functions: bytes | None
) -> list[tuple[Any, ...]]:
    """Swap each pair back and free its spare; empty the targets that were empty; restore the functions."""
    cmds: list[tuple[Any, ...]] = []
    for t, s in pairs:
        cmds += [("SWAPDB", t, s), ("SELECT", t), ("DEL", markers[s]), ("SELECT", s), ("FLUSHDB", "ASYNC")]
    for t in flush:
        cmds += [("SELECT", t), ("FLUSHDB", "ASYNC")]
    if previous_functions is not None:
        cmds.append(("FUNCTION", "RESTORE", previous_functions, "FLUSH"))
    return cmds


def encode_commands(cmds: list[tuple[Any, ...]]) -> list[list[Any]] | None:
    """Commands as JSON (bytes as ``{"b64": ...}``); None when they are too big for the journal."""
    if sum(len(a) for c in cmds for a in c if isinstance(a, bytes)) > MAX_JOURNALED_FUNCTIONS:
        return None
    return [[{"b64": base64.b64encode(a).decode()} if isinstance(a, bytes) else a for a in c] for c in cmds]


def decode_commands(data: list[list[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(base64.b64decode(a["b64"]) if isinstance(a, dict) else a for a in c) for c in data]


def encode_blob(data: bytes | None) -> str | None:
    if data is None or len(data) > MAX_JOURNALED_FUNCTIONS:
        return None
    return base64.b64encode(data).decode()


def decode_blob(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text else None
