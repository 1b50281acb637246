"""The side-by-side steps of a Redis restore: reclaim, claim, cut over, roll back, abort.

A mixin of :class:`~.restore.RedisRestore`. Each destructive step goes through the journal
(:mod:`._swap` builds the transactions, :func:`~._recover.recover` replays them). The order:

1. ``prepare`` journals the spares and their markers (phase ``loading``), drops the rollback
   copies the plan chose to reclaim (step ``reclaim``), records each marker in the store's
   index and claims each spare (``MULTI`` ``DBSIZE`` + ``SET <marker> NX``), loads, verifies,
   and journals what a replay needs to finish (verified sizes, function commands): phase
   ``verified``;
2. ``cutover`` saves the previous functions, then (phase ``cutting_over``, step ``swapdb``)
   swaps every pair in one transaction; a spare that received an empty db keeps nothing
   (its marker is deleted: no rollback copy of nothing); phase ``cut_over``;
3. ``rollback`` (step ``swap_back``) swaps back, frees the spares, empties the targets that
   were empty and restores the previous functions; phase ``rolled_back``;
4. ``abort`` flushes the spares this restore still holds (only while they carry its marker);
   phase ``aborted``.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_checkpoint_provider.core.manifest import format_ts, utcnow
from airflow_checkpoint_provider.core.restore import RestoreOutcome

from ._base import _RestoreBase
from ._load import RedisRestoreError, _describe, _Refused, _transaction
from ._swap import (
    SWAP_IN_WIDTH,
    encode_blob,
    encode_commands,
    swap_back_commands,
    swap_in_commands,
)
from .copies import Copy, drop_copy, index_add, index_remove, marker_value, new_marker
from .resp import Connection, RespError, connect

log = logging.getLogger(__name__)


class _SideBySideMixin(_RestoreBase):
    """The side-by-side steps of a Redis restore (see the module docstring)."""

    # ---- prepare --------------------------------------------------------------------------------

    def _prepare_side_by_side(self) -> None:
        self._markers = {s: new_marker(self.restore_id) for _, s in self.pairs}
        markers = {str(s): m.decode() for s, m in self._markers.items()}
        self.journal.note(
            mode="side_by_side",
            checkpoint_id=self.checkpoint_id,
            restore_id=self.restore_id,
            pairs=[list(p) for p in self.pairs],
            markers=markers,
        )
        self.journal.phase("loading", spares=[s for _, s in self.pairs], markers=markers)
        try:
            with connect(self.target) as conn:
                self._reclaim_spares(conn)
                self._claim(conn)
                self._stats = self._load(conn, dict(self.pairs), replace=False)
                sizes = self._verify(conn, dict(self.pairs))
        except BaseException as exc:
            try:
                self.abort()
            except Exception:
                log.exception("Dropping the side-by-side copies on %s failed", self.target.label)
            if isinstance(exc, RedisRestoreError) or not isinstance(exc, Exception):
                raise
            raise RedisRestoreError(
                f"loading {self.checkpoint_id} into the spare dbs of {self.target.label} failed: {exc}",
                hint="the spare dbs were flushed; the serving dbs are untouched",
            ) from exc
        fns = self._function_commands(self._major())
        self.journal.note(
            verified={str(s): sizes[s] for _, s in self.pairs},
            expiring={str(s): len(self._stats[t].soon) if t in self._stats else 0 for t, s in self.pairs},
            functions=encode_commands(fns),
            functions_needed=bool(fns),
        )
        self.journal.phase("verified")

    def _reclaim_spares(self, conn: Connection) -> None:
        """Drop the rollback copies beyond the retention policy that the plan chose as spares."""
        for copy in self._reclaim:
            with self.journal.step(
                "reclaim",
                intent={
                    "db": copy.db,
                    "marker": copy.marker.decode(),
                    "restore_id": copy.restore_id,
                    "of_db": copy.of_db,
                    "checkpoint_id": copy.checkpoint_id,
                },
                undo={"none": "a rollback copy beyond the retention policy is dropped for good"},
            ):
                if not drop_copy(conn, copy):
                    raise RedisRestoreError(
                        f"db{copy.db} of {self.target.label} changed before it could be "
                        "reclaimed: refusing to load into it",
                        hint="retry: the plan picks other spare dbs",
                    )
            index_remove(self.store.fs, self.target, copy.restore_id, copy.db)
            log.info("Reclaimed %s on %s (beyond the retention policy)", copy.describe(), self.target.label)
        self._reclaim = []

    def _claim(self, conn: Connection) -> None:
        """Record each spare's marker in the store, then set it, atomically with checking the spare is empty."""
        for t, s in self.pairs:
            name = self._markers[s]
            index_add(
                self.store.fs,
                self.target,
                db=s,
                marker=name,
                restore_id=self.restore_id,
                checkpoint_id=self.checkpoint_id,
                of_db=t,
            )
            value = marker_value("loading", checkpoint_id=self.checkpoint_id, restore_id=self.restore_id, db=t, spare=s)
            res = _transaction(conn, [("SELECT", s), ("DBSIZE",), ("SET", name, value, "NX")])
            if res[2] == "OK":
                self._claimed.append(s)
            if res[1] != 0 or res[2] != "OK":
                if res[2] == "OK":
                    _transaction(conn, [("SELECT", s), ("DEL", name)])
                    self._claimed.remove(s)
                index_remove(self.store.fs, self.target, self.restore_id, s)
                raise RedisRestoreError(
                    f"spare db{s} of {self.target.label} is no longer empty ({res[1]} keys): refusing to load into it",
                    hint="retry: the plan picks other spare dbs",
                )

    # ---- cut-over -------------------------------------------------------------------------------

    def _cutover_side_by_side(self) -> RestoreOutcome:
        label = self.target.label
        fns = self._function_commands(self._major())
        with connect(self.target) as conn:
            if fns:
                prev = conn.call_nothrow("FUNCTION", "DUMP")
                if not isinstance(prev, bytes):
                    raise RedisRestoreError(
                        f"FUNCTION DUMP on {label} failed ({prev}): the previous functions "
                        "could not be saved for a rollback; nothing was changed",
                        hint="grant +function, or pass restore_functions=False",
                    )
                self._prev_functions = prev
                self.journal.note(previous_functions=encode_blob(prev))
            values = {
                s: marker_value("rollback", checkpoint_id=self.checkpoint_id, restore_id=self.restore_id, db=t, spare=s)
                for t, s in self.pairs
            }
            cmds = list(fns) + swap_in_commands(self.pairs, self._markers, values)
            self.journal.phase("cutting_over")
            pairs = [list(p) for p in self.pairs]
            with self.journal.step(
                "swapdb",
                intent={"swapdb": pairs, "functions": len(fns)},
                undo={
                    "swapdb": pairs,
                    "drop_markers_in": [t for t, _ in self.pairs],
                    "flush": [s for _, s in self.pairs],
                    "functions": "FUNCTION RESTORE <previous dump> FLUSH" if fns else None,
                },
            ):
                try:
                    res = _transaction(conn, cmds)
                except _Refused as exc:
                    raise RedisRestoreError(
                        f"the cut-over on {label} was refused: {exc}; the transaction was "
                        "discarded: nothing was changed",
                        hint="grant the ACL user the refused command (e.g. +swapdb), or use mode='in_place'",
                    ) from None
            self._functions_loaded = bool(fns) and not all(isinstance(r, RespError) for r in res[: len(fns)])
            base = len(fns)
            self._swapped = [p for i, p in enumerate(self.pairs) if res[base + SWAP_IN_WIDTH * i + 2] == "OK"]
            errors = [
                f"{_describe(c)}: {r.message}" for c, r in zip(cmds, res, strict=False) if isinstance(r, RespError)
            ]
            if not errors:
                self._drop_empty_copies(
                    conn, [p for i, p in enumerate(self.pairs) if res[base + SWAP_IN_WIDTH * i + 5] == 1]
                )
        if errors:
            try:
                self.rollback()
            except Exception as exc:
                raise RedisRestoreError(
                    f"the cut-over on {label} failed ({'; '.join(errors)}) and undoing it failed too: {exc}",
                    hint="see list_rollbacks(); restore the safety checkpoint",
                ) from exc
            raise RedisRestoreError(
                f"the cut-over on {label} failed: {'; '.join(errors)}; the dbs already swapped were swapped back",
                hint="the previous data is serving again",
            )
        self.journal.phase("cut_over")
        kept = [p for p in self.pairs if p not in self._emptied]
        log.info(
            "Cut over %s on %s: %s",
            self.checkpoint_id,
            label,
            ", ".join(
                f"db{t} (previous data in db{s})" if (t, s) in kept else f"db{t} (was empty)" for t, s in self.pairs
            ),
        )
        return RestoreOutcome(
            self.component,
            restored=[f"db{t}" for t, _ in self.pairs],
            rollback=[f"db{t} -> db{s}" for t, s in kept],
            details=self._details(fns),
        )

    def _drop_empty_copies(self, conn: Connection, pairs: list[tuple[int, int]]) -> None:
        """A spare that received an empty db holds only its marker: delete it, keep nothing."""
        if not pairs:
            return
        self.journal.note(emptied=[list(p) for p in pairs])
        cmds: list[tuple[Any, ...]] = []
        for _, s in pairs:
            cmds += [("SELECT", s), ("DEL", self._markers[s])]
        _transaction(conn, cmds)
        for _, s in pairs:
            index_remove(self.store.fs, self.target, self.restore_id, s)
        self._emptied = list(pairs)

    # ---- rollback and abort ---------------------------------------------------------------------

    def _rollback_side_by_side(self) -> None:
        back = [p for p in reversed(self._swapped) if p not in self._emptied]
        flush = [t for t, s in self._swapped if (t, s) in self._emptied]
        prev = self._prev_functions if self._functions_loaded else None
        cmds = swap_back_commands(back, flush, self._markers, prev)
        if not cmds:
            return
        self.journal.phase("rolling_back")
        with connect(self.target) as conn:
            with self.journal.step(
                "swap_back",
                intent={"swapdb": [list(p) for p in back], "flush": flush, "functions": prev is not None},
                undo={"swapdb": [list(p) for p in back], "note": "swapping again finishes the cut-over"},
            ):
                res = _transaction(conn, cmds)
        errors = [r.message for r in res if isinstance(r, RespError)]
        if errors:
            raise RedisRestoreError(
                f"rolling back on {self.target.label} failed: {'; '.join(errors)}",
                hint="see list_rollbacks(); restore the safety checkpoint",
            )
        for _, s in back:
            index_remove(self.store.fs, self.target, self.restore_id, s)
        spares = {s for _, s in self._swapped}
        self._claimed = [s for s in self._claimed if s not in spares]
        self._swapped, self._emptied, self._functions_loaded = [], [], False
        self.journal.phase("rolled_back")
        log.info("Rolled back the Redis restore of %s on %s", self.checkpoint_id, self.target.label)

    def _abort_side_by_side(self) -> None:
        swapped = {s for _, s in self._swapped}
        todo = [s for s in self._claimed if s not in swapped]
        if todo:
            self.journal.note(aborting=True)  # the decision first: a replay drops the copies, never cuts over
            of = {s: t for t, s in self.pairs}
            with connect(self.target) as conn:
                for s in todo:
                    copy = Copy(
                        db=s,
                        marker=self._markers[s],
                        state="loading",
                        of_db=of.get(s, -1),
                        checkpoint_id=self.checkpoint_id,
                        restore_id=self.restore_id,
                        created_at=format_ts(utcnow()),
                    )
                    if not drop_copy(conn, copy):
                        log.warning(
                            "db%d of %s no longer holds this restore's marker: not flushed", s, self.target.label
                        )
                    index_remove(self.store.fs, self.target, self.restore_id, s)
                    self._claimed.remove(s)
        self.journal.phase("aborted")
