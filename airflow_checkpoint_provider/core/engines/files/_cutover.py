"""The files cut-over: two journaled renames, their undo, and the replay of an interrupted one.

A verified ``<dir>.__restoring`` replaces ``<dir>`` in two steps, each journaled (intent and
undo) before it runs, each one ``rename(2)`` of a sibling (atomic, on one filesystem) followed by
a sync of the parent directory:

1. ``set_aside``: ``<dir>`` -> ``<dir>.__rollback_<id>_<time>`` (skipped when ``<dir>`` does not exist);
2. ``move_in``: ``<dir>.__restoring`` -> ``<dir>``; if it fails, ``put_back`` returns the original.

Between the two renames ``<dir>`` is absent for an instant: a reader that opens a path then gets
"no such file" rather than a mix of old and new files. Undoing a cut-over (``switch_back``, when a
later component failed) is ``move_out`` (``<dir>`` -> ``<dir>.__restoring``), ``put_back``
(rollback copy -> ``<dir>``), then the restored copy is removed.

:func:`recover` replays an interrupted restore from its journal entry: which renames took
effect is read off the directory itself (renames are atomic, and every name is the journal's).
It finishes the cut-over when the copy had verified (``entry.roll_forward``), and otherwise puts
the original back and removes the copy. A second replay finds nothing to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from typing import Any

from airflow_checkpoint_provider.core import crashpoints
from airflow_checkpoint_provider.core.engines.files._names import (
    RESTORING_SUFFIX,
    ROLLBACK_RE,
    restoring_path,
    rollback_path,
)
from airflow_checkpoint_provider.core.errors import EngineError
from airflow_checkpoint_provider.core.journal import ComponentEntry, ComponentJournal

COMPONENT = "files"
STEPS = crashpoints.declare(COMPONENT, ("set_aside", "move_in", "move_out", "put_back"))


class CutoverError(EngineError):
    """Swapping the restored directory in (or back out) failed; the message says what is in place now."""


@dataclass
class Switch:
    """One directory's cut-over, as the journal records it."""

    target: str  #: the directory being replaced (or created)
    staging: str  #: ``<target>.__restoring``: the verified copy
    rollback: str | None  #: the name the replaced directory gets; None when the target did not exist

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Switch:
        return cls(str(d["target"]), str(d["staging"]), d.get("rollback") or None)

    @classmethod
    def now(cls, target: str, checkpoint_id: str) -> Switch:
        """The cut-over of ``target`` as it would start now."""
        rollback = rollback_path(target, checkpoint_id) if os.path.lexists(target) else None
        return cls(target, restoring_path(target), rollback)


def rename(src: str, dst: str) -> None:
    """``src`` -> ``dst`` (never over an existing ``dst``), then sync their directory."""
    if os.path.lexists(dst):
        raise CutoverError(
            f"cannot rename {src} to {dst}: {dst} exists",
            hint=f"something else created {dst} meanwhile; move it away and retry",
        )
    os.rename(src, dst)
    sync_dir(os.path.dirname(dst))


def sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # some filesystems cannot sync a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def remove_copy(path: str) -> bool:
    """Remove one of the engine's own copies (only ever a ``.__restoring`` or rollback name), read-only
    directories inside it included. True if it existed."""
    if not (path.endswith(RESTORING_SUFFIX) or ROLLBACK_RE.match(os.path.basename(path))):
        raise AssertionError(f"refusing to remove {path!r}: not a copy the files engine made")
    if not os.path.lexists(path):
        return False

    def writable_and_again(func: Any, failed: str, exc_info: Any) -> None:
        for folder in (os.path.dirname(failed), failed):
            if os.path.isdir(folder) and not os.path.islink(folder):
                os.chmod(folder, stat.S_IRWXU)
        func(failed)

    shutil.rmtree(path, onerror=writable_and_again)
    return True


def _step(journal: ComponentJournal, name: str, src: str, dst: str) -> None:
    with journal.step(name, intent={"rename": [src, dst]}, undo={"rename": [dst, src]}):
        rename(src, dst)


