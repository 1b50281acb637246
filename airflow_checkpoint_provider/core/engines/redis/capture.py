"""Capture a Redis server into staging: an RDB over replication, or a logical SCAN + DUMP stream.

``capture(target, staging, mode=...)``:

1. ``mode="rdb"``: :func:`capture_rdb` opens a replication connection, sends ``SYNC``
   (:mod:`.replication`) and streams the RDB straight into the staging sink (zstd and sha256 in
   the same pass). The same bytes go through :class:`~.rdb.RdbParser` on their way: it checks
   the magic, the version and the trailing CRC64 and counts keys per db, keys with an expiry,
   value types and function libraries (the fingerprints). A bad RDB raises ``CaptureError`` and
   the sink discards everything; nothing stays staged.
2. ``mode="logical"``: :func:`~.logical.capture_logical`.
3. ``mode="auto"`` (default): rdb, and logical if the server refuses replication (ACL
   ``-NOPERM``, ``unknown command``, a managed service's refusal). Unreachable servers and
   refused credentials are errors, not reasons to fall back.

All logical dbs are captured (``target.db`` does not narrow a capture), except the provider's
own copies: dbs that hold a rollback copy or a spare claimed by a restore (found through the
store's index, :mod:`.copies`) are not application data and are left out: an RDB is copied
without their sections (:class:`~.rdb.DbFilter`, a new CRC64), a logical capture does not scan
them, and the artifact's ``meta["left_out"]`` names them. ``include_own_copies=True`` captures
them too.

``pause_writes`` (True, or the maximum seconds) fences writers with ``CLIENT PAUSE WRITE``. The
pause is always bounded: ``pause_timeout`` seconds for ``True`` (default 30 s, at most
:data:`~.fence.MAX_PAUSE_S`, 600 s), the number itself otherwise. A capture killed mid-fence
blocks writers until that timeout passes, then the server lifts the pause by itself. For an RDB the pause ends as soon as the payload header arrives. With
diskless replication (the default since 7.0) that is right after the fork, so the point in
time is fixed; note that the server first waits ``repl-diskless-sync-delay`` (default 5 s) for
more replicas, and writers wait with it. With disk-based replication the header only comes
once the RDB is on the server's disk, so writers are held for the whole BGSAVE (or until the
maximum pause runs out; the snapshot is still the fork's point in time). For a logical capture
the pause lasts the whole capture; if it runs out first, a warning says the capture is not a
single point in time. The pause is always lifted in ``finally``.

Performance (the fingerprint decision). The fingerprint walk runs *in the same pass* as the
transfer: the parser pulls the RDB from the socket, and every piece goes to the sink (zstd,
sha256) on its way. Values are skipped by their length prefixes in one tight loop over a
``bytes`` window: about 0.26 CPU-s per million plain string keys, 0.37 CPU-s for the mixed
million keys of ``bench/redis_capture.py``, while the server needs about 1.5 s to produce that
RDB, so the walk keeps pace and adds no second read and no window after the transfer.
Alternatives measured or weighed: the RESIZEDB hints give exact keys and expiries per db but
no type histogram; walking the staged data after ``capture_end`` would only move the same CPU
after the window (``capture()`` would take longer, not shorter); a walker thread fights the
receive loop for the GIL. On a 2-core machine the server's fork, this loop and zstd share
the cores, so other load shows in the ratio to ``redis-cli --rdb`` first.
Timestamps: ``capture_start`` is when SYNC was sent, or for a diskless transfer (``$EOF:``
framing, the default since Redis 7.0) when the header arrived, i.e. the fork; ``capture_end``
is when the last byte arrived.
"""

from __future__ import annotations

import logging

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import AuthenticationError, CaptureError
from airflow_checkpoint_provider.core.manifest import Artifact, format_ts, utcnow
from airflow_checkpoint_provider.core.staging import Staging

from .copies import find_copies
from .encoding import RdbError
from .fence import DEFAULT_MAX_PAUSE_S, pause_ms, write_fence
from .logical import capture_logical
from .rdb import RdbParser
from .replication import SyncRefused, SyncStream, start_sync
from .resp import connect, info
from .window import DbFilter

log = logging.getLogger(__name__)

MODES = ("auto", "rdb", "logical")
RDB_ARTIFACT = "redis/dump.rdb"
RDB_KIND = "redis/rdb"


