"""The one place where workflow checkpoints reach the engines: everything else in this package
goes through these few functions, so that they are easy to re-point when the engines move.

* :func:`target` -- an engine target from an Airflow connection (through the provider's hooks);
* :func:`capture` -- one component's capture into a staging area (the engines' public ``capture``);
* :func:`restore_builder` -- the component restores of a checkpoint, built exactly as the
  ``RestoreOperator`` builds them (for :func:`core.recovery.restore`);
* :func:`pg_connect` -- a psycopg connection for the PostgreSQL workflow store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.staging import Staging

COMPONENTS = ("postgres", "redis", "search")


def target(component: str, conn_id: str) -> Any:
    """The engine target of ``component`` for the Airflow connection ``conn_id``."""
    if component == "postgres":
        from airflow_checkpoint_provider.hooks.postgres import PgCheckpointHook

        return PgCheckpointHook(postgres_conn_id=conn_id).target()
    if component == "redis":
        from airflow_checkpoint_provider.hooks.redis import RedisCheckpointHook

        return RedisCheckpointHook(redis_conn_id=conn_id).target()
    from airflow_checkpoint_provider.hooks.search import SearchCheckpointHook

    return SearchCheckpointHook(elasticsearch_conn_id=conn_id).target()


def capture(component: str, tgt: Any, staging: Staging, *, names: Sequence[str] | None) -> list[Artifact]:
    """Capture ``names`` (databases, or index patterns; None: everything) of ``component`` into ``staging``."""
    level = settings.compression_level()
    if component == "postgres":
        from airflow_checkpoint_provider.core.engines import postgres

        return postgres.capture(tgt, staging, databases=list(names) if names else None, compression_level=level)
    if component == "redis":
        from airflow_checkpoint_provider.core.engines import redis

        return redis.capture(tgt, staging, mode="auto", compression_level=level)
    from airflow_checkpoint_provider.core.engines import search

    return search.capture(tgt, staging, repository=settings.search_repository(),
                          repository_settings=settings.search_repository_settings(),
                          indices=list(names) if names else None)


def restore_builder(conn_ids: dict[str, str], *, databases: Sequence[str] | None = None,
                    indices: Sequence[str] | None = None, storage_root: str | None = None) -> Callable[..., list]:
    """``build(store, manifest, request)`` of :func:`core.recovery.restore`: the RestoreOperator's own."""
    from airflow_checkpoint_provider.operators.restore import RestoreOperator

    operator = RestoreOperator(
        task_id="workflow_restore_data", postgres_conn_id=conn_ids.get("postgres", settings.postgres_conn_id()),
        redis_conn_id=conn_ids.get("redis", settings.redis_conn_id()),
        elasticsearch_conn_id=conn_ids.get("search", settings.elasticsearch_conn_id()),
        databases=list(databases) if databases else None, indices=list(indices) if indices else None,
        storage_root=storage_root,
        search_options={"repository_settings": settings.search_repository_settings()}
        if settings.search_repository_settings() else None)
    return operator.build


def pg_connect(conn_id: str) -> tuple[Callable[[], Any], str, Any]:
    """A connection factory for the PostgreSQL workflow store, its label, and the target."""
    from airflow_checkpoint_provider.core.engines.postgres._conn import connect

    tgt = target("postgres", conn_id)
    return (lambda: connect(tgt, autocommit=True, action="opening the workflow checkpoint store"),
            f"{tgt.label}/{tgt.dbname}", tgt)
