"""The optional write fence: ``CLIENT PAUSE <ms> WRITE`` ... ``CLIENT UNPAUSE``.

While paused, the server keeps serving reads but holds every write (and key expiry and
eviction) until the pause is lifted or its timeout passes. The timeout is the safety net, and
it is always there: ``CLIENT PAUSE`` is only ever sent with a timeout, ``pause_timeout``
seconds (default :data:`DEFAULT_MAX_PAUSE_S`, 30 s; at most :data:`MAX_PAUSE_S`, 10 minutes), so
a capture that is killed mid-fence (SIGKILL, a lost worker) blocks writers for at most that
long: the server lifts the pause by itself. Otherwise the fence is released in ``finally``; if
the control connection broke, a fresh one is opened just to unpause.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

from airflow_checkpoint_provider.core.crashpoints import crashpoint
from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    CaptureError,
    CheckpointError,
)

from .resp import Connection, RespError, connect

log = logging.getLogger(__name__)

#: ``pause_writes=True`` pauses writers for at most this long (unless ``pause_timeout`` says otherwise).
DEFAULT_MAX_PAUSE_S = 30.0
#: no pause may be longer: writers of a capture killed mid-fence are blocked for at most this long
MAX_PAUSE_S = 600.0


def pause_ms(
    pause_writes: bool | float | int | str | None, pause_timeout: float | int | str = DEFAULT_MAX_PAUSE_S
) -> int | None:
    """Normalise ``pause_writes`` (True/False, seconds, or their text from a template) to the
    maximum pause in ms, or None for no fence. ``True`` pauses for at most ``pause_timeout``
    seconds; a number of seconds is the bound itself. Either must be more than 0 and at most
    :data:`MAX_PAUSE_S`."""
    bound = _seconds(pause_timeout, "pause_timeout")
    if isinstance(pause_writes, str):
        text = pause_writes.strip().lower()
        if text in ("", "false", "no", "off", "none"):
            return None
        if text in ("true", "yes", "on"):
            pause_writes = True
        else:
            try:
                pause_writes = float(text)
            except ValueError:
                raise CheckpointError(
                    f"pause_writes={pause_writes!r} is neither a boolean nor a number of seconds",
                    hint="use True, False or the maximum pause in seconds, e.g. 10",
                ) from None
    if pause_writes is None or pause_writes is False:
        return None
    if pause_writes is True:
        if bound is None:
            raise CheckpointError(
                f"pause_timeout={pause_timeout!r}: a write pause needs a timeout of more than 0 s",
                hint=f"use a number of seconds up to {MAX_PAUSE_S:g}, e.g. 30",
            )
        return max(1, int(bound * 1000))
    seconds = _seconds(pause_writes, "pause_writes")
    return None if seconds is None else max(1, int(seconds * 1000))


def _seconds(value: float | int | str, name: str) -> float | None:
    """A pause bound in seconds (None for 0 or less); refuses what is not a finite number up to the maximum."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"{name}={value!r} is not a number of seconds",
            hint=f"use a number of seconds up to {MAX_PAUSE_S:g}, e.g. 10",
        ) from None
    if math.isnan(seconds) or seconds > MAX_PAUSE_S:
        raise CheckpointError(
            f"{name}={value!r}: a write pause may last at most {MAX_PAUSE_S:g} s, so that a "
            "capture that dies mid-fence cannot block writers for longer",
            hint=f"use a number of seconds up to {MAX_PAUSE_S:g}, or capture without pause_writes",
        )
    return seconds if seconds > 0 else None


class WriteFence:
    """A pause of writers on one server; :meth:`release` is idempotent."""

    def __init__(self, conn: Connection, max_ms: int) -> None:
        if not 0 < max_ms <= MAX_PAUSE_S * 1000:
            raise ValueError(f"a write pause must last more than 0 and at most {MAX_PAUSE_S * 1000:g} ms, not {max_ms}")
        self.conn = conn
        self.max_ms = max_ms
        self.paused_at: float | None = None
        self.released_at: float | None = None

    def pause(self) -> None:
        reply = self.conn.call_nothrow("CLIENT", "PAUSE", self.max_ms, "WRITE")
        if isinstance(reply, RespError):
            label = self.conn.target.label
            if reply.code == "NOPERM":
                raise AuthenticationError(
                    f"{label} refused CLIENT PAUSE: {reply.message}",
                    hint="grant the ACL user +client|pause +client|unpause, or capture without pause_writes",
                )
            raise CaptureError(
                f"{label} cannot pause writes: {reply.message}",
                hint="CLIENT PAUSE ... WRITE needs Redis 6.2 or newer; capture without pause_writes",
            )
        self.paused_at = time.monotonic()
        log.info("Paused writes on %s for at most %d ms", self.conn.target.label, self.max_ms)

    def release(self) -> None:
        if self.paused_at is None or self.released_at is not None:
            return
        self.released_at = time.monotonic()
        try:
            self.conn.call("CLIENT", "UNPAUSE")
        except (CheckpointError, RespError, OSError) as first:
            try:  # the control connection may be the thing that failed: try a fresh one
                with connect(self.conn.target) as conn:
                    conn.call("CLIENT", "UNPAUSE")
            except (CheckpointError, RespError, OSError) as exc:
                log.warning(
                    "Could not lift the write pause on %s (%s; then %s); it ends by itself within %d ms",
                    self.conn.target.label,
                    first,
                    exc,
                    self.max_ms,
                )
                return
        log.info("Unpaused writes on %s after %.0f ms", self.conn.target.label, self.held_ms)

    @property
    def held_ms(self) -> float:
        if self.paused_at is None:
            return 0.0
        end = self.released_at if self.released_at is not None else time.monotonic()
        return (end - self.paused_at) * 1000

    @property
    def expired(self) -> bool:
        """True if the pause ran out (on the server) before it was released."""
        return self.paused_at is not None and self.held_ms >= self.max_ms

    def describe(self) -> dict[str, int | bool]:
        return {"max_ms": self.max_ms, "held_ms": int(self.held_ms), "expired": self.expired}


@contextmanager
def write_fence(conn: Connection, max_ms: int | None) -> Iterator[WriteFence | None]:
    """Pause writers for the block (``max_ms`` None: no fence); always unpause afterwards."""
    if max_ms is None:
        yield None
        return
    fence = WriteFence(conn, max_ms)
    fence.pause()
    try:
        crashpoint("redis.fence.paused")  # a kill here: writers wait until the pause times out
        yield fence
    finally:
        fence.release()
