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

    def __init__(self, target: PostgresTarget, database: str, *, limit: int = -1, maintenance_db: str = "postgres"
                 ) -> None:
        from airflow_checkpoint_provider.core.engines.postgres._conn import (
            connect_kwargs,
        )

        self.config = {"connect": connect_kwargs(target, maintenance_db, "airflow-checkpoint-guard"),
                       "database": database, "limit": int(limit)}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ConnectionGuard:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_checkpoint_provider.core.engines.postgres._guard"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
            close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(self.config).encode() + b"\n")
        self.proc.stdin.flush()
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


def _watch() -> int:
    config: dict[str, Any] = json.loads(sys.stdin.buffer.readline())
    import psycopg
    from psycopg import sql

    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    rest = sys.stdin.buffer.read()  # returns at EOF: when the restore said done, or died
    if rest.startswith(DONE):
        return 0
    database, limit = config["database"], config["limit"]
    with psycopg.connect(autocommit=True, **config["connect"]) as conn:
        row = conn.execute("SELECT datallowconn FROM pg_catalog.pg_database WHERE datname = %s",
                           (database,)).fetchone()
        if row is not None and not row[0]:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true CONNECTION LIMIT {}").format(
                sql.Identifier(database), sql.Literal(limit)))
    return 0


if __name__ == "__main__":
    sys.exit(_watch())
