"""Finish or undo a Redis restore that was killed, from its journal entry: :func:`recover`.

The policy is the journal's (:mod:`~airflow_checkpoint_provider.core.journal`): **roll forward**
when the replacement had verified (phase ``verified`` or later) and is still intact, otherwise
**roll back**. A rollback or an abort that had begun (a ``swap_back`` or ``unplace_file`` step,
or the ``aborting`` note) is finished: the restore was undoing itself. Whether a pending step took effect is read off the live server:

* side by side: each spare's marker, which the cut-over's transaction changes atomically with
  the ``SWAPDB``: ``loading`` means not swapped, ``rollback`` swapped, none: never claimed or
  already dropped (or, for a pair the journal lists as ``emptied``, swapped with an empty db);
  a spare is *intact* when its key count is the verified one (less keys due to expire);
* in place: nothing tells how far the load went, so an interrupted load is reported with what
  to restore (the one case :func:`recover` raises);
* file placement: the server's ``run_id`` (a restart changes it) and the files present.

Every path is idempotent and leaves the serving dbs holding either the original or the
checkpoint's data, with nothing claimed: no ``loading`` copy, no stray marker, no temporary file.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import CheckpointError, EngineError
from airflow_checkpoint_provider.core.journal import ComponentEntry

from ._load import _Refused, _transaction
from ._swap import (
    SWAP_IN_WIDTH,
    decode_blob,
    decode_commands,
    swap_back_commands,
    swap_in_commands,
)
from .copies import PREFIX, Copy, drop_copy, index_remove, marker_value, parse_marker
from .health import db_sizes
from .resp import Connection, RespError, connect, encode_command, info

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.store import Store

log = logging.getLogger(__name__)


def recover(target: RedisTarget, entry: ComponentEntry, *, store: Store | None = None) -> list[str]:
    """Finish or undo the interrupted Redis restore of ``entry`` on ``target``; see the module docstring.

    Returns what it did, one line per action. ``store``: also remove the copies' records from
    the store's index (they are harmless if left: :func:`~.copies.find_leftovers` reports them).
    """
    mode = entry.data.get("mode")
    if mode == "in_place":
        return _in_place(target, entry)
    if mode == "file_placement":
        return _placement(target, entry)
    return _side_by_side(target, entry, store)


# --------------------------------------------------------------------------- side by side


def _side_by_side(target: RedisTarget, entry: ComponentEntry, store: Store | None) -> list[str]:
    data, label = entry.data, target.label
    try:
        pairs = [(int(t), int(s)) for t, s in data.get("pairs") or []]
        markers = {int(s): str(m).encode() for s, m in (data.get("markers") or {}).items()}
    except (TypeError, ValueError):
        pairs, markers = [], {}
    if not pairs or any(s not in markers or not markers[s].startswith(PREFIX) for _, s in pairs):
        if entry.steps:
            raise CheckpointError(
                f"the journal entry of the Redis restore on {label} names no spare dbs but has "
                f"steps {[s.name for s in entry.steps]}",
                hint="check the server's dbs by hand (list_rollbacks), then remove the journal",
            )
        return [f"{label}: the restore was interrupted before it claimed any spare db: nothing to do"]
    rid = str(data.get("restore_id") or "")
    with connect(target) as conn:
        states = _states(conn, pairs, markers, rid)
        rolling_back = bool(data.get("aborting")) or any(s.name == "swap_back" for s in entry.steps)
        lines: list[str] | None = None
        if entry.roll_forward and not rolling_back:
            lines = _forward(conn, entry, pairs, markers, states)
        if lines is None:
            lines = _back(conn, entry, pairs, markers, states, rolling_back)
    fs = store.fs if store is not None else None
    with connect(target) as conn:
        left = _states(conn, pairs, markers, rid)
    for _, s in pairs:
        if left[s] is None:
            index_remove(fs, target, rid, s)
    for line in lines:
        log.info("Recovering the Redis restore %s on %s: %s", rid, label, line)
    return [f"{label}: {line}" for line in lines]


def _states(
    conn: Connection, pairs: list[tuple[int, int]], markers: dict[int, bytes], rid: str
) -> dict[int, str | None]:
    """Per spare: its marker's state (``loading`` / ``rollback``), None without this restore's marker."""
    conn.sendall(
        b"".join(encode_command("SELECT", s) + encode_command("GET", markers[s]) for _, s in pairs)
        + encode_command("SELECT", 0)
    )
    out: dict[int, str | None] = {}
    for _, s in pairs:
        selected, value = conn.read_reply(), conn.read_reply()
        if isinstance(selected, RespError):
            raise EngineError(f"{conn.target.label}: SELECT {s} failed: {selected.message}")
        copy = parse_marker(markers[s], value, s)
        out[s] = copy.state if copy is not None and copy.restore_id == rid else None
    conn.read_reply()
    return out


def _forward(
    conn: Connection,
    entry: ComponentEntry,
    pairs: list[tuple[int, int]],
    markers: dict[int, bytes],
    states: dict[int, str | None],
) -> list[str] | None:
    """Finish the cut-over; None when it cannot be finished (then the caller rolls back)."""
    data, lines = entry.data, []
    cid, rid = str(data.get("checkpoint_id")), str(data.get("restore_id"))
    todo = [(t, s) for t, s in pairs if states[s] == "loading"]
    if todo:
        verified, expiring = data.get("verified") or {}, data.get("expiring") or {}
        sizes = db_sizes(conn, [s for _, s in todo], markers)
        spoiled = [
            s
            for _, s in todo
            if str(s) not in verified
            or not int(verified[str(s)]) - int(expiring.get(str(s), 0)) <= sizes[s] <= int(verified[str(s)])
        ]
        fns = decode_commands(data["functions"]) if data.get("functions") else []
        if spoiled or (data.get("functions_needed") and not fns):
            why = (
                f"db{', db'.join(map(str, spoiled))} no longer hold{'s' if len(spoiled) == 1 else ''} the verified copy"
                if spoiled
                else "the checkpoint's functions were too big for the journal"
            )
            log.warning("Cannot finish the cut-over of %s on %s (%s): rolling back", cid, conn.target.label, why)
            return None
        values = {s: marker_value("rollback", checkpoint_id=cid, restore_id=rid, db=t, spare=s) for t, s in todo}
        try:
            res = _transaction(conn, list(fns) + swap_in_commands(todo, markers, values))
        except _Refused as exc:  # queued commands refused (ACL): nothing changed
            log.warning("Cannot finish the cut-over of %s on %s (%s): rolling back", cid, conn.target.label, exc)
            return None
        errors = [r.message for r in res if isinstance(r, RespError)]
        if errors:
            raise CheckpointError(
                f"finishing the cut-over of {cid} on {conn.target.label} failed: {'; '.join(errors)}",
                hint="see list_rollbacks(); restore the safety checkpoint",
            )
        base = len(fns)
        for i, (t, s) in enumerate(todo):
            lines.append(f"finished the cut-over: db{t} serves checkpoint {cid} (the previous data is in db{s})")
            states[s] = "rollback"
            if res[base + SWAP_IN_WIDTH * i + 5] == 1:
                states[s] = "empty"
    for t, s in pairs:
        if states[s] == "rollback" and (t, s) not in todo:
            lines.append(f"db{t} had been cut over to checkpoint {cid} (the previous data is in db{s})")
    emptied = _drop_empty_rollbacks(conn, [(t, s) for t, s in pairs if states[s] in ("rollback", "empty")], markers)
    lines += [f"db{t} was empty before the restore: no rollback copy kept (db{s} is free)" for t, s in emptied]
    return lines


def _drop_empty_rollbacks(
    conn: Connection, pairs: list[tuple[int, int]], markers: dict[int, bytes]
) -> list[tuple[int, int]]:
    """Delete the marker of each rollback copy that holds nothing else."""
    if not pairs:
        return []
    sizes = db_sizes(conn, [s for _, s in pairs])
    empty = [(t, s) for t, s in pairs if sizes[s] == 1]
    if empty:
        cmds: list[tuple[Any, ...]] = []
        for _, s in empty:
            cmds += [("SELECT", s), ("DEL", markers[s])]
        _transaction(conn, cmds)
    return empty


def _back(
    conn: Connection,
    entry: ComponentEntry,
    pairs: list[tuple[int, int]],
    markers: dict[int, bytes],
    states: dict[int, str | None],
    rolling_back: bool,
) -> list[str]:
    """Undo: swap back what was swapped, empty the targets that were empty, drop the side-by-side copies."""
    data, lines = entry.data, []
    cid, rid = str(data.get("checkpoint_id")), str(data.get("restore_id"))
    swapped = [(t, s) for t, s in pairs if states[s] == "rollback"]
    emptied = [(int(t), int(s)) for t, s in data.get("emptied") or []]
    cut_over = bool(swapped) or (rolling_back and bool(emptied) and not any(states.values()))
    if cut_over:
        prev = decode_blob(data.get("previous_functions"))
        functions = any(s.name == "swapdb" and s.intent.get("functions") for s in entry.steps)
        if functions and prev is None:
            lines.append(
                "the previous functions were too big for the journal and were not put back: restore "
                "them from the safety checkpoint"
            )
        flush = [t for t, _ in emptied]
        res = _transaction(conn, swap_back_commands(swapped, flush, markers, prev if functions else None))
        errors = [r.message for r in res if isinstance(r, RespError)]
        if errors:
            raise CheckpointError(
                f"undoing the cut-over of {cid} on {conn.target.label} failed: {'; '.join(errors)}",
                hint="see list_rollbacks(); restore the safety checkpoint",
            )
        lines += [
            f"swapped db{t} back: the data from before the restore serves again (db{s} freed)" for t, s in swapped
        ]
        lines += [f"emptied db{t}: it was empty before the restore" for t in flush]
        if functions and prev is not None:
            lines.append("put the previous functions back")
    for t, s in pairs:
        if states[s] == "loading":
            copy = Copy(
                db=s, marker=markers[s], state="loading", of_db=t, checkpoint_id=cid, restore_id=rid, created_at=""
            )
            if drop_copy(conn, copy):
                lines.append(
                    f"dropped the side-by-side copy of db{t} in db{s}; db{t} still serves the data from "
                    "before the restore"
                )
            else:
                lines.append(f"left db{s}: it changed while being dropped")
    if not lines:
        lines.append("nothing was left to undo: the data from before the restore serves")
    return lines


# --------------------------------------------------------------------------- in place


def _in_place(target: RedisTarget, entry: ComponentEntry) -> list[str]:
    cid = entry.data.get("checkpoint_id")
    if entry.done("load_in_place") or entry.phase == "cut_over":
        return [f"{target.label}: the in-place restore of {cid} had finished"]
    if any(s.name == "load_in_place" for s in entry.steps):
        dbs = ", ".join(f"db{d}" for d in entry.data.get("dbs") or [])
        raise CheckpointError(
            f"the in-place restore of {cid} into {target.label} was interrupted: {dbs} may be "
            "partly restored, and an in-place restore keeps no copy to go back to",
            hint=f"restore checkpoint {cid} again (it is idempotent), or the safety checkpoint taken before it",
        )
    return [f"{target.label}: the in-place restore of {cid} was interrupted before it changed anything"]


# --------------------------------------------------------------------------- file placement


def _placement(target: RedisTarget, entry: ComponentEntry) -> list[str]:
    data, label = entry.data, target.label
    folder, name = Path(str(data.get("dir") or "")), str(data.get("name") or "")
    tmp, backup = data.get("tmp"), data.get("backup")
    for n, pattern in (
        (name, r"[\w.-]+"),
        (tmp, re.escape(name) + r"\.tmp-[0-9a-f]{8}"),
        (backup, re.escape(name) + r"\.rollback-\d{8}T\d{6}Z"),
    ):
        if n is not None and not re.fullmatch(pattern, str(n)):
            raise CheckpointError(
                f"the journal of the file-placement restore on {label} names the file {n!r}",
                hint="it was not written by this provider; check the server's files by hand",
            )
    if not folder.is_absolute():
        raise CheckpointError(
            f"the journal of the file-placement restore on {label} names the folder {str(folder)!r}",
            hint="check the server's files by hand",
        )
    final = folder / name
    lines = []
    steps = {s.name for s in entry.steps}
    started = "place_file" in steps
    if not started:  # nothing was renamed: drop the written copy
        if tmp and (folder / tmp).exists():
            (folder / tmp).unlink()
            lines.append(f"removed the unused copy {folder / tmp}")
        return [f"{label}: {line}" for line in lines or ["nothing was placed: nothing to do"]]
    live = _run_id(target)
    if live is None:
        raise CheckpointError(
            f"{label} does not answer after an interrupted file-placement restore",
            hint=f"start it: it loads {final}, then run the recovery again",
        )
    if "unplace_file" in steps:  # a rollback had begun: finish it
        lines += _put_back(folder, final, tmp, backup)
        if live == data.get("run_id_unplace"):
            raise CheckpointError(
                f"{label} still serves the checkpoint's data of a file-placement restore whose "
                "rollback was interrupted",
                hint=f"restart it (it loads the original {final} now), then run the recovery again",
            )
        lines.append("the rollback had finished: the data from before the restore serves")
    elif live == data.get("run_id"):  # not restarted since the cut-over began: the original still serves
        lines += _put_back(folder, final, tmp, backup)
        lines.append("the server was not restarted with the checkpoint's file: the data from before the restore serves")
    else:
        if tmp and (folder / tmp).exists():
            (folder / tmp).unlink()
        lines.append(
            "the server was restarted with the checkpoint's file: the restore had taken effect"
            + (f" (the previous file is {folder / backup})" if backup else "")
        )
    return [f"{label}: {line}" for line in lines]


def _put_back(folder: Path, final: Path, tmp: str | None, backup: str | None) -> list[str]:
    """Put the original ``dump.rdb`` back (or remove the placed one when there was none)."""
    lines = []
    if backup and (folder / backup).exists():
        os.replace(folder / backup, final)
        lines.append(f"put the previous file back as {final}")
    elif not backup and final.exists() and not (tmp and (folder / tmp).exists()):
        final.unlink()
        lines.append(f"removed the placed {final} (there was none before)")
    if tmp and (folder / tmp).exists():
        (folder / tmp).unlink()
        lines.append(f"removed the unused copy {folder / tmp}")
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return lines


def _run_id(target: RedisTarget) -> str | None:
    try:
        with connect(target, timeout=5.0) as conn:
            return info(conn, "server").get("run_id")
    except EngineError:
        return None
