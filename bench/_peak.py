"""Peak memory of a process tree, sampled from ``/proc`` (shared by the benchmarks).

``wait4()``'s ``ru_maxrss`` cannot be used for a child started from a big Python process: Linux
carries the parent's high-water mark over ``fork`` + ``exec`` into the child's, so the child
reports at least the parent's size. Here a thread reads, every ``interval`` seconds, the
``VmHWM`` (the kernel's own high-water mark of resident memory) of the process and of each of its
descendants, keeping the largest per command name.
"""

from __future__ import annotations

import os
import threading


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def _hwm(pid: int) -> tuple[str, float] | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
    except OSError:
        return None
    if "VmHWM" not in fields:
        return None
    return fields["Name"].strip(), int(fields["VmHWM"].split()[0]) / 1024  # kB -> MiB


class PeakRss:
    """``with PeakRss(pid) as peak: ...``; then ``peak.by_name`` (MiB per command) and ``peak.of(name)``."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.by_name: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        todo = [self.pid]
        while todo:
            pid = todo.pop()
            got = _hwm(pid)
            if got:
                name, mib = got
                self.by_name[name] = max(self.by_name.get(name, 0.0), mib)
            todo += _children(pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def of(self, name: str) -> float:
        return self.by_name.get(name, 0.0)
