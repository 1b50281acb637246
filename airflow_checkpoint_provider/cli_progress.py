"""Progress bars of ``airflow-checkpoint`` (rich): bytes, rate and time of each capture, seal,
verify and restore stream, drawn on stderr while stdout is a terminal, never in pipes or under ``--json``
to a file. They listen to :mod:`.core.progress`, which costs nothing when they are off."""

from __future__ import annotations

import sys
import threading
from typing import Any


def wanted(args: Any) -> bool:
    """Bars only for a person at a terminal: stdout and stderr are terminals, and not ``--no-progress``."""
    return not getattr(args, "no_progress", False) and sys.stdout.isatty() and sys.stderr.isatty()


class Bars:
    """A :class:`core.progress.Listener` drawing one rich bar per stream.

    The display runs only while a stream is open: it stops (leaving the finished bars on the
    screen) when the last one closes, so that a prompt such as the restore's typed id is never
    drawn over.
    """

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.fields[phase]:<8}"),
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
        )
        self._lock = threading.Lock()
        self._open = 0

    def start(self, phase: str, name: str, total: int | None) -> _Bar:
        with self._lock:
            if self._open == 0:
                self._progress.start()
            self._open += 1
            task = self._progress.add_task(name, total=total, phase=phase)
        return _Bar(self, task)

    def _closed(self, task: Any) -> None:
        with self._lock:
            done = self._progress.tasks[[t.id for t in self._progress.tasks].index(task)].completed
            self._progress.update(task, total=done, completed=done)
            self._open -= 1
            if self._open == 0:
                self._progress.stop()
                for t in list(self._progress.tasks):
                    self._progress.remove_task(t.id)


class _Bar:
    def __init__(self, bars: Bars, task: Any) -> None:
        self._bars, self._task, self._closed = bars, task, False

    def advance(self, nbytes: int) -> None:
        if not self._closed:
            self._bars._progress.advance(self._task, nbytes)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bars._closed(self._task)