def capture(
    target: RedisTarget,
    staging: Staging,
    *,
    mode: str = "auto",
    pause_writes: bool | float = False,
    compression_level: int = 3,
    include_own_copies: bool = False,
    pause_timeout: float = DEFAULT_MAX_PAUSE_S,
) -> list[Artifact]:
    """Capture ``target`` into ``staging``; return the artifact(s) written. See the module docstring.

    :param pause_writes: fence writers with ``CLIENT PAUSE WRITE``: True (for at most
        ``pause_timeout`` seconds) or the maximum seconds.
    :param pause_timeout: the bound of ``pause_writes=True``: writers of a capture that dies
        mid-fence are blocked for at most this long (more than 0, at most 600 s).
    :param include_own_copies: also capture the dbs holding the provider's own copies.
    """
    if mode not in MODES:
        raise CaptureError(
            f"unknown Redis capture mode {mode!r} for {target.label}", hint=f"use one of {', '.join(MODES)}"
        )
    max_ms = pause_ms(pause_writes, pause_timeout)
    left_out = {} if include_own_copies else own_copies(target, staging)
    if left_out:
        log.info("Leaving out the provider's own copies on %s: %s", target.label, "; ".join(left_out.values()))
    if mode in ("rdb", "auto"):
        try:
            return [capture_rdb(target, staging, pause_ms=max_ms, level=compression_level, left_out=left_out)]
        except SyncRefused as refused:
            if mode == "rdb":
                raise refused_error(target, refused) from None
            log.warning(
                "%s refused replication (%s: %s); falling back to a logical capture (SCAN + DUMP)",
                target.label,
                refused.command,
                refused.reply,
            )
    return [capture_logical(target, staging, pause_ms=max_ms, level=compression_level, left_out=left_out)]


def own_copies(target: RedisTarget, staging: Staging) -> dict[str, str]:
    """The dbs holding the provider's own copies, per the store's index: ``{"15": "db15: rollback copy ..."}``."""
    with connect(target) as conn:
        return {str(db): copy.describe() for db, copy in sorted(find_copies(conn, fs=staging.fs).items())}


def refused_error(target: RedisTarget, refused: SyncRefused) -> CaptureError | AuthenticationError:
    if refused.noperm:
        return AuthenticationError(
            f"{target.label}: the ACL user lacks SYNC ({refused.command} was refused: {refused.reply})",
            hint="use mode='auto' or 'logical', or grant the user +sync +replconf",
        )
    return CaptureError(
        f"{target.label} does not allow replication ({refused.command} was refused: {refused.reply})",
        hint="managed services often disable SYNC; use mode='auto' or 'logical'",
    )


def capture_rdb(
    target: RedisTarget,
    staging: Staging,
    *,
    pause_ms: int | None = None,
    level: int = 3,
    left_out: dict[str, str] | None = None,
) -> Artifact:
    """Pull a point-in-time RDB over replication into ``redis/dump.rdb``, validating it on the way;
    the dbs of ``left_out`` are not copied."""
    with connect(target) as ctl:
        version = info(ctl, "server").get("redis_version", "")
        with (
            connect(target) as repl,
            write_fence(ctl, pause_ms) as fence,
            staging.artifact(
                RDB_ARTIFACT, store="redis", kind=RDB_KIND, engine="redis", engine_version=version, level=level
            ) as sink,
        ):
            header = start_sync(repl)
            if fence is not None:
                fence.release()  # the server has forked: the point in time is fixed
            if header.startswith("EOF:"):
                sink.capture_start = format_ts(utcnow())
            dbfilter = DbFilter(sink.write, {int(d) for d in left_out}) if left_out else None
            stream = SyncStream(repl, header, sink.write if dbfilter is None else _discard)
            parser = RdbParser(stream, db_filter=dbfilter)
            try:
                fingerprints = parser.scan()
                if dbfilter is not None:
                    dbfilter.finish()
            except RdbError as exc:
                raise CaptureError(
                    f"the RDB received from {target.label} is invalid: {exc}",
                    hint="retry the capture; if it happens again, check the server (memory, modules) and its log",
                ) from None
            sink.mark_captured()
            sink.fingerprints = fingerprints
            sink.meta = {
                "mode": "rdb",
                "framing": stream.framing,
                "rdb_version": parser.version,
                "checksum": "crc64" if parser.checksum_verified or dbfilter else "none",
                **({"pause": fence.describe()} if fence is not None else {}),
                **({"left_out": left_out} if left_out else {}),
            }
    assert sink.artifact is not None
    log.info(
        "Captured an RDB of %s: %d bytes, %d keys (RDB version %d)%s",
        target.label,
        stream.received if dbfilter is None else dbfilter.written,
        sum(fingerprints["keys"].values()),
        parser.version,
        f"; {dbfilter.dropped} bytes of own copies left out" if dbfilter else "",
    )
    return sink.artifact


def _discard(data: bytes) -> None:
    """The raw stream goes nowhere: the :class:`~.rdb.DbFilter` writes what is kept."""
