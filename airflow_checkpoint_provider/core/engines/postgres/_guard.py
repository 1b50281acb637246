"""A dead man's switch for the moment a database refuses connections.

The cut-over must keep new sessions out of ``<db>`` between ending the old ones and renaming it
(``ALLOW_CONNECTIONS false``, which commits on its own). If the restoring process is killed in
that window, the journal lets the next run finish the job, but until then every client would be
refused. So before blocking, :class:`ConnectionGuard` starts a small watcher process in its own
session (a SIGKILL of the worker or of its process group does not reach it). The watcher holds
the read end of a pipe: when the restore is done with the block it says so and the watcher
exits; when the pipe closes without that word, the restoring process died, and the watcher lets
clients in again at once (``ALLOW_CONNECTIONS true`` with the database's connection limit).

The connection settings, password included, travel through the pipe: never argv or the
environment.

Starting a watcher costs about a second (a Python interpreter loading psycopg), which would sit
inside the cut-over. :class:`Watchers` starts them ahead of need (the restore does so when it
begins loading): such a watcher loads psycopg, then waits for its settings; one that is never
used exits when its pipe is closed (:meth:`Watchers.close`, or the restoring process's exit).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from typing import Any

from airflow_checkpoint_provider.core.engines.targets import PostgresTarget

READY, DONE = b"ready\n", b"done\n"


class ConnectionGuard:
    """Context manager: while open, a watcher re-allows connections to ``database`` if we die."""

    def __init__(
        self,
        target: PostgresTarget,
        database: str,
        *,
        limit: int = -1,
        maintenance_db: str = "postgres",
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        from airflow_checkpoint_provider.core.engines.postgres._conn import (
            connect_kwargs,
        )

        self.config = {
            "connect": connect_kwargs(target, maintenance_db, "airflow-checkpoint-guard"),
            "database": database,
            "limit": int(limit),
        }
        self.proc = proc  #: a watcher started ahead of need (:class:`Watchers`), else one is started here

    def __enter__(self) -> ConnectionGuard:
        if self.proc is None:
            self.proc = _spawn()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(self.config).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died: the READY check below says so
        if self.proc.stdout.readline() != READY:
            self._reap()
            raise RuntimeError("the connection guard of the PostgreSQL cut-over did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(DONE)
            self.proc.stdin.close()
        self._reap()

    def _reap(self) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stdin):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _spawn() -> subprocess.Popen[bytes]:
    """A watcher process in its own session, waiting for its settings on stdin."""
    return subprocess.Popen(
        [sys.executable, "-m", "airflow_checkpoint_provider.core.engines.postgres._guard"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


class Watchers:
    """Watcher processes started ahead of need, so that starting one stays out of the cut-over."""

    def __init__(self) -> None:
        self._ready: list[subprocess.Popen[bytes]] = []

    def warm(self, count: int = 1) -> None:
        """Have ``count`` watchers starting (or started) in the background."""
        self._ready = [p for p in self._ready if p.poll() is None]
        while len(self._ready) < count:
            try:
                self._ready.append(_spawn())
            except OSError:
                return  # ConnectionGuard starts one itself when it is needed, and reports the failure then

    def take(self) -> subprocess.Popen[bytes] | None:
        """A watcher started ahead, if one is alive; None otherwise (the guard starts its own)."""
        while self._ready:
            proc = self._ready.pop(0)
            if proc.poll() is None:
                return proc
            _close(proc)
        return None

    def close(self) -> None:
        """End the watchers not used: their stdin closes before any settings arrived, so they exit."""
        ready, self._ready = self._ready, []
        for proc in ready:
            _close(proc)


def _close(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _watch() -> int:
    import psycopg  # loaded before the settings arrive: a watcher started ahead of need is ready at once
    from psycopg import sql

    line = sys.stdin.buffer.readline()
    if not line:
        return 0  # closed before any settings came: never used
    config: dict[str, Any] = json.loads(line)
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    rest = sys.stdin.buffer.read()  # returns at EOF: when the restore said done, or died
    if rest.startswith(DONE):
        return 0
    database, limit = config["database"], config["limit"]
    with psycopg.connect(autocommit=True, **config["connect"]) as conn:
        row = conn.execute("SELECT datallowconn FROM pg_catalog.pg_database WHERE datname = %s", (database,)).fetchone()
        if row is not None and not row[0]:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true CONNECTION LIMIT {}").format(
                    sql.Identifier(database), sql.Literal(limit)
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(_watch())
