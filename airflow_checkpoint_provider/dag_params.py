"""Trigger-form Params shared by the ready-made DAGs, and how they feed the task group."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.task_groups import COMPONENTS


def capture_params(*, mark_lkg: bool = True) -> dict[str, Param]:
    return {
        "components": Param(list(COMPONENTS), type="array", items={"type": "string", "enum": list(COMPONENTS)},
                            title="Components", description="Which stores to capture."),
        "databases": Param("all", type="string", title="PostgreSQL databases",
                           description="Comma-separated database names, or 'all' for every connectable database."),
        "redis_mode": Param("auto", type="string", enum=["auto", "rdb", "logical"], title="Redis capture mode",
                            description="rdb: point-in-time RDB over replication; logical: SCAN+DUMP (managed "
                                        "services); auto: rdb, falling back to logical when SYNC is refused."),
        "search_indices": Param("", type="string", title="Search indices",
                                description="Comma-separated indices or patterns; empty for every non-hidden index."),
        "mark_lkg": Param(mark_lkg, type="boolean", title="Mark last-known-good",
                          description="Move the LKG pointer to this checkpoint once it verified."),
        **connection_params(),
    }


def connection_params(prefix: str = "") -> dict[str, Param]:
    """The three connection ids, defaulting to the ``[checkpoint]`` options."""
    return {
        "postgres_conn_id": Param(settings.postgres_conn_id(), type="string",
                                  title=f"{prefix}PostgreSQL connection id"),
        "redis_conn_id": Param(settings.redis_conn_id(), type="string", title=f"{prefix}Redis connection id"),
        "elasticsearch_conn_id": Param(settings.elasticsearch_conn_id(), type="string",
                                       title=f"{prefix}Elasticsearch/OpenSearch connection id"),
    }


def group_kwargs_from_params() -> dict[str, Any]:
    """Task-group arguments templated on the Params above (the DAG renders native objects)."""
    return {
        "postgres_conn_id": "{{ params.postgres_conn_id }}",
        "redis_conn_id": "{{ params.redis_conn_id }}",
        "elasticsearch_conn_id": "{{ params.elasticsearch_conn_id }}",
        "databases": "{{ params.databases }}",
        "redis_mode": "{{ params.redis_mode }}",
        "search_indices": "{{ params.search_indices or None }}",
        "search_repository": settings.search_repository(),
        "search_repository_settings": settings.search_repository_settings(),
        "mark_lkg": "{{ params.mark_lkg }}",
        "enabled": {c: "{{ '%s' in params.components }}" % c for c in COMPONENTS},
    }