def switch(sw: Switch, journal: ComponentJournal) -> None:
    """Put ``sw.staging`` in place of ``sw.target``, keeping the original as ``sw.rollback``."""
    if sw.rollback is not None:
        _step(journal, "set_aside", sw.target, sw.rollback)
    try:
        _step(journal, "move_in", sw.staging, sw.target)
    except BaseException as exc:
        if sw.rollback is None or os.path.lexists(sw.target):
            raise
        try:
            _step(journal, "put_back", sw.rollback, sw.target)
            state = f"{sw.target} is back in place with its original files"
        except Exception as again:
            state = (
                f"{sw.target} is missing: its original files are in {sw.rollback} ({again}); run "
                "`airflow-checkpoint recover-interrupted`, or rename it back by hand"
            )
        if isinstance(exc, OSError):
            raise CutoverError(
                f"renaming {sw.staging} to {sw.target} failed ({exc.strerror or exc}); {state}",
                hint="fix the cause (permissions of the parent directory?) and retry",
            ) from None
        raise


def switch_back(sw: Switch, journal: ComponentJournal) -> None:
    """Undo :func:`switch`: the original serves again, the restored copy is removed."""
    if sw.rollback is not None and not os.path.lexists(sw.rollback):
        raise CutoverError(
            f"{sw.target}: the rollback copy {sw.rollback} no longer exists",
            hint="restore the safety checkpoint instead",
        )
    remove_copy(sw.staging)  # a leftover in the way of the rename
    if os.path.lexists(sw.target):
        _step(journal, "move_out", sw.target, sw.staging)
    if sw.rollback is not None:
        _step(journal, "put_back", sw.rollback, sw.target)
    remove_copy(sw.staging)


def recover(entry: ComponentEntry, target_path: str) -> list[str]:
    """Finish or undo the interrupted files restore of ``entry`` (see the module docstring)."""
    path = str(entry.data.get("dir") or target_path)
    staging = restoring_path(path)
    planned = entry.data.get("switch")
    forward = entry.roll_forward
    done: list[str] = []
    if planned is not None:
        sw = Switch.from_dict(planned)
    elif forward:  # killed after the copy verified, before the cut-over began: plan it now
        sw = Switch.now(path, str(entry.data.get("checkpoint_id") or ""))
    else:
        return [f"removed the side-by-side copy {staging}"] if remove_copy(staging) else []
    here, copy = os.path.lexists(sw.target), os.path.lexists(sw.staging)
    kept = sw.rollback if sw.rollback is not None and os.path.lexists(sw.rollback) else None
    moved_in = any(s.name == "move_in" for s in entry.steps) and not copy and here
    if forward:
        if copy and here and kept is not None:
            raise CutoverError(
                f"{sw.target}, {sw.rollback} and {sw.staging} all exist: the directory appeared "
                "again while it was being restored; not replacing it",
                hint=f"{sw.staging} holds the restored files: compare them and rename by hand",
            )
        if copy and sw.rollback is None and here:
            raise CutoverError(
                f"{sw.target}: the directory appeared while it was being restored; not replacing it",
                hint=f"{sw.staging} holds the restored files: rename it by hand if wanted",
            )
        if copy:
            if sw.rollback is not None and here:
                rename(sw.target, sw.rollback)
            rename(sw.staging, sw.target)
            done.append(
                f"finished the cut-over of {sw.target} (the previous files are kept as "
                f"{sw.rollback or 'nothing: it did not exist'})"
            )
        elif kept is not None and not here:
            rename(kept, sw.target)
            done.append(
                f"{sw.target}: the side-by-side copy is gone, so the cut-over cannot be finished; "
                "the previous files are back in place"
            )
        return done
    if kept is not None:
        if here:
            remove_copy(sw.staging)
            rename(sw.target, sw.staging)
        rename(kept, sw.target)
        done.append(f"put the previous {sw.target} back")
    elif sw.rollback is None and moved_in:
        rename(sw.target, sw.staging)
        done.append(f"removed {sw.target}, which the interrupted restore had created")
    if remove_copy(sw.staging):
        done.append(f"removed the side-by-side copy {sw.staging}")
    return done
