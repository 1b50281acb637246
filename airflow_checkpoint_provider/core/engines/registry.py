"""The engine registry: which data stores this provider can checkpoint, by name.

Built-in engines are listed in :data:`BUILTIN`, one line each. Other distributions add theirs
through the entry point group ``airflow_checkpoint_provider.engines``, whose value is the
``module:ENGINE`` of an :class:`~.contract.Engine`::

    [project.entry-points."airflow_checkpoint_provider.engines"]
    files = "my_package.files_engine:ENGINE"

Everything that used to list engines by hand reads :func:`engines` instead: the restore
orchestration, the replay, rollback retention, leftovers, the operators, the health sensor,
the task group, the DAG Params, the CLI, and the test that checks docs/FORMAT.md.
"""

from __future__ import annotations

import importlib
import logging
from functools import cache
from importlib.metadata import entry_points

from airflow_checkpoint_provider.core.engines.contract import Engine
from airflow_checkpoint_provider.core.errors import CheckpointError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "airflow_checkpoint_provider.engines"

#: name -> ``module:attribute`` of the built-in engines, in capture and restore order (search last:
#: its restore depends on nothing else, and its snapshot is the slowest to take)
BUILTIN: dict[str, str] = {
    "postgres": "airflow_checkpoint_provider.core.engines.postgres.engine:ENGINE",
    "redis": "airflow_checkpoint_provider.core.engines.redis.engine:ENGINE",
    "search": "airflow_checkpoint_provider.core.engines.search.engine:ENGINE",
    "files": "airflow_checkpoint_provider.core.engines.files.engine:ENGINE",
}


def _load(path: str) -> Engine:
    module, _, attr = path.partition(":")
    engine = getattr(importlib.import_module(module), attr)
    if not isinstance(engine, Engine):
        raise CheckpointError(f"{path} is not an Engine record", hint="see core/engines/contract.py")
    return engine


@cache
def engines() -> dict[str, Engine]:
    """Every registered engine, by name: the built-in ones, then those of entry points."""
    out = {name: _load(path) for name, path in BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in out:
            log.warning("Engine entry point %s=%s ignored: %r is already registered", ep.name, ep.value, ep.name)
            continue
        try:
            engine = ep.load()
        except Exception as exc:
            log.error("Engine entry point %s=%s cannot be loaded: %s", ep.name, ep.value, exc)
            continue
        if isinstance(engine, Engine) and engine.name == ep.name:
            out[ep.name] = engine
        else:
            log.error("Engine entry point %s=%s is not an Engine named %r", ep.name, ep.value, ep.name)
    return out


def names() -> tuple[str, ...]:
    return tuple(engines())


def get(name: str) -> Engine:
    """The engine called ``name``; an unknown name is refused with the known ones as the hint."""
    found = engines().get(name)
    if found is None:
        raise CheckpointError(f"unknown component {name!r}", hint=f"choose among {', '.join(names())}")
    return found


def of_artifact(store: str) -> Engine | None:
    return engines().get(store)
