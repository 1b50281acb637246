"""The registered engines as the Airflow layer sees them: targets from connections, and operators.

:mod:`.core.engines.registry` lists the engines; this module turns an Airflow connection id into
an engine's target, and finds each engine's capture operator (which also declares the engine's
trigger-form Params and how the ready-made DAGs pass them on).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.engines.contract import ConnectionInfo, Engine

if TYPE_CHECKING:
    from airflow_checkpoint_provider.operators.base import CaptureOperator


def engines() -> dict[str, Engine]:
    return registry.engines()


def names() -> tuple[str, ...]:
    return registry.names()


def connection_info(conn_id: str) -> ConnectionInfo:
    """The Airflow connection ``conn_id`` as plain data (raises AirflowNotFoundException if undefined)."""
    from airflow_checkpoint_provider.hooks.lookup import get_connection

    return info_of(get_connection(conn_id), conn_id)


def info_of(conn: Any, conn_id: str) -> ConnectionInfo:
    """An Airflow ``Connection`` as the plain data the engines take."""
    return ConnectionInfo(
        conn_id=conn_id,
        conn_type=conn.conn_type or "",
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        schema=conn.schema,
        extra=dict(conn.extra_dejson or {}),
    )


def target(name: str, conn_id: str) -> Any:
    """The target of engine ``name`` from Airflow connection ``conn_id``."""
    return registry.get(name).target_from_connection(connection_info(conn_id))


def build_restores(
    store: Any, manifest: Any, request: Any, target_of: Any, options: dict[str, dict[str, Any]] | None = None
) -> list[Any]:
    """One component restore per requested store the checkpoint holds, in registry order (a
    :data:`~.core.recovery.Builder` body): ``target_of(name)`` gives each engine's target."""
    from airflow_checkpoint_provider.core.rollbacks import RollbackPolicy

    parts: list[Any] = []
    policy = RollbackPolicy.parse(request.rollback_keep)  # also what may be reclaimed when space runs short
    for name, engine in engines().items():
        artifacts = engine.artifacts_of(manifest.artifacts)
        if name not in request.components or not artifacts:
            continue
        parts.append(
            engine.restore(
                target_of(name),
                store,
                manifest.checkpoint_id,
                artifacts,
                mode=request.mode,
                rollback_policy=policy,
                **(options or {}).get(name, {}),
            )
        )
    return parts


def default_conn_id(engine: Engine) -> str:
    """``[checkpoint] <conn_param>`` when the provider declares that option, else the engine's default."""
    from airflow_checkpoint_provider import settings

    return settings.option(engine.conn_param, engine.default_conn_id)


@cache
def operator_class(name: str) -> type[CaptureOperator]:
    """The capture operator of engine ``name``."""
    module, _, attr = registry.get(name).operator.partition(":")
    return getattr(importlib.import_module(module), attr)


def take_engine_kwargs(kwargs: dict[str, Any], mapping: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Pop from ``kwargs`` every engine's connection argument and the engine-specific keywords that
    its capture operator lists in ``mapping`` (``group_options`` or ``restore_kwargs``).

    Returns ``(conn_ids, options)``: ``{"postgres": "pg_prod"}`` and ``{"postgres": {"databases": ...}}``.
    A mapping target ``"*"`` merges a dict (e.g. ``pg_options``) into the engine's options.
    """
    conn_ids: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    for name, engine in engines().items():
        if engine.conn_param in kwargs:
            conn_ids[name] = kwargs.pop(engine.conn_param)
        for key, option in getattr(operator_class(name), mapping).items():
            if key not in kwargs or key == engine.conn_param:
                continue
            value = kwargs.pop(key)
            if option == "*":
                options.setdefault(name, {}).update(value or {})
            elif value is not None:
                options.setdefault(name, {})[option] = value
    return conn_ids, options


def merge_options(*layers: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for name, opts in (layer or {}).items():
            out.setdefault(name, {}).update(opts or {})
    return out
