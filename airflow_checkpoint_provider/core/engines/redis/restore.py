"""Redis restore: load a checkpoint into spare logical dbs, verify, then ``SWAPDB`` (a ComponentRestore).

``RedisRestore(target, store, checkpoint_id, artifacts, mode=..., dbs=..., ...)``; the orchestration
(:mod:`~airflow_checkpoint_provider.core.recovery`) calls ``plan``, ``safety_capture``, ``prepare``,
``cutover``, then ``health`` (``abort``/``rollback`` on failure). Three strategies:

**Side by side** (default). ``plan`` checks that the checkpoint's RDB version is one the server's
``RESTORE`` accepts (:func:`~.health.max_rdb_version`), that the server is not in cluster mode,
that there are enough *empty* logical dbs besides the targets (the highest ones, or
``spare_db, spare_db+1, ...``; when they run short, rollback copies beyond the retention
policy, ``rollback_keep`` per db and none older than ``rollback_max_age``, are counted in and
named in the plan), and with ``ACL DRYRUN`` (else a no-op ``SWAPDB s s``) that the user may run
``SWAPDB``; it counts, per target db that holds keys, the keys the checkpoint will replace and
those that will disappear (``plan_counts``: ``exact`` looks every key up with ``EXISTS`` batches
over a full pass of the artifact; ``estimate`` looks up a sample, the first 5,000 keys of each
such db in the artifact, and scales; ``auto``, the default, counts exactly up to 100k keys in
the checkpoint and estimates above; each conflict line says which it did). ``prepare`` (:mod:`._side`)
drops the reclaimed copies, claims each spare atomically (``MULTI`` ``DBSIZE`` + ``SET <marker>
NX``, a random marker name recorded in the store and the journal, :mod:`.copies`: a db that is
not empty is never loaded into), streams the artifact (``redis/rdb`` through a specialised walk
of :class:`~.rdb.RdbParser`, or ``redis/logical``) into pipelined ``RESTORE key <abs ms> payload
ABSTTL`` (keys already expired are skipped and counted; every other key is restored, whatever
its name), checking every reply, then verifies each spare: ``DBSIZE`` equals the keys loaded
(less those that expired meanwhile), the loaded count equals the manifest's fingerprint, and a
sample of keys has the right ``TYPE`` and exact ``PEXPIRETIME``. Any failure flushes exactly the
spares it claimed. ``cutover`` runs one ``MULTI``/``EXEC``: the checkpoint's functions
(``FUNCTION LOAD REPLACE <code>`` for RDB records, ``FUNCTION RESTORE <payload> REPLACE`` for a
logical capture; the previous ``FUNCTION DUMP`` is kept), then per db ``SWAPDB <target> <spare>``
with the marker turned into a ``rollback`` marker in the spare, which now holds the previous
data: the rollback copy (``"db0 -> db15"``, :func:`~.copies.list_rollbacks`,
:func:`~.copies.drop_rollback`, :func:`~.copies.prune_rollbacks`). A db that was empty keeps no
rollback copy: nothing is left behind. A refused command (ACL) aborts the whole transaction:
nothing changed. ``rollback`` swaps back, drops the marker, frees the spare and restores the
previous functions.

**Journal.** The orchestration sets ``journal`` (a
:class:`~airflow_checkpoint_provider.core.journal.ComponentJournal`) before ``prepare``; every
destructive step (``reclaim``, ``swapdb``, ``swap_back``, ``load_in_place``, :mod:`._swap`) is
journaled with its intent and undo, and :func:`~._recover.recover` finishes or undoes a restore
that was killed at any point.

**In place** (``mode="in_place"``; for servers without spare dbs): nothing happens before the
cut-over; ``cutover`` loads straight into the targets with ``RESTORE ... REPLACE``, then
``UNLINK``s the keys the checkpoint does not hold (a set of 64-bit key hashes per db, ~60 MB per
million keys) and verifies. There is no rollback copy: the orchestration's safety checkpoint
is the way back, and ``rollback`` says so.

**File placement** (``placement_dir`` and ``restart_command``, RDB artifacts only; self-managed
servers): ``prepare`` writes the decompressed RDB to ``<dir>/<dbfilename>.tmp-<rand>``, checking
its CRC64 and key counts on the way, and fsyncs it; ``cutover`` ``SAVE``s the live state when the
server's ``dir`` is ``placement_dir`` (so the rollback file is the live state), renames the
current file to ``<dbfilename>.rollback-<UTC ts>``, renames the new one into place, runs
``restart_command`` with ``/bin/sh -c`` (the password, if any, in ``REDISCLI_AUTH``; never in argv),
waits for ``PING`` and checks the key counts; on any failure it puts the previous file back and
restarts again. The restart command must stop the server without saving (``SHUTDOWN NOSAVE``).

A logical capture may list a key twice (SCAN during a rehash): side by side the first copy
stays (its ``BUSYKEY`` replies are counted, not fatal), in place the last one wins; the
verification and the health check allow for both. Health compares with the manifest's counts,
less the keys that expired before or since the restore (counted, and reported in the details).

Performance (``bench/redis_restore.py``, 1M mixed keys, 2 cores): prepare + cut-over at about
375k keys/s on an idle machine (230-280k with other load), peak RSS under 80 MB; ``redis-cli
--pipe`` of the same commands runs at 600-740k keys/s, so the Python side dominates, at about
2.5 CPU-µs per key. The plan's counting pass adds 1.5-2.3 s per million keys. :class:`_Walk`
slices keys and values straight out of the read buffer (about 1 µs per key; it re-implements
``RdbParser._walk``'s loop on the parser's own primitives and must follow it), a payload costs
one concatenation and one CRC64 (anycrc), a command one ``%`` format; batches of ``batch`` keys
(at most 4 MB) go out as one buffer with two batches in flight, and replies are checked in bulk
(``+OK`` * n, one comparison).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.restore import (
    HealthCheck,
    RestoreOutcome,
)
from airflow_checkpoint_provider.core.staging import Staging

from ._inplace import _InPlaceMixin
from ._load import (
    RedisRestoreError,
    _DbLoad,
)
from ._plan import _PlanMixin
from ._side import _SideBySideMixin
from ._swap import STEPS
from .capture import capture
from .copies import nonempty_dbs
from .health import (
    COMPONENT,
    health,
)
from .resp import RespError, connect

log = logging.getLogger(__name__)

__all__ = ["STEPS", "RedisRestore", "RedisRestoreError"]

# --------------------------------------------------------------------------- the component


def _library(code: bytes) -> str:
    first = code.split(b"\n", 1)[0].decode("utf-8", "replace")
    for word in first.split():
        if word.startswith("name="):
            return word[5:]
    return "?"


class RedisRestore(_InPlaceMixin, _PlanMixin, _SideBySideMixin):
    """Restore the Redis data of one checkpoint (a ``ComponentRestore``); see the module docstring.

    :param dbs: restore only these logical dbs (a db absent from the checkpoint is emptied).
    :param spare_db: load into ``spare_db, spare_db+1, ...`` instead of the highest empty dbs.
    :param batch: keys per pipelined write.
    :param restore_functions: load the checkpoint's function libraries (server-wide) at cut-over.
    :param function_policy: ``REPLACE`` (libraries of the same name are replaced, others stay) or
        ``FLUSH`` (the server ends up with exactly the checkpoint's libraries).
    :param capture_options: keyword arguments of :func:`~.capture.capture` for the safety checkpoint.
    :param rollback_keep: the retention policy applied when spare dbs run short: rollback copies
        kept per target db (newest first; None: no limit) ...
    :param rollback_max_age: ... and none older than this many seconds (None: no limit). Copies
        beyond the policy are dropped to make room, never those of a restore still running
        (one with a journal in the store).
    :param plan_counts: how the plan counts the keys a restore replaces in a db that holds keys:
        ``exact`` (every key, a full pass of the artifact), ``estimate`` (a sample) or ``auto``
        (exact up to 100k keys in the checkpoint, else an estimate).
    """

    component = COMPONENT

    # ---- facts about the checkpoint -------------------------------------------------------------

    # ---- plan -----------------------------------------------------------------------------------

    # ---- safety checkpoint and loading ----------------------------------------------------------

    def safety_capture(self, staging: Staging) -> list[Artifact]:
        """A capture of the whole server (all dbs, functions) as it is now; nothing (``[]``) when
        the restore replaces nothing: the target dbs are empty and there are no functions."""
        if self._replaces_nothing():
            log.info(
                "%s: the target dbs are empty and there are no functions: no safety capture needed", self.target.label
            )
            return []
        options = dict(self.capture_options)
        return capture(self.target, staging, mode=options.pop("mode", "auto"), **options)

    def _replaces_nothing(self) -> bool:
        with connect(self.target) as conn:
            keyspace = nonempty_dbs(conn)
            if any(keyspace.get(d) for d in (keyspace if self.placement else self.dbs)):
                return False
            if self.restore_functions or self.placement:
                libs = conn.call_nothrow("FUNCTION", "LIST")
                if not isinstance(libs, RespError) and libs:
                    return False
        return True

    def _ensure_planned(self) -> None:
        if self.artifact is None:
            raise RedisRestoreError("the checkpoint holds no Redis artifact (redis/rdb or redis/logical)")
        if self.facts is None or (self.mode == "side_by_side" and not self.placement and not self.pairs):
            _, problems = self.plan()
            if problems:
                raise RedisRestoreError(
                    f"the Redis restore of {self.checkpoint_id} is refused: " + "; ".join(problems),
                    hint="nothing was changed",
                )

    def prepare(self) -> None:
        self._ensure_planned()
        if self.placement:
            return self._prepare_placement()
        if self.mode == "in_place":
            return None  # loaded at cut-over, after the safety checkpoint
        self._prepare_side_by_side()
        log.info(
            "Loaded %s side by side on %s: %s",
            self.checkpoint_id,
            self.target.label,
            ", ".join(f"db{t} -> db{s}: {self._stats.get(t, _DbLoad()).restored} keys" for t, s in self.pairs),
        )
        return None

    # ---- cut-over, rollback, abort, health ------------------------------------------------------

    def cutover(self) -> RestoreOutcome:
        if self.placement:
            return self._cutover_placement()
        if self.mode == "in_place":
            return self._cutover_in_place()
        return self._cutover_side_by_side()

    def rollback(self) -> None:
        if self.placement:
            return self._rollback_placement()
        if self.mode == "in_place":
            raise RedisRestoreError(
                f"an in-place restore of {self.target.label} keeps no rollback copy",
                hint="restore the safety checkpoint taken before the restore",
            )
        return self._rollback_side_by_side()

    def abort(self) -> None:
        """Flush the spare dbs this restore claimed (only those still marked by it)."""
        tmp = self._placed.pop("tmp", None)
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        self._abort_side_by_side()

    def health(self, tolerance: float) -> list[HealthCheck]:
        """Keys per db against the manifest's counts, less the keys that expired before the load
        (counted while loading) and those that may have expired since (reported per check)."""
        expectations: dict[str, Any] = {"keys": {str(d): self.expected.get(d, 0) for d in self.dbs}}
        if self._stats:
            expectations["expired"] = {str(d): st.expired for d, st in self._stats.items() if st.expired}
            expectations["duplicates"] = {str(d): st.duplicates for d, st in self._stats.items() if st.duplicates}
            expiring = {d: st.soon for d, st in self._stats.items()}
        else:
            expiring = dict(self._placed.get("soon", {}))
        if self.restore_functions and self._codes:
            expectations["libraries"] = sorted({_library(c) for c in self._codes})
        elif self.restore_functions and self.artifact is not None:
            expectations["functions"] = int(self.artifact.fingerprints.get("functions") or 0)
        return health(self.target, expectations, tolerance=tolerance, expiring=expiring)

    # ---- in place -------------------------------------------------------------------------------

    # ---- file placement -------------------------------------------------------------------------
