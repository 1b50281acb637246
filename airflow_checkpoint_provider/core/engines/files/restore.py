"""``FilesRestore``: a directory tree as one component of a checkpoint restore, side by side.

1. :meth:`~FilesRestore.plan`: the tree to restore (the checkpoint's only one, or the one captured
   from this directory, or ``source``), and what forbids it: a target that is a link, a mount
   point or not a directory, a parent the worker cannot write, too little free space;
2. :meth:`~FilesRestore.prepare` (journal phases ``loading`` -> ``verified``): extract into
   ``<dir>.__restoring`` (:mod:`._extract`), then walk the copy beside the listing: every entry's
   type, mode, mtime, size, sha256 and link target, the root's mode and mtime, and the tree's
   counts and Merkle root must be the checkpoint's;
3. :meth:`~FilesRestore.cutover` (``cutting_over`` -> ``cut_over``): the two journaled renames of
   :mod:`._cutover`, keeping ``<dir>.__rollback_<id>_<time>``;
4. :meth:`~FilesRestore.rollback` undoes a completed cut-over (``rolled_back``); :meth:`abort`
   removes the copy (``aborted``).

The orchestration sets :attr:`journal` before :meth:`prepare`; an interrupted restore is finished
or undone by :func:`._cutover.recover`.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import asdict
from typing import Any

from airflow_checkpoint_provider.core.engines.files import _cutover as X
from airflow_checkpoint_provider.core.engines.files._extract import extract, iter_listing
from airflow_checkpoint_provider.core.engines.files._names import (
    MAX_NAME_BYTES,
    ROLLBACK_SUFFIX_BYTES,
    restoring_path,
)
from airflow_checkpoint_provider.core.engines.files._target import FilesTarget
from airflow_checkpoint_provider.core.engines.files.capture import KIND_LIST, KIND_TREE, STORE, TREE_FORMAT, capture
from airflow_checkpoint_provider.core.engines.files.fingerprint import compare_tree
from airflow_checkpoint_provider.core.engines.files.health import health as files_health
from airflow_checkpoint_provider.core.errors import EngineError
from airflow_checkpoint_provider.core.journal import ComponentJournal, NullJournal
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.restore import HealthCheck, PlanItem, RestoreOutcome
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.core.store import Store

log = logging.getLogger(__name__)

COMPONENT = STORE
FINGERPRINTS = ("files", "dirs", "symlinks", "bytes", "merkle_root")


class VerifyError(EngineError):
    """The extracted copy is not the checkpoint's tree; it was removed and nothing was replaced."""


def select_tree(
    artifacts: list[Artifact], path: str, source: str | None
) -> tuple[Artifact | None, Artifact | None, list[str]]:
    """``(tree, listing, problems)``: the tree to restore into ``path`` and its listing."""
    trees = [a for a in artifacts if a.store == STORE and a.kind == KIND_TREE]
    sources = ", ".join(sorted(str(a.meta.get("path")) for a in trees)) or "none"
    if not trees:
        return (
            None,
            None,
            [
                "the checkpoint holds no directory tree HINT: pick a checkpoint that captured files, or "
                "leave files out of the components"
            ],
        )
    if source is not None:
        chosen = [a for a in trees if a.meta.get("path") == source]
        if not chosen:
            return (
                None,
                None,
                [
                    f"the checkpoint holds no tree captured from {source!r}; it holds: {sources} "
                    "HINT: name one of those as source"
                ],
            )
    else:
        chosen = [a for a in trees if a.meta.get("path") == path] or trees
        if len(chosen) > 1:
            return (
                None,
                None,
                [
                    f"the checkpoint holds several trees ({sources}) and none from {path} "
                    "HINT: name the one to restore as source"
                ],
            )
    tree = chosen[0]
    if tree.meta.get("format") != TREE_FORMAT:
        return (
            None,
            None,
            [
                f"tree {tree.name} has format {tree.meta.get('format')!r}; this version reads format "
                f"{TREE_FORMAT} HINT: upgrade airflow-checkpoint-provider"
            ],
        )
    listing = next((a for a in artifacts if a.kind == KIND_LIST and a.name == tree.meta.get("list")), None)
    if listing is None:
        return (
            None,
            None,
            [
                f"tree {tree.name} has no listing (meta.list {tree.meta.get('list')!r}) HINT: the "
                "manifest is not one this provider wrote; verify the checkpoint"
            ],
        )
    return tree, listing, []


