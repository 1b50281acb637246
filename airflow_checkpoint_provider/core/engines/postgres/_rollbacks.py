"""The rollback copies a restore keeps (``<db>__rollback_<ckpt>_<ts>``): list and drop them."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres._common import (
    log,
)
from airflow_checkpoint_provider.core.engines.postgres._names import (
    _ROLLBACK_RE,
    fit_name,
    is_rollback_name,
)
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import (
    EngineError,
    NotFoundError,
)


def _rollback_base(name: str, others: Any) -> str | None:
    """The database a rollback copy was taken of: an existing database whose rollback name this is,
    else the name's own prefix (which is shortened for long names)."""
    m = _ROLLBACK_RE.match(name)
    if not m:
        return None
    suffix = name[len(m.group("base")) :]
    for db in others:
        if db != name and not _ROLLBACK_RE.match(db) and fit_name(db, suffix) == name:
            return str(db)
    return m.group("base")


def list_rollbacks(target: PostgresTarget) -> list[dict[str, Any]]:
    """The rollback copies on the server, newest first: name, database, checkpoint (short id),
    created_at, size, sessions, allow_connections, database_exists."""
    with C.connect(target, action="listing rollback copies") as conn:
        try:
            rows = conn.execute("""
                SELECT d.datname, d.datallowconn,
                       CASE WHEN pg_catalog.has_database_privilege(d.datname, 'CONNECT')
                            THEN pg_catalog.pg_database_size(d.datname) END,
                       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a
                         WHERE a.datname OPERATOR(pg_catalog.=) d.datname)
                FROM pg_catalog.pg_database d ORDER BY 1""").fetchall()
        except psycopg.Error as exc:
            raise C.translate(exc, target, None, "listing rollback copies") from None
    names = [r[0] for r in rows]
    out = []
    for name, allow, size, sessions in rows:
        m = _ROLLBACK_RE.match(name)
        if not m:
            continue
        base = _rollback_base(name, names)
        ts = m.group("ts")
        out.append(
            {
                "name": name,
                "database": base,
                "database_exists": base in names,
                "checkpoint": m.group("ckpt"),
                "created_at": f"{ts[:4]}-{ts[4:6]}-{ts[6:8]}T{ts[8:10]}:{ts[10:12]}:{ts[12:14]}Z",
                "size": int(size) if size is not None else None,
                "sessions": int(sessions),
                "allow_connections": bool(allow),
            }
        )
    out.sort(key=lambda r: (r["created_at"], r["name"]), reverse=True)
    return out


def drop_rollback(target: PostgresTarget, name: str, *, force: bool = False) -> None:
    """Drop one rollback copy. Refuses names that are not rollback copies; ``force`` ends its sessions."""
    if not is_rollback_name(name):
        raise EngineError(
            f"{target.label}: {name!r} is not a rollback copy (those are named "
            "<db>__rollback_<checkpoint>_<yyyymmddhhmmss>); refusing to drop it",
            hint="list_rollbacks() shows the rollback copies",
        )
    with C.connect(target, action="dropping a rollback copy") as conn:
        try:
            row = conn.execute(
                "SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a "
                "WHERE a.datname = d.datname) FROM pg_catalog.pg_database d WHERE d.datname = %s",
                (name,),
            ).fetchone()
            if row is None:
                left = [r["name"] for r in list_rollbacks(target)]
                raise NotFoundError(
                    f"{target.label}: there is no rollback copy {name!r}",
                    hint=f"rollback copies: {', '.join(left)}" if left else "there are none",
                )
            if row[0] and not force:
                raise EngineError(
                    f"{target.label}: rollback copy {name!r} has {row[0]} open session(s)",
                    hint="close them, or pass force=True to terminate them",
                )
            num = C.server_version_num(conn)
            if force and num < 130000:
                conn.execute(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE datname = %s",
                    (name,),
                )
            query = sql.SQL("DROP DATABASE {}").format(sql.Identifier(name))
            if force and num >= 130000:
                query += sql.SQL(" WITH (FORCE)")
            conn.execute(query)
        except psycopg.Error as exc:
            err = C.translate(exc, target, name, f"dropping rollback copy {name}")
            raise EngineError(err.message, hint=err.hint) from None
    log.info("%s: dropped rollback copy %s", target.label, name)
