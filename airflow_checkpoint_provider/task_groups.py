"""``checkpoint_task_group``: drop a whole checkpoint into your own DAG, e.g. before a migration.

    from airflow_checkpoint_provider.task_groups import checkpoint_task_group

    with DAG("migrate_orders", ...):
        checkpoint = checkpoint_task_group(tags=["pre-migration"], pinned=True)
        migrate = SQLExecuteQueryOperator(task_id="migrate", ...)
        checkpoint >> migrate        # migrate runs only if the checkpoint sealed and verified

Inside the group the captures run in parallel (shrinking the window between stores),
then ``bundle`` seals, verifies and optionally marks the LKG, and ``discard_staging``
cleans up after a failed run. The group's result (checkpoint id) is the XCom of
``<group_id>.bundle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import TaskGroup

from airflow_checkpoint_provider.operators.bundle import BundleOperator, DiscardStagingOperator
from airflow_checkpoint_provider.operators.postgres import PgDumpOperator
from airflow_checkpoint_provider.operators.redis import RedisSnapshotOperator
from airflow_checkpoint_provider.operators.search import EsSnapshotOperator

COMPONENTS = ("postgres", "redis", "search")


def checkpoint_task_group(
    group_id: str = "checkpoint",
    *,
    components: Sequence[str] = COMPONENTS,
    postgres_conn_id: str = "postgres_default",
    redis_conn_id: str = "redis_default",
    elasticsearch_conn_id: str = "elasticsearch_default",
    databases: str | list[str] | None = None,
    redis_mode: str = "auto",
    search_repository: str = "checkpoints",
    search_repository_settings: dict[str, Any] | str | None = None,
    search_indices: str | list[str] | None = None,
    tags: Sequence[str] = (),
    pinned: bool | str = False,
    mark_lkg: bool | str = False,
    enabled: dict[str, Any] | None = None,
    storage_root: str | None = None,
    pg_options: dict[str, Any] | None = None,
    redis_options: dict[str, Any] | None = None,
    search_options: dict[str, Any] | None = None,
    **group_kwargs: Any,
) -> TaskGroup:
    """Build the capture -> bundle -> discard_staging group.

    :param components: which stores to capture (any of ``postgres``, ``redis``, ``search``).
    :param enabled: per component, a (templated) switch; a disabled capture is skipped at run time.
    :param tags: checkpoint tags; each also gets its own asset (``checkpoint/<tag>``).
    :param pinned: protect the checkpoint from retention.
    :param mark_lkg: move the LKG pointer once the checkpoint verified.
    """
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown component(s) {sorted(unknown)}; use {COMPONENTS}")
    enabled = enabled or {}
    with TaskGroup(group_id=group_id, **group_kwargs) as group:
        captures = []
        if "postgres" in components:
            captures.append(PgDumpOperator(task_id="pg_dump", postgres_conn_id=postgres_conn_id,
                                           databases=databases, storage_root=storage_root,
                                           enabled=enabled.get("postgres", True), **(pg_options or {})))
        if "redis" in components:
            captures.append(RedisSnapshotOperator(task_id="redis_snapshot", redis_conn_id=redis_conn_id,
                                                  mode=redis_mode, storage_root=storage_root,
                                                  enabled=enabled.get("redis", True), **(redis_options or {})))
        if "search" in components:
            captures.append(EsSnapshotOperator(task_id="search_snapshot", elasticsearch_conn_id=elasticsearch_conn_id,
                                               repository=search_repository,
                                               repository_settings=search_repository_settings,
                                               indices=search_indices, storage_root=storage_root,
                                               enabled=enabled.get("search", True), **(search_options or {})))
        bundle = BundleOperator(task_id="bundle", tags=list(tags), pinned=pinned, mark_lkg=mark_lkg,
                                storage_root=storage_root, trigger_rule="none_failed_min_one_success")
        discard = DiscardStagingOperator(task_id="discard_staging", storage_root=storage_root)
        captures >> bundle >> discard.as_teardown()  # teardown: never what `group >> next` waits on
    return group
