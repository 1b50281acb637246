"""Progress of the long byte streams (capture, seal, verify, restore), for whoever listens.

The command line draws progress bars from it; nothing listens by default, and then every call
site pays one global read per artifact (:func:`track` returns None) and one ``if`` per chunk.
A listener is any object with ``start(phase, name, total) -> handle``, where the handle has
``advance(nbytes)`` and ``close()``; it is called from the threads that move the bytes, so
it must be thread-safe.

Phases: ``capture`` (raw bytes into the staging area, total unknown), ``seal`` (staged bytes
into the archive), ``verify`` (archive bytes hashed), ``restore`` (archive bytes read by a restore).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Handle(Protocol):
    def advance(self, nbytes: int) -> None: ...

    def close(self) -> None: ...


class Listener(Protocol):
    def start(self, phase: str, name: str, total: int | None) -> Handle: ...


log = logging.getLogger(__name__)

_listener: Listener | None = None


def track(phase: str, name: str, total: int | None = None) -> Handle | None:
    """A handle to report ``name``'s bytes to, or None when nobody listens (the common case)."""
    if _listener is None:
        return None
    try:
        return _Guarded(_listener.start(phase, name, total))
    except Exception:
        log.warning("Progress display failed; going on without it", exc_info=True)
        return None


class _Guarded:
    """A listener's handle whose failures never reach the stream it watches: a broken progress
    bar must not fail a capture or a restore. After the first failure it goes quiet."""

    def __init__(self, handle: Handle) -> None:
        self._handle: Handle | None = handle

    def advance(self, nbytes: int) -> None:
        self._call("advance", nbytes)

    def close(self) -> None:
        self._call("close")
        self._handle = None

    def _call(self, method: str, *args: Any) -> None:
        if self._handle is None:
            return
        try:
            getattr(self._handle, method)(*args)
        except Exception:
            self._handle = None
            log.warning("Progress display failed; going on without it", exc_info=True)


@contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Report progress to ``listener`` inside the block (None: leave things as they are)."""
    global _listener
    previous, _listener = _listener, listener if listener is not None else _listener
    try:
        yield
    finally:
        _listener = previous


class Tracked:
    """A writable that reports what passes through it to ``handle`` (used only when someone listens)."""

    def __init__(self, target: Any, handle: Handle) -> None:
        self._target = target
        self._handle = handle

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = self._target.write(data)
        self._handle.advance(len(data))
        return n if n is not None else len(data)
