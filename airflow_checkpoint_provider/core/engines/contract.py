"""The engine contract: everything the provider needs from one kind of data store.

An :class:`Engine` is a plain record of functions. The orchestration (capture, seal, restore,
replay, health, rollback retention), the operators, the DAG Params, the CLI and the docs read
engines from the registry (:mod:`.registry`); none of them names one. Adding a data store
means writing one package under ``core/engines/`` (or a separate distribution, through the
``airflow_checkpoint_provider.engines`` entry point group) and one registry line.

Every function takes the engine's own *target* (host, port, credentials: a frozen dataclass
with ``label`` and ``public()``), built from a plain connection record by
:attr:`Engine.target_from_connection`, so that the core never sees Airflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.journal import ComponentEntry
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.restore import HealthCheck
from airflow_checkpoint_provider.core.rollbacks import RollbackCopy
from airflow_checkpoint_provider.core.staging import Staging


@dataclass(frozen=True)
class ConnectionInfo:
    """An Airflow connection, as plain data: what ``target_from_connection`` reads."""

    conn_id: str
    conn_type: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Engine:
    """One data store's implementation of the provider (see the module docstring).

    :param name: the component name in manifests, Params, the CLI and lease keys (``postgres``).
    :param title: what the UI calls it (``PostgreSQL``).
    :param kinds: the artifact kinds it writes; a checkpoint's artifacts of these kinds are its.
    :param conn_types: Airflow connection types it reads (the first is the default's).
    :param default_conn_id: the connection id used when none is given.
    :param target_from_connection: ``ConnectionInfo -> target``.
    :param capture: ``(target, staging, **options) -> [Artifact]``: stream the store into staging.
    :param restore: ``(target, store, checkpoint_id, artifacts, **options) -> ComponentRestore``.
    :param health: ``(target, expectations, *, tolerance) -> [HealthCheck]``.
    :param expectations: ``(artifacts) -> expectations`` a health check compares with.
    :param recover: ``(target, journal entry) -> [what it did]``: replay an interrupted restore.
    :param rollbacks: ``target -> [RollbackCopy]``; ``drop_rollback(target, name)`` drops one.
    :param is_own_copy: whether a database/db/index name is one of the provider's own copies.
    :param compatibility: ``(artifact, server_version) -> [problems]``: can this server take it.
    :param server_version: ``target -> str``.
    """

    name: str
    title: str
    kinds: tuple[str, ...]
    conn_types: tuple[str, ...]
    default_conn_id: str
    target_from_connection: Callable[[ConnectionInfo], Any]
    capture: Callable[..., list[Artifact]]
    restore: Callable[..., Any]
    health: Callable[..., list[HealthCheck]]
    expectations: Callable[[list[Artifact]], dict[str, Any]]
    recover: Callable[[Any, ComponentEntry], list[str]]
    rollbacks: Callable[[Any], list[RollbackCopy]]
    drop_rollback: Callable[[Any, str], None]
    is_own_copy: Callable[[str], bool]
    server_version: Callable[[Any], str]
    compatibility: Callable[[Artifact, str], list[str]] = lambda artifact, server: []

    def owns(self, artifact: Artifact) -> bool:
        return artifact.store == self.name and artifact.kind in self.kinds

    def artifacts_of(self, artifacts: list[Artifact]) -> list[Artifact]:
        return [a for a in artifacts if self.owns(a)]


#: the signature of :attr:`Engine.capture`, for type checkers
Capture = Callable[..., list[Artifact]]
__all__ = ["Capture", "ConnectionInfo", "Engine", "Staging"]
