"""Trigger-form Params shared by the ready-made DAGs, and how they feed the tasks.

Every field a user may leave empty is nullable (``type=["null", ...]``, default None): the
Airflow 3 trigger form treats a non-nullable field whose value is empty as missing and
greys out the Trigger button. Every field has a title and a description.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.task_groups import COMPONENTS

COMPONENT_LABELS = {"postgres": "PostgreSQL", "redis": "Redis", "search": "Elasticsearch / OpenSearch"}
#: the longest Redis write fence a run may ask for, in seconds
MAX_REDIS_FENCE_S = 300


def components_param(verb: str) -> Param:
    """A multi-select of the stores (the form renders an array with ``examples`` as one)."""
    return Param(list(COMPONENTS), type="array", items={"type": "string", "enum": list(COMPONENTS)},
                 examples=list(COMPONENTS), values_display=COMPONENT_LABELS, minItems=1, uniqueItems=True,
                 title="Components", description=f"Which stores to {verb}.")


def optional_text(title: str, description: str, default: str | None = None) -> Param:
    return Param(default, type=["null", "string"], title=title, description=description)


def optional_list(title: str, description: str) -> Param:
    """A nullable list of strings (one per line in the form)."""
    return Param(None, type=["null", "array"], items={"type": "string"}, title=title, description=description)


def capture_params(*, mark_lkg: bool = True) -> dict[str, Param]:
    return {
        "components": components_param("capture"),
        "databases": optional_text(
            "PostgreSQL databases",
            "Comma-separated database names, or 'all' (or empty) for every connectable database.", "all"),
        "redis_mode": Param("auto", type="string", enum=["auto", "rdb", "logical"], title="Redis capture mode",
                            description="rdb: point-in-time RDB over replication; logical: SCAN+DUMP (managed "
                                        "services); auto: rdb, falling back to logical when SYNC is refused."),
        "redis_fence": Param(
            None, type=["null", "number"], minimum=0, maximum=MAX_REDIS_FENCE_S, title="Redis write fence (seconds)",
            description="Hold Redis writes with CLIENT PAUSE WRITE while the capture takes its point in time "
                        "(rdb: until the server forked its snapshot; logical: the whole SCAN). Reads go on. The "
                        f"value is the bound: writers wait at most this long (up to {MAX_REDIS_FENCE_S}), even "
                        "if the capture dies mid-fence. Empty or 0: no fence."),
        "search_indices": optional_text("Search indices",
                                        "Comma-separated indices or patterns; empty for every non-hidden index."),
        "mark_lkg": Param(mark_lkg, type="boolean", title="Mark last-known-good",
                          description="Move the LKG pointer to this checkpoint once it verified."),
        **connection_params(),
    }


def connection_params(prefix: str = "") -> dict[str, Param]:
    """The three connection ids, defaulting to the ``[checkpoint]`` options."""
    where = "to restore into" if prefix else "to checkpoint"
    return {
        "postgres_conn_id": Param(
            settings.postgres_conn_id(), type="string", minLength=1, title=f"{prefix}PostgreSQL connection id",
            description=f"Airflow connection (type postgres) of the PostgreSQL server {where}. "
                        "Default: [checkpoint] postgres_conn_id."),
        "redis_conn_id": Param(
            settings.redis_conn_id(), type="string", minLength=1, title=f"{prefix}Redis connection id",
            description=f"Airflow connection (type redis) of the Redis server {where}. "
                        "Default: [checkpoint] redis_conn_id."),
        "elasticsearch_conn_id": Param(
            settings.elasticsearch_conn_id(), type="string", minLength=1,
            title=f"{prefix}Elasticsearch/OpenSearch connection id",
            description=f"Airflow connection (type elasticsearch) of the search cluster {where}. "
                        "Default: [checkpoint] elasticsearch_conn_id."),
    }


def restore_params() -> dict[str, Param]:
    """Params of both restore DAGs."""
    return {
        "components": components_param("restore"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Only print the plan: what would be replaced and the conflicts. Changes "
                                     "nothing, drains nothing; a plan with problems still fails the run."),
        "safety_checkpoint": Param(True, type="boolean", title="Safety checkpoint",
                                   description="Checkpoint the current state before replacing it."),
        "pause_capture_dags": Param(
            True, type="boolean", title="Pause the capture DAGs",
            description="Pause checkpoint_scheduled, checkpoint_pre_migration and checkpoint_pre_deploy during "
                        "the restore, so no checkpoint of a half-restored state is taken, and unpause them "
                        "afterwards (also when the restore fails). A DAG that was already paused stays paused."),
        "pause_dags": optional_list("Other DAGs to pause",
                                    "More DAG ids (one per line) paused during the restore and unpaused after it."),
        "search_repository_location": optional_text(
            "Search repository location",
            "Filesystem location of the snapshot repository on the target cluster (listed in its path.repo), "
            "used to register the repository when the target does not have it yet, e.g. a new cluster. "
            "Default: [checkpoint] search_repository_location; empty: the repository must exist.",
            settings.search_repository_location()),
        **connection_params("Target "),
    }


def group_kwargs_from_params() -> dict[str, Any]:
    """Task-group arguments templated on the capture Params (the DAG renders native objects)."""
    return {
        "postgres_conn_id": "{{ params.postgres_conn_id }}",
        "redis_conn_id": "{{ params.redis_conn_id }}",
        "elasticsearch_conn_id": "{{ params.elasticsearch_conn_id }}",
        "databases": "{{ params.databases or 'all' }}",
        "redis_mode": "{{ params.redis_mode }}",
        "redis_options": {"pause_writes": "{{ params.redis_fence or False }}"},
        "search_indices": "{{ params.search_indices or None }}",
        "search_repository": settings.search_repository(),
        "search_repository_settings": settings.search_repository_settings(),
        "mark_lkg": "{{ params.mark_lkg }}",
        "enabled": {c: "{{ '%s' in params.components }}" % c for c in COMPONENTS},
    }


#: RestoreOperator's ``search_options``: register the repository from the form's location, if any
SEARCH_OPTIONS_FROM_PARAMS = {
    "repository_settings": "{{ {'type': 'fs', 'settings': {'location': params.search_repository_location}} "
                           "if params.search_repository_location else None }}",
}
