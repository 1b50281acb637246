"""The one place where workflow checkpoints reach the engines, all through the registry: each
engine's own capture operator captures a step's data, the ``RestoreOperator``'s builder restores
it, and the PostgreSQL hook opens the PostgreSQL workflow store.

* :func:`capture` -- one engine's capture into a staging area, as its capture task would do it;
* :func:`restore_builder` -- the component restores of a checkpoint, built exactly as the
  ``RestoreOperator`` builds them (for :func:`core.recovery.restore`);
* :func:`pg_connect` -- a psycopg connection for the PostgreSQL workflow store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_checkpoint_provider import engines as registered
from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.core.store import Store

if TYPE_CHECKING:
    from airflow.sdk import Context


def capture(
    name: str, conn_id: str, staging: Staging, *, names: Sequence[str] | None, context: Context, store: Store
) -> list[Artifact]:
    """Capture ``names`` (its ``names_option``: databases, indices; None: everything) of engine ``name``
    through its capture operator: heal interrupted restores, wait for running ones, drop leftovers, capture."""
    engine = registered.engines()[name]
    cls = registered.operator_class(name)
    kwargs: dict[str, Any] = {engine.conn_param: conn_id}
    if names and cls.names_option:
        kwargs[cls.names_option] = list(names)
    operator = cls(task_id=f"workflow_data_{name}", **kwargs)
    target = operator.target()
    operator.before_capture(context, store, target)
    return operator.capture(staging, target)


def restore_builder(conn_ids: dict[str, str], *, storage_root: str | None = None) -> Callable[..., list[Any]]:
    """``build(store, manifest, request)`` of :func:`core.recovery.restore`: the RestoreOperator's own."""
    from airflow_checkpoint_provider.operators.restore import RestoreOperator

    repository = settings.search_repository_settings()
    operator = RestoreOperator(
        task_id="workflow_restore_data",
        conn_ids=conn_ids,
        storage_root=storage_root,
        search_options={"repository_settings": repository} if repository else None,
    )
    return operator.build


def pg_connect(conn_id: str) -> tuple[Callable[[], Any], str, Any]:
    """A connection factory for the PostgreSQL workflow store, its label, and the target."""
    from airflow_checkpoint_provider.core.engines.postgres._conn import connect
    from airflow_checkpoint_provider.hooks.postgres import PgCheckpointHook

    tgt = PgCheckpointHook(postgres_conn_id=conn_id).target()
    return (
        lambda: connect(tgt, autocommit=True, action="opening the workflow checkpoint store"),
        f"{tgt.label}/{tgt.dbname}",
        tgt,
    )
