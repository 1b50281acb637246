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
``SWAPDB``; it counts, per target db, the keys the checkpoint will replace and those that will
disappear (one pass over the artifact with ``EXISTS`` batches). ``prepare`` (:mod:`._side`)
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
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.journal import (
    ComponentJournal,
    NullJournal,
)
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.restore import (
    HealthCheck,
    RestoreOutcome,
)
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.core.store import Store

from ._inplace import _InPlaceMixin
from ._load import (
    MODES,
    RedisRestoreError,
    _DbLoad,
    _logical_items,
    _ReplyError,
    _Walk,
    restore_stream,
)
from ._placement import _PlacementMixin
from ._plan import _PlanMixin
from ._side import _SideBySideMixin
from ._swap import STEPS
from .capture import RDB_KIND, capture
from .copies import Copy, nonempty_dbs
from .encoding import TYPE_NAMES
from .health import (
    COMPONENT,
    ServerFacts,
    db_sizes,
    health,
    max_rdb_version,
    parse_version,
    per_db,
    server_for_rdb,
)
from .logical import KIND as LOGICAL_KIND
from .logical import LogicalFunctions
from .rdb import Function, ModuleAux
from .resp import Connection, RespError, connect, encode_command

log = logging.getLogger(__name__)

__all__ = ["STEPS", "RedisRestore", "RedisRestoreError"]

# --------------------------------------------------------------------------- the component


def _artifact_of(artifacts: list[Artifact]) -> Artifact | None:
    mine = [a for a in artifacts if a.store == "redis" and a.kind in (RDB_KIND, LOGICAL_KIND)]
    mine.sort(key=lambda a: a.kind != RDB_KIND)
    return mine[0] if mine else None


def _library(code: bytes) -> str:
    first = code.split(b"\n", 1)[0].decode("utf-8", "replace")
    for word in first.split():
        if word.startswith("name="):
            return word[5:]
    return "?"