class FilesRestore:
    component = COMPONENT

    def __init__(
        self,
        target: FilesTarget,
        store: Store,
        checkpoint_id: str,
        artifacts: list[Artifact],
        *,
        source: str | None = None,
        mode: str = "side_by_side",
        **options: Any,
    ) -> None:
        """``source``: the captured path of the tree to restore, when the checkpoint holds several.
        ``mode`` is always side by side (an in-place restore of a directory gains nothing)."""
        self.target, self.store, self.checkpoint_id = target, store, checkpoint_id
        self.path, self.staging = target.path, restoring_path(target.path)
        self.tree, self.listing, self._problems = select_tree(artifacts, target.path, source)
        self.journal: ComponentJournal = NullJournal(COMPONENT)
        self._switch: X.Switch | None = None
        self.outcome: RestoreOutcome | None = None

    # ---- 1. plan --------------------------------------------------------------------------------

    def plan(self) -> tuple[list[PlanItem], list[str]]:
        if self.tree is None:
            return [], list(self._problems)
        exists = os.path.lexists(self.path)
        item = PlanItem(
            COMPONENT,
            source=str(self.tree.meta.get("path")),
            target=self.path,
            action="replace" if exists else "create",
            staging_name=self.staging,
        )
        fp = self.tree.fingerprints
        item.notes.append(
            f"{fp.get('files')} files, {fp.get('dirs')} directories, {fp.get('bytes')} bytes"
            + ("; the replaced directory is kept as a rollback copy beside it" if exists else "")
        )
        if os.path.lexists(self.staging):
            item.conflicts.append(f"{self.staging} exists (left by an earlier restore): it is removed first")
        return [item], self._target_problems(exists)

    def _target_problems(self, exists: bool) -> list[str]:
        path, parent = self.path, os.path.dirname(self.path)
        if exists:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                return [
                    f"{path} is a symbolic link (to {os.readlink(path)!r}) HINT: name the real directory in the "
                    "connection: the cut-over renames the directory, which would replace the link"
                ]
            if not stat.S_ISDIR(st.st_mode):
                return [f"{path} exists and is not a directory HINT: move it away, or restore into another path"]
            if os.path.ismount(path):
                return [
                    f"{path} is a mount point, which cannot be renamed HINT: point the connection at a "
                    "directory inside the volume (e.g. its data/ folder): its copies must sit beside it"
                ]
        if not os.path.isdir(parent):
            return [f"the parent directory {parent} of {path} does not exist HINT: create it first"]
        if not os.access(parent, os.W_OK | os.X_OK):
            return [
                f"the worker cannot write {parent}, where the side-by-side copy and the rollback copy of "
                f"{path} go HINT: give the worker's user write access to {parent}"
            ]
        if len(os.path.basename(path).encode()) + ROLLBACK_SUFFIX_BYTES > MAX_NAME_BYTES:
            return [
                f"the name of {path} is too long for its rollback copy's name (at most "
                f"{MAX_NAME_BYTES - ROLLBACK_SUFFIX_BYTES} bytes) HINT: restore into a directory with a "
                "shorter name"
            ]
        need = int((self.tree.fingerprints if self.tree else {}).get("bytes") or 0)
        free = shutil.disk_usage(parent).free
        if free < need:
            return [
                f"{parent} has {free} bytes free; the copy of the tree needs {need} HINT: free space there "
                "(old rollback copies: `airflow-checkpoint rollbacks list`)"
            ]
        return []

    def safety_capture(self, staging: Staging) -> list[Artifact]:
        """Capture the directory that would be replaced (nothing when it does not exist)."""
        if not os.path.isdir(self.path) or self.tree is None:
            return []
        return capture(self.target, staging, consistency="detect")

    # ---- 2. load side by side and verify --------------------------------------------------------------

    def prepare(self) -> None:
        items, problems = self.plan()
        if problems or self.tree is None or self.listing is None:
            raise EngineError(
                f"files restore of {self.checkpoint_id} into {self.path} refused: " + "; ".join(problems),
                hint="see the restore plan",
            )
        self.journal.note(dir=self.path, checkpoint_id=self.checkpoint_id)
        self.journal.phase("loading", staging=[self.staging])
        try:
            X.remove_copy(self.staging)
            os.mkdir(self.staging, 0o700)
            count = extract(self.store, self.checkpoint_id, self.tree, self.listing, self.staging)
            self._verify()
        except BaseException:
            self._remove_staging()
            raise
        log.info("Restored %s entries into %s and verified them", count, self.staging)
        self.journal.phase("verified")

    def _verify(self) -> None:
        assert self.tree is not None and self.listing is not None
        tally, diffs = compare_tree(self.staging, iter_listing(self.store, self.checkpoint_id, self.listing))
        got, want = tally.fingerprints(), self.tree.fingerprints
        diffs += [
            f"{k} is {got[k]!r}, the checkpoint says {want.get(k)!r}" for k in FINGERPRINTS if got[k] != want.get(k)
        ]
        root, st = self.tree.meta.get("root") or {}, os.lstat(self.staging)
        if root.get("mode") not in (None, stat.S_IMODE(st.st_mode)) or root.get("mtime_ns") not in (
            None,
            st.st_mtime_ns,
        ):
            diffs.append(
                f"the root directory has mode {oct(stat.S_IMODE(st.st_mode))} and mtime {st.st_mtime_ns}, the "
                f"checkpoint says {oct(int(root.get('mode') or 0))} and {root.get('mtime_ns')}"
            )
        if diffs:
            raise VerifyError(
                f"the restored copy {self.staging} differs from checkpoint {self.checkpoint_id}: "
                + "; ".join(diffs[:20]),
                hint="nothing was replaced; the copy was removed. Verify the checkpoint, check the "
                "filesystem (does it keep modes and nanosecond mtimes?), or restore another one",
            )

    # ---- 3. cut over ----------------------------------------------------------------------------

    def cutover(self) -> RestoreOutcome:
        if self.tree is None:
            self.outcome = RestoreOutcome(component=COMPONENT, details={"note": "nothing to restore"})
            return self.outcome
        sw = X.Switch.now(self.path, self.checkpoint_id)
        self.journal.note(switch=asdict(sw))
        self.journal.phase("cutting_over", rollback=[sw.rollback] if sw.rollback else [])
        X.switch(sw, self.journal)
        self._switch = sw
        self.journal.phase("cut_over")
        log.info("Cut over %s (the previous files are kept as %s)", self.path, sw.rollback or "nothing: none existed")
        self.outcome = RestoreOutcome(
            component=COMPONENT,
            restored=[self.path],
            rollback=[sw.rollback] if sw.rollback else [],
            details={"fingerprints": dict(self.tree.fingerprints), "source": self.tree.meta.get("path")},
        )
        return self.outcome

    def rollback(self) -> None:
        """Undo the completed cut-over: the replaced directory is back, the restored one removed."""
        if self._switch is None:
            return
        self.journal.phase("rolling_back")
        X.switch_back(self._switch, self.journal)
        self._switch = None
        self.journal.phase("rolled_back")

    def abort(self) -> None:
        """Remove the side-by-side copy :meth:`prepare` made (idempotent)."""
        if self._switch is not None:
            return
        self._remove_staging()
        self.journal.phase("aborted")

    def _remove_staging(self) -> None:
        try:
            X.remove_copy(self.staging)
        except OSError as exc:
            raise EngineError(
                f"could not remove the side-by-side copy {self.staging}: {exc.strerror or exc}",
                hint="remove it by hand, or let the next capture's cleanup remove it",
            ) from None

    def health(self, tolerance: float) -> list[HealthCheck]:
        expected = dict(self.tree.fingerprints) if self.tree is not None else {}
        return files_health(self.target, expected, tolerance=tolerance)
