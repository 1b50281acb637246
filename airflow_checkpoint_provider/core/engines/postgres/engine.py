"""The PostgreSQL engine's record in the registry (see :mod:`..contract`)."""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider.core.engines.contract import ConnectionInfo, Engine
from airflow_checkpoint_provider.core.engines.postgres import (
    _conn,
    _cutover,
    _names,
    _rollbacks,
)
from airflow_checkpoint_provider.core.engines.postgres.capture import (
    KIND_CUSTOM,
    KIND_DIRECTORY,
    STORE,
    capture,
    fingerprint,
)
from airflow_checkpoint_provider.core.engines.postgres.deep import deep_check
from airflow_checkpoint_provider.core.engines.postgres.health import health as pg_health
from airflow_checkpoint_provider.core.engines.postgres.restore import PostgresRestore
from airflow_checkpoint_provider.core.engines.targets import (
    LIBPQ_SSL_OPTIONS,
    PostgresTarget,
)
from airflow_checkpoint_provider.core.journal import ComponentEntry
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.rollbacks import RollbackCopy, normal_ts
from airflow_checkpoint_provider.core.values import as_dict, as_list, flag


def target_from_connection(info: ConnectionInfo) -> PostgresTarget:
    """An Airflow ``postgres`` connection: host, port, login, password, schema (the maintenance
    database), and the extra's ``sslmode``, the other libpq TLS options and ``connect_timeout``."""
    extra = info.extra
    return PostgresTarget(
        host=info.host or "localhost",
        port=int(info.port or 5432),
        user=info.login or "postgres",
        password=info.password or None,
        dbname=info.schema or "postgres",
        sslmode=extra.get("sslmode") or None,
        connect_timeout=int(extra.get("connect_timeout", 10)),
        ssl={k: v for k, v in extra.items() if k in LIBPQ_SSL_OPTIONS and v not in (None, "")},
    )


def restore(
    target: PostgresTarget,
    store: Any,
    checkpoint_id: str,
    artifacts: list[Artifact],
    *,
    databases: Any = None,
    rename: Any = None,
    jobs: Any = 1,
    no_owner: Any = True,
    no_privileges: Any = False,
    rollback_policy: Any = None,
    **options: Any,
) -> PostgresRestore:
    """:class:`PostgresRestore` from options as templates deliver them (comma-separated names,
    JSON objects, "True"); ``rollback_policy`` is applied by the orchestration after the restore."""
    return PostgresRestore(
        target,
        store,
        checkpoint_id,
        artifacts,
        databases=as_list(databases),
        rename=as_dict(rename),
        jobs=int(jobs),
        no_owner=flag(no_owner),
        no_privileges=flag(no_privileges),
        **options,
    )


def expectations(artifacts: list[Artifact], options: dict[str, Any]) -> dict[str, Any]:
    """Row counts per table of every database, under its restored name (``options["rename"]``)."""
    rename = as_dict(options.get("rename"))
    dbs = {}
    for art in artifacts:
        db = str(art.meta.get("database"))
        dbs[rename.get(db, db)] = {
            "rows": art.fingerprints.get("rows", {}),
            "row_counts": art.fingerprints.get("row_counts", "exact"),
        }
    return {"databases": dbs}


def rollbacks(target: PostgresTarget, store: Any = None) -> list[RollbackCopy]:
    return [
        RollbackCopy("postgres", r["name"], r["database"], r["checkpoint"], normal_ts(r["created_at"]), size=r["size"])
        for r in _rollbacks.list_rollbacks(target)
    ]


def drop_rollback(target: PostgresTarget, name: str, store: Any = None) -> None:
    _rollbacks.drop_rollback(target, name, force=True)


def leftovers(
    target: PostgresTarget, store: Any, live: set[str], protected: set[str], dry_run: bool, **options: Any
) -> list[str]:
    """``<db>__restoring`` and ``<db>__drill_<id>`` databases that no running restore or drill owns."""
    with _conn.connect(target, action="listing side-by-side copies") as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_catalog.pg_database").fetchall()]
    doomed = [n for n in names if _names.is_side_copy(n) and n not in protected]
    if doomed and not dry_run:
        with _cutover.server(target, set(doomed), action="dropping side-by-side copies") as srv:
            for name in doomed:
                srv.drop_copy(name)
    return [f"postgres database {n}" for n in doomed]


def health(target: PostgresTarget, expected: dict[str, Any], tolerance: float = 0.0) -> list[Any]:
    return pg_health(target, expected, tolerance=tolerance)


def _recover(target: PostgresTarget, entry: ComponentEntry, store: Any = None) -> list[str]:
    return _cutover.recover(target, entry)


ENGINE = Engine(
    name=STORE,
    title="PostgreSQL",
    kinds=(KIND_CUSTOM, KIND_DIRECTORY),
    conn_param="postgres_conn_id",
    default_conn_id="postgres_default",
    conn_types=("postgres",),
    operator="airflow_checkpoint_provider.operators.postgres:PgDumpOperator",
    target_from_connection=target_from_connection,
    capture=capture,
    fingerprint=fingerprint,
    restore=restore,
    health=health,
    expectations=expectations,
    recover=_recover,
    rollbacks=rollbacks,
    drop_rollback=drop_rollback,
    leftovers=leftovers,
    is_own_copy=_names.is_own_copy,
    server_version=_conn.server_version,
    deep_check=deep_check,
)