class RedisRestore(_InPlaceMixin, _PlanMixin, _SideBySideMixin, _PlacementMixin):
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
    """

    component = COMPONENT

    def __init__(self, target: RedisTarget, store: Store, checkpoint_id: str, artifacts: list[Artifact], *,
                 mode: str = "side_by_side", dbs: list[int] | None = None, spare_db: int | None = None,
                 placement_dir: str | None = None, restart_command: str | None = None, batch: int = 1000,
                 restore_functions: bool = True, function_policy: str = "REPLACE",
                 capture_options: dict[str, Any] | None = None, restart_timeout: float = 120.0,
                 rollback_keep: int | None = 1, rollback_max_age: float | None = 86400.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if function_policy.upper() not in ("REPLACE", "FLUSH"):
            raise ValueError(f"function_policy must be REPLACE or FLUSH, not {function_policy!r}")
        self.target, self.store, self.checkpoint_id, self.mode = target, store, checkpoint_id, mode
        self.spare_db, self.batch, self.restore_functions = spare_db, max(1, int(batch)), restore_functions
        self.function_policy = function_policy.upper()
        self.placement_dir, self.restart_command = placement_dir, restart_command
        self.placement = bool(placement_dir and restart_command)
        self.capture_options, self.restart_timeout = dict(capture_options or {}), restart_timeout
        self.artifact = _artifact_of(artifacts)
        fp = self.artifact.fingerprints if self.artifact else {}
        self.expected = per_db(fp.get("keys"))
        self.dbs = sorted({int(d) for d in dbs}) if dbs is not None else sorted(self.expected)
        if rollback_keep is not None and int(rollback_keep) < 0:
            raise ValueError(f"rollback_keep must be 0 or more, not {rollback_keep!r}")
        self.rollback_keep, self.rollback_max_age = rollback_keep, rollback_max_age
        self.journal: ComponentJournal = NullJournal(COMPONENT)
        self._own_id = secrets.token_hex(6)
        self.pairs: list[tuple[int, int]] = []  # (target db, spare db)
        self.facts: ServerFacts | None = None
        self._markers: dict[int, bytes] = {}  # spare db -> its marker's name
        self._reclaim: list[Copy] = []  # rollback copies beyond the policy the plan chose as spares
        self._claimed: list[int] = []
        self._swapped: list[tuple[int, int]] = []
        self._emptied: list[tuple[int, int]] = []  # swapped pairs whose target was empty: no rollback copy
        self._stats: dict[int, _DbLoad] = {}
        self._codes: list[bytes] = []
        self._fn_payload: bytes | None = None
        self._prev_functions: bytes | None = None
        self._functions_loaded = False
        self._placed: dict[str, Any] = {}

    # ---- facts about the checkpoint -------------------------------------------------------------

    @property
    def restore_id(self) -> str:
        """The journal's restore id (a random one without a journal): it names the markers."""
        rid = self.journal.restore_id
        return self._own_id if rid == "unjournaled" else rid

    @property
    def kind(self) -> str:
        return self.artifact.kind if self.artifact else ""

    @property
    def rdb_version(self) -> int | None:
        """The RDB version of the payloads: the RDB header's, or the capturing server's DUMP version."""
        if self.artifact is None:
            return None
        if self.kind == RDB_KIND:
            v = self.artifact.fingerprints.get("rdb_version") or self.artifact.meta.get("rdb_version")
            return int(v) if v else None
        return max_rdb_version(self.artifact.meta.get("redis_version") or self.artifact.engine_version)

    def _open(self) -> Any:
        assert self.artifact is not None
        return self.store.open_artifact(self.checkpoint_id, self.artifact.name)

    def _items(self, src: Any, *, values: bool = True) -> tuple[Iterator[Any], int | None]:
        if self.kind == RDB_KIND:
            walk = _Walk(src)
            version = walk.begin()
            top = self.facts.max_rdb if self.facts else None
            if top is not None and version > top:
                raise RedisRestoreError(self._version_problem(version))
            return walk.entries(values=values), version
        return _logical_items(src), None

    def _version_problem(self, version: int) -> str:
        facts = self.facts
        assert facts is not None
        return (f"the checkpoint's data is RDB version {version} (written by Redis {server_for_rdb(version)} or "
                f"newer), but {self.target.label} runs Redis {facts.version}, whose RESTORE accepts RDB versions up "
                f"to {facts.max_rdb}: restore into a Redis {server_for_rdb(version)} or newer server")

    # ---- plan -----------------------------------------------------------------------------------

    # ---- safety checkpoint and loading ----------------------------------------------------------

    def safety_capture(self, staging: Staging) -> list[Artifact]:
        """A capture of the whole server (all dbs, functions) as it is now; nothing (``[]``) when
        the restore replaces nothing: the target dbs are empty and there are no functions."""
        if self._replaces_nothing():
            log.info("%s: the target dbs are empty and there are no functions: no safety capture needed",
                     self.target.label)
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
                raise RedisRestoreError(f"the Redis restore of {self.checkpoint_id} is refused: " + "; ".join(problems),
                                        hint="nothing was changed")

    def prepare(self) -> None:
        self._ensure_planned()
        if self.placement:
            return self._prepare_placement()
        if self.mode == "in_place":
            return None  # loaded at cut-over, after the safety checkpoint
        self._prepare_side_by_side()
        log.info("Loaded %s side by side on %s: %s", self.checkpoint_id, self.target.label,
                 ", ".join(f"db{t} -> db{s}: {self._stats.get(t, _DbLoad()).restored} keys" for t, s in self.pairs))
        return None

    def _load(self, conn: Connection, mapping: dict[int, int], *, replace: bool,
              keep_hashes: bool = False) -> dict[int, _DbLoad]:
        self._codes, self._fn_payload = [], None

        def on_record(rec: Any) -> None:
            if isinstance(rec, Function):
                self._codes.append(rec.code)
            elif isinstance(rec, LogicalFunctions):
                self._fn_payload = rec.payload
            elif isinstance(rec, ModuleAux):
                log.warning("The checkpoint holds module auxiliary data, which RESTORE cannot load: skipped")

        with self._open() as src:
            items, version = self._items(src)
            try:
                stats = restore_stream(conn, items, version, mapping, replace=replace, batch=self.batch,
                                       keep_hashes=keep_hashes, tolerate_busy=self.kind == LOGICAL_KIND,
                                       on_record=on_record)
            except _ReplyError as exc:
                what = f"RESTORE of key {exc.label[:100]!r}" if isinstance(exc.label, bytes) else \
                    " ".join(map(str, exc.label))
                hint = ""
                if "payload version" in exc.message:
                    source = f"RDB version {version}" if version else \
                        f"DUMP payloads of Redis {self.artifact.engine_version if self.artifact else '?'}"
                    hint = f" (the checkpoint holds {source}; the server accepts RDB versions up to " \
                           f"{self.facts.max_rdb if self.facts else '?'})"
                raise RedisRestoreError(f"{self.target.label} refused {what} into db{exc.db}: {exc.message}{hint}"
                                        + (f" ({exc.count} errors in that batch)" if exc.count > 1 else "")) from None
            while src.read(1 << 20):  # to the end of the artifact: its sha256 is checked there
                pass
        return stats

    def _verify(self, conn: Connection, mapping: dict[int, int]) -> dict[int, int]:
        """Keys per db (allowing for keys that expired meanwhile), and a sample's TYPE and expiry;
        returns the keys per destination db (markers not counted)."""
        secs, usecs = conn.call("TIME")
        now = int(secs) * 1000 + int(usecs) // 1000 + 1000
        exact_ttl = (parse_version(self.facts.version if self.facts else "") or (0, 0))[0] >= 7
        sizes = db_sizes(conn, sorted(mapping.values()), self._markers)
        problems = []
        for src, dst in sorted(mapping.items()):
            st = self._stats.get(src) or _DbLoad()
            want = self.expected.get(src, 0)
            if st.streamed != want:
                problems.append(f"db{src}: the artifact holds {st.streamed} keys but its fingerprints say {want}")
            gone = sum(1 for e in st.soon if e <= now)
            loaded = st.restored
            if not loaded - gone <= sizes[dst] <= loaded:
                problems.append(f"db{dst} holds {sizes[dst]} keys, expected {loaded}"
                                + (f" (or down to {loaded - gone}: keys expiring meanwhile)" if gone else ""))
            problems += self._check_sample(conn, dst, st.sample, now, exact_ttl)
        if problems:
            raise RedisRestoreError(f"verification of {self.checkpoint_id} on {self.target.label} failed: "
                                    + "; ".join(problems[:10]))
        return sizes

    def _check_sample(self, conn: Connection, db: int, sample: list[tuple[bytes, int, int | None]], now: int,
                      exact_ttl: bool) -> list[str]:
        if not sample:
            return []
        cmds = [encode_command("SELECT", db)]
        for key, _, _ in sample:
            cmds.append(encode_command("TYPE", key) + encode_command("PEXPIRETIME" if exact_ttl else "EXISTS", key))
        conn.sendall(b"".join(cmds))
        conn.read_reply()
        bad = []
        for key, t, expire in sample:
            kind, ttl = conn.read_reply(), conn.read_reply()
            if expire is not None and expire <= now and kind == "none":
                continue  # expired since
            name = TYPE_NAMES.get(t)
            if kind == "none" or (name not in (None, "module") and kind != name):
                bad.append(f"db{db} key {key[:60]!r}: TYPE is {kind}, expected {name}")
            elif exact_ttl and ttl != (-1 if expire is None else expire):
                bad.append(f"db{db} key {key[:60]!r}: expires at {ttl}, expected {expire}")
        return bad[:5]

    # ---- cut-over, rollback, abort, health ------------------------------------------------------

    def _function_commands(self, major: int) -> list[tuple[Any, ...]]:
        if not self.restore_functions or major < 7:
            return []
        if self._fn_payload is not None:
            return [("FUNCTION", "RESTORE", self._fn_payload, self.function_policy)]
        cmds: list[tuple[Any, ...]] = [("FUNCTION", "FLUSH")] if self.function_policy == "FLUSH" else []
        return cmds + [("FUNCTION", "LOAD", "REPLACE", code) for code in self._codes]

    def _major(self) -> int:
        return (parse_version(self.facts.version if self.facts else "") or (0, 0))[0]

    def cutover(self) -> RestoreOutcome:
        if self.placement:
            return self._cutover_placement()
        if self.mode == "in_place":
            return self._cutover_in_place()
        return self._cutover_side_by_side()

    def _details(self, fns: list[Any]) -> dict[str, Any]:
        return {"mode": self.mode, "artifact": self.artifact.name if self.artifact else None,
                "keys": {f"db{d}": st.restored for d, st in sorted(self._stats.items())},
                "skipped_expired": {f"db{d}": st.expired for d, st in sorted(self._stats.items()) if st.expired},
                "function_commands": len(fns), "restore_id": self.restore_id}

    def rollback(self) -> None:
        if self.placement:
            return self._rollback_placement()
        if self.mode == "in_place":
            raise RedisRestoreError(f"an in-place restore of {self.target.label} keeps no rollback copy",
                                    hint="restore the safety checkpoint taken before the restore")
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

