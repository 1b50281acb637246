"""The files engine: checkpoint and restore a directory tree (an uploads volume, a config directory).

Public API (the registry's record is :data:`.engine.ENGINE`):

* :func:`capture` ``(target, staging, consistency="auto", quiesce_hook=None, retries=3, ...)``:
  stream the tree into staging as a pax tar (kind ``files/tar``) and a listing with one sha256 per
  file (kind ``files/list``), in one walk and constant memory. ``consistency="detect"`` re-reads a
  file that changed mid-read (size, mtime, ctime, inode, mode before and after); ``"quiesce"``
  calls a hook (``"package.module:function"``, never from a run's conf) around the walk;
* :func:`fingerprint` ``(target)``: files, directories, links, bytes and the Merkle root, now;
* :class:`FilesRestore`: side by side into ``<dir>.__restoring``, every entry verified against
  the listing, then two journaled renames keeping ``<dir>.__rollback_<id>_<time>``;
* :func:`health` ``(target, expected, tolerance)``: the live tree against the fingerprints;
* :func:`recover` ``(entry, path)``: finish or undo an interrupted cut-over from its journal entry;
* :class:`FilesTarget`: the directory, from a connection of type ``fs`` whose extra holds ``path``.

Refused, naming the entry and why (the archive reader's path rules, :mod:`._tree`): absolute paths,
``..``, devices, FIFOs, sockets, hard links, absolute symbolic links and links out of the tree,
duplicates, names that are not UTF-8. The format is specified in docs/FORMAT.md.
"""

from airflow_checkpoint_provider.core.engines.files._cutover import STEPS, CutoverError, recover
from airflow_checkpoint_provider.core.engines.files._names import is_own_copy, restoring_path, rollback_path
from airflow_checkpoint_provider.core.engines.files._target import FilesTarget
from airflow_checkpoint_provider.core.engines.files.capture import (
    CONSISTENCY,
    KIND_LIST,
    KIND_TREE,
    STORE,
    artifact_names,
    capture,
)
from airflow_checkpoint_provider.core.engines.files.fingerprint import fingerprint
from airflow_checkpoint_provider.core.engines.files.health import health
from airflow_checkpoint_provider.core.engines.files.restore import FilesRestore, VerifyError

__all__ = [
    "CONSISTENCY",
    "KIND_LIST",
    "KIND_TREE",
    "STEPS",
    "STORE",
    "CutoverError",
    "FilesRestore",
    "FilesTarget",
    "VerifyError",
    "artifact_names",
    "capture",
    "fingerprint",
    "health",
    "is_own_copy",
    "recover",
    "restoring_path",
    "rollback_path",
]
