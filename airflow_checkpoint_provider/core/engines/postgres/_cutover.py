"""The PostgreSQL cut-over: journaled renames, and the replay of an interrupted one.

One database is switched in four steps, each journaled (intent and undo) before it runs:

1. ``block_connections``: ``ALTER DATABASE <db> WITH ALLOW_CONNECTIONS false``. This commits on
   its own (it must, to keep new sessions out while the old ones are ended), which is why it is
   journaled, and why a watcher process (:mod:`._guard`) lets clients in again at once if the
   restoring process is killed before the block is lifted;
2. the sessions on ``<db>`` are terminated (client backends; autovacuum workers are exempt from
   ``ALLOW_CONNECTIONS`` and are waited out by the rename itself);
3. ``rename``, in one transaction: ``<db>`` -> ``<db>__rollback_<ckpt>_<ts>``, ``<db>__restoring``
   -> ``<db>``, connections allowed again on both with the checkpoint's ``CONNECTION LIMIT`` on
   the restored database and the replaced one's on the rollback copy. Both renames or neither;
4. on any failure after step 1: ``unblock`` puts the replaced database's settings back.

Undoing a cut-over (``switch_back``, when a later component failed) is the mirror image:
``block_connections``, then ``rename_back`` (``<db>`` -> ``<db>__restoring``, rollback copy ->
``<db>``), then the restored copy is dropped.

:func:`recover` replays an interrupted restore from its journal entry, looking at the server to
see which pending step took effect: it finishes the cut-over when the side-by-side copies had
verified (``entry.roll_forward``), and otherwise drops them and puts every original back. In
every case each database ends up accepting connections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from airflow_checkpoint_provider.core import crashpoints
from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres._guard import ConnectionGuard, Watchers
from airflow_checkpoint_provider.core.engines.postgres._names import (
    is_side_copy,
    rollback_name,
)
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    EngineError,
    NotFoundError,
)
from airflow_checkpoint_provider.core.journal import (
    ComponentEntry,
    ComponentJournal,
    NullJournal,
)

log = logging.getLogger("airflow_checkpoint_provider.core.engines.postgres.restore")

COMPONENT = "postgres"
STEPS = crashpoints.declare(COMPONENT, ("block_connections", "rename", "unblock", "rename_back"))


class CutoverError(EngineError):
    """Swapping the restored database in (or back out) failed; the message says what serves now."""


@dataclass
class Switch:
    """One database's cut-over, as the journal records it (names and settings only)."""

    target: str  #: the database being replaced (or created)
    staging: str  #: ``<target>__restoring``: the verified copy
    rollback: str | None  #: the name the replaced database gets; None when the target did not exist
    allow: bool = True  #: the replaced database's ALLOW_CONNECTIONS (kept on the rollback copy)
    limit: int = -1  #: the replaced database's CONNECTION LIMIT (kept on the rollback copy)
    new_limit: int = -1  #: the checkpoint's CONNECTION LIMIT, for the restored database

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Switch:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class Server:
    """Catalogue operations on one server, through an autocommit maintenance connection."""

    def __init__(
        self,
        target: PostgresTarget,
        conn: psycopg.Connection,
        *,
        timeout: float = 30.0,
        watchers: Watchers | None = None,
    ) -> None:
        self.target, self.conn, self.timeout = target, conn, timeout
        self.watchers = watchers  #: watcher processes started ahead of need, for the connection guards

    def exec(
        self, query: Any, params: Any = None, *, db: str | None = None, action: str = "running a statement"
    ) -> psycopg.Cursor:
        try:
            return self.conn.execute(query, params)
        except psycopg.Error as exc:
            err = C.translate(exc, self.target, db, action)
            raise EngineError(err.message, hint=err.hint) from None

    def settings(self, name: str) -> tuple[bool, int] | None:
        """``(ALLOW_CONNECTIONS, CONNECTION LIMIT)`` of ``name``, or None if it does not exist."""
        row = self.exec(
            "SELECT datallowconn, datconnlimit FROM pg_catalog.pg_database WHERE datname = %s",
            (name,),
            action="reading database settings",
        ).fetchone()
        return (bool(row[0]), int(row[1])) if row else None

    def set_connections(self, name: str, allow: bool, limit: int | None = None) -> None:
        query = sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allow else "false")
        )
        if limit is not None:
            query += sql.SQL(" CONNECTION LIMIT {}").format(sql.Literal(int(limit)))
        self.exec(query, db=name, action=f"setting the connection settings of {name}")

    def terminate(self, name: str) -> int:
        """End every other client session on ``name`` and wait until they are gone; returns how many.

        Only client backends count: autovacuum workers are exempt from ALLOW_CONNECTIONS, end by
        themselves, and the rename waits for them."""
        deadline = time.monotonic() + self.timeout
        ended: set[int] = set()
        while True:
            pids = [
                r[0]
                for r in self.exec(
                    "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'",
                    (name,),
                    action=f"listing the sessions on {name}",
                ).fetchall()
            ]
            if not pids:
                return len(ended)
            if time.monotonic() > deadline:
                raise CutoverError(
                    f"{self.target.label}/{name}: {len(pids)} session(s) (pids {', '.join(map(str, pids[:10]))}) "
                    f"are still connected after {self.timeout:.0f}s",
                    hint="the role needs superuser or membership in pg_signal_backend to end other roles' "
                    "sessions; or stop the clients and retry",
                )
            for pid in pids:
                if (
                    pid not in ended
                    and C.one(
                        self.exec("SELECT pg_catalog.pg_terminate_backend(%s)", (pid,), action="terminating sessions")
                    )[0]
                ):
                    ended.add(pid)
            time.sleep(0.05)

    def drop_copy(self, name: str) -> bool:
        """Drop a side-by-side copy (only ever a ``__restoring`` or ``__drill_`` name). True if it existed."""
        if not is_side_copy(name):
            raise AssertionError(f"refusing to drop {name!r}: not a side-by-side copy")
        if self.settings(name) is None:
            return False
        if C.server_version_num(self.conn) >= 130000:
            self.exec(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
                action=f"dropping {name}",
            )
            return True
        self.set_connections(name, False)
        self.terminate(name)
        self.exec(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)), action=f"dropping {name}")
        return True

    def _renames(self, pairs: list[tuple[str, str]], settings: list[tuple[str, bool, int]]) -> None:
        """Rename and set connection settings in one transaction: all of it or nothing."""
        with self.conn.transaction():
            for old, new in pairs:
                self.conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
                )
            for name, allow, limit in settings:
                self.conn.execute(
                    sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {} CONNECTION LIMIT {}").format(
                        sql.Identifier(name), sql.SQL("true" if allow else "false"), sql.Literal(int(limit))
                    )
                )

    # ---- one database -----------------------------------------------------------------------------

    @contextmanager
    def _blocked(self, name: str, allow: bool, limit: int, journal: ComponentJournal) -> Iterator[None]:
        """Keep new sessions out of ``name`` for the block; if the block fails, let them in again,
        and if this process dies meanwhile, the :class:`ConnectionGuard` does."""
        with ConnectionGuard(
            self.target,
            name,
            limit=limit,
            maintenance_db=self.conn.info.dbname,
            proc=self.watchers.take() if self.watchers else None,
        ):
            with self._blocking(name, allow, limit, journal):
                yield

    @contextmanager
    def _blocking(self, name: str, allow: bool, limit: int, journal: ComponentJournal) -> Iterator[None]:
        with journal.step(
            "block_connections",
            intent={"database": name, "allow_connections": False},
            undo={"database": name, "allow_connections": allow, "connection_limit": limit},
        ):
            self.set_connections(name, False)
        try:
            yield
        except BaseException as exc:
            try:
                with journal.step(
                    "unblock", intent={"database": name, "allow_connections": allow, "connection_limit": limit}, undo={}
                ):
                    self.set_connections(name, allow, limit)
                state = f"{name} is back in place with its original data and accepts connections again"
            except Exception as again:
                state = (
                    f"{name} holds its original data but still refuses connections ({_one_line(again)}); "
                    f"run ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true, or "
                    "`airflow-checkpoint recover-interrupted`"
                )
            where = f"{self.target.label}/{name}"
            if isinstance(exc, CheckpointError):
                raise CutoverError(f"{exc.message}; {state}", hint=exc.hint) from None
            if isinstance(exc, psycopg.Error):
                raise CutoverError(
                    f"{where}: the cut-over failed: {_one_line(exc)}; {state}",
                    hint="close the sessions that hold the databases open and retry",
                ) from None
            raise

    def switch(self, sw: Switch, journal: ComponentJournal) -> int:
        """Put ``sw.staging`` in place of ``sw.target`` (see the module docstring). Returns the
        number of sessions terminated."""
        where = f"{self.target.label}/{sw.target}"
        if sw.rollback is None:
            try:
                with journal.step(
                    "rename", intent={"renames": [[sw.staging, sw.target]]}, undo={"renames": [[sw.target, sw.staging]]}
                ):
                    self._renames([(sw.staging, sw.target)], [(sw.target, True, sw.new_limit)])
            except psycopg.Error as exc:
                raise CutoverError(
                    f"{where}: renaming {sw.staging} into place failed: {_one_line(exc)}",
                    hint=f"nothing was replaced; {sw.staging} is dropped by abort()",
                ) from None
            return 0
        with self._blocked(sw.target, sw.allow, sw.limit, journal):
            terminated = self.terminate(sw.target)
            with journal.step(
                "rename",
                intent={"renames": [[sw.target, sw.rollback], [sw.staging, sw.target]]},
                undo={"renames": [[sw.target, sw.staging], [sw.rollback, sw.target]]},
            ):
                self._renames(
                    [(sw.target, sw.rollback), (sw.staging, sw.target)],
                    [(sw.target, True, sw.new_limit), (sw.rollback, sw.allow, sw.limit)],
                )
        return terminated

    def switch_back(self, sw: Switch, journal: ComponentJournal) -> None:
        """Undo :meth:`switch`: the replaced database serves again; the restored copy is dropped."""
        self.drop_copy(sw.staging)  # a leftover in the way of the rename
        if sw.rollback is not None and self.settings(sw.rollback) is None:
            raise CutoverError(
                f"{self.target.label}/{sw.target}: the rollback copy {sw.rollback} no longer exists",
                hint="restore the safety checkpoint instead",
            )
        with self._blocked(sw.target, True, sw.new_limit, journal):
            self.terminate(sw.target)
            pairs = [(sw.target, sw.staging)] + ([(sw.rollback, sw.target)] if sw.rollback else [])
            with journal.step(
                "rename_back",
                intent={"renames": [list(p) for p in pairs]},
                undo={"renames": [[b, a] for a, b in reversed(pairs)]},
            ):
                self._renames(pairs, [(sw.target, sw.allow, sw.limit)] if sw.rollback else [])
        self.drop_copy(sw.staging)


