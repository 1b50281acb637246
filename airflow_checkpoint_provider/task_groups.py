"""``checkpoint_task_group``: drop a whole checkpoint into your own DAG, e.g. before a migration.

    from airflow_checkpoint_provider.task_groups import checkpoint_task_group

    with DAG("migrate_orders", ...):
        checkpoint = checkpoint_task_group(tags=["pre-migration"], pinned=True)
        migrate = SQLExecuteQueryOperator(task_id="migrate", ...)
        checkpoint >> migrate        # migrate runs only if the checkpoint sealed and verified

Inside the group one capture per registered engine runs in parallel (shrinking the window
between stores), then ``bundle`` seals, verifies and optionally marks the LKG, and
``discard_staging`` cleans up after a failed run. The group's result (checkpoint id) is the
XCom of ``<group_id>.bundle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import TaskGroup

from airflow_checkpoint_provider import engines
from airflow_checkpoint_provider.operators.bundle import BundleOperator, DiscardStagingOperator


def checkpoint_task_group(
    group_id: str = "checkpoint",
    *,
    components: Sequence[str] | None = None,
    conn_ids: dict[str, str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    tags: Sequence[str] = (),
    pinned: bool | str = False,
    mark_lkg: bool | str = False,
    enabled: dict[str, Any] | None = None,
    storage_root: str | None = None,
    deployment: dict[str, Any] | str | None = None,
    queues: dict[str, str] | None = None,
    **kwargs: Any,
) -> TaskGroup:
    """Build the captures -> bundle -> discard_staging group.

    :param components: which stores to capture (default: every registered engine).
    :param conn_ids: ``{component: Airflow connection id}``; each engine's own argument works too
        (``postgres_conn_id=``, ``redis_conn_id=``, ``elasticsearch_conn_id=``).
    :param options: ``{component: {...}}``: arguments of that engine's capture operator. The
        engines' shorthand arguments work too: ``databases``, ``pg_options``, ``redis_mode``,
        ``redis_options``, ``search_indices``, ``search_repository``, ``search_repository_settings``,
        ``search_options``.
    :param enabled: per component, a (templated) switch; a disabled capture is skipped at run time.
    :param tags: checkpoint tags; each also gets its own asset (``checkpoint/<tag>``).
    :param pinned: protect the checkpoint from retention.
    :param mark_lkg: move the LKG pointer once the checkpoint verified.
    :param deployment: the deployment's config files, environment variable names and dependencies
        the config hash covers (BundleOperator's ``deployment``; templated).
    :param queues: ``{component or "bundle": executor queue}``, e.g. to capture each store on a
        Celery worker near it; the workers must share the checkpoint store. The manifest records
        which worker captured each artifact (``provenance.captured_on``).

    Other keyword arguments go to the TaskGroup.
    """
    registered = engines.names()
    chosen = list(components) if components is not None else list(registered)
    unknown = set(chosen) - set(registered)
    if unknown:
        raise ValueError(f"unknown component(s) {sorted(unknown)}; use {registered}")
    legacy_conn_ids, legacy_options = engines.take_engine_kwargs(kwargs, "group_options")
    conn_ids = {**legacy_conn_ids, **(conn_ids or {})}
    options = engines.merge_options(legacy_options, options)
    enabled = enabled or {}
    queues = queues or {}
    unknown = set(queues) - set(registered) - {"bundle"}
    if unknown:
        raise ValueError(f"queues for unknown component(s) {sorted(unknown)}; use {registered} or 'bundle'")
    with TaskGroup(group_id=group_id, **kwargs) as group:
        captures = []
        for name in registered:
            if name not in chosen:
                continue
            engine, cls = engines.engines()[name], engines.operator_class(name)
            captures.append(
                cls(
                    task_id=cls.task_name,
                    storage_root=storage_root,
                    enabled=enabled.get(name, True),
                    **({"queue": queues[name]} if name in queues else {}),
                    **{engine.conn_param: conn_ids.get(name) or engines.default_conn_id(engine)},
                    **options.get(name, {}),
                )
            )
        bundle_queue: dict[str, Any] = {"queue": queues["bundle"]} if "bundle" in queues else {}
        bundle = BundleOperator(
            task_id="bundle",
            tags=list(tags),
            pinned=pinned,
            mark_lkg=mark_lkg,
            storage_root=storage_root,
            deployment=deployment,
            trigger_rule="none_failed_min_one_success",
            **bundle_queue,
        )
        discard = DiscardStagingOperator(
            task_id="discard_staging",
            storage_root=storage_root,
            **bundle_queue,
        )
        captures >> bundle >> discard.as_teardown()  # teardown: never what `group >> next` waits on
    return group