@contextmanager
def server(
    target: PostgresTarget,
    avoid: set[str],
    *,
    timeout: float = 30.0,
    action: str = "connecting to the maintenance database",
) -> Iterator[Server]:
    """A :class:`Server` on a maintenance database that none of ``avoid`` names."""
    candidates = [d for d in dict.fromkeys([target.dbname, "postgres", "template1"]) if d not in avoid]
    last: Exception | None = None
    for db in candidates:
        try:
            conn = C.connect(target, db, action=action)
        except NotFoundError as exc:
            last = exc
            continue
        with conn:
            yield Server(target, conn, timeout=timeout)
        return
    raise NotFoundError(
        f"{target.label}: found no maintenance database to work from (tried {', '.join(candidates)}): {last}",
        hint="set the connection's database (schema) to one this restore does not replace",
    )


# --------------------------------------------------------------------------- replay


def recover(target: PostgresTarget, entry: ComponentEntry, *, timeout: float = 30.0) -> list[str]:
    """Finish or undo the interrupted PostgreSQL restore of ``entry`` (see the module docstring).

    Idempotent. Returns what it did, one line per action."""
    planned = entry.data.get("switches")
    items = entry.data.get("items", [])
    staging = list(dict.fromkeys([*entry.copies.get("staging", []), *(i["staging"] for i in items)]))
    forward = entry.roll_forward and bool(planned or items)
    renamed = {tuple(p) for s in entry.steps if s.name == "rename" for p in s.intent.get("renames", [])}
    done: list[str] = []
    avoid = (
        {i["target"] for i in items} | set(staging) | {d.get("rollback") for d in planned or [] if d.get("rollback")}
    )
    nothing = NullJournal(COMPONENT)
    with server(target, avoid, timeout=timeout, action="replaying an interrupted restore") as srv:
        if planned is not None:
            switches = [Switch.from_dict(d) for d in planned]
        else:  # killed after the copies verified, before the cut-over began: plan it now
            switches = [_switch_now(srv, i, entry.data.get("checkpoint_id", "")) for i in items] if forward else []
        for sw in switches:
            here, copy = srv.settings(sw.target), srv.settings(sw.staging)
            kept = srv.settings(sw.rollback) if sw.rollback else None
            switched = (
                (kept is not None)
                if sw.rollback
                else (copy is None and here is not None and (sw.staging, sw.target) in renamed)
            )
            if forward and not switched and copy is not None:
                if here is not None and sw.rollback is None:
                    raise CutoverError(
                        f"{target.label}/{sw.target}: the database appeared while it was being "
                        "restored; not replacing it",
                        hint=f"{sw.staging} holds the restored data: rename it by hand if wanted",
                    )
                srv.switch(sw, nothing)
                switched = True
                done.append(
                    f"finished the cut-over of {sw.target} (the previous data is kept as "
                    f"{sw.rollback or 'nothing: it did not exist'})"
                )
            elif forward and not switched:
                done.append(
                    f"{sw.target}: the side-by-side copy {sw.staging} is gone, so the cut-over cannot be "
                    "finished; the previous data stays in place"
                )
            elif not forward and switched:
                srv.switch_back(sw, nothing)
                switched = False
                done.append(
                    f"put the previous {sw.target} back"
                    if sw.rollback
                    else f"removed {sw.target}, which the interrupted restore had created"
                )
            live = srv.settings(sw.target)
            if live is not None and not live[0]:
                srv.set_connections(sw.target, True, sw.new_limit if switched else sw.limit)
                done.append(f"{sw.target} accepts connections again")
        for name in staging:
            if srv.drop_copy(name):
                done.append(f"dropped the side-by-side copy {name}")
    return done


def _switch_now(srv: Server, item: dict[str, Any], checkpoint_id: str) -> Switch:
    current = srv.settings(item["target"])
    if current is None:
        return Switch(item["target"], item["staging"], None, new_limit=int(item.get("new_limit", -1)))
    return Switch(
        item["target"],
        item["staging"],
        rollback_name(item["target"], checkpoint_id),
        allow=current[0],
        limit=current[1],
        new_limit=int(item.get("new_limit", -1)),
    )
