"""The engine contract: everything the provider needs from one kind of data store.

An :class:`Engine` is a plain record of functions. The orchestration (capture, restore, replay,
health, rollback retention, leftovers), the operators, the sensor, the task group, the DAG
Params, the CLI and docs/FORMAT.md read engines from the registry (:mod:`.registry`); none of
them names one. Adding a data store means one package under ``core/engines/`` (or a separate
distribution, through the ``airflow_checkpoint_provider.engines`` entry point group), its
operator, and one registry line.

Every function takes the engine's own *target* (host, port, credentials: a frozen dataclass
with ``label`` and ``public()``), which :attr:`Engine.target_from_connection` builds from a
plain :class:`ConnectionInfo`, so the core never sees Airflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.manifest import Artifact


@dataclass(frozen=True)
class ConnectionInfo:
    """An Airflow connection, as plain data: what ``target_from_connection`` reads."""

    conn_id: str
    conn_type: str = ""
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


def _no_problems(artifact: Artifact, server_version: str) -> list[str]:
    return []


@dataclass
class DeepCheck:
    """What an engine's deep check of its artifacts found (``deep`` verification, core/levels.py).

    ``problems``: ``(subject, detail)`` pairs, each a sign the checkpoint is damaged or forged;
    ``evidence``: what was checked (counts, tool output sizes; ``external_bytes``: the size of
    data the checkpoint keeps outside the archive, e.g. a search snapshot); ``unchecked``: why a
    part could not be checked at all (no connection, a server that does not answer), which is
    not damage: the checkpoint stays at its previous level.
    """

    problems: list[tuple[str, str]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Engine:
    """One data store's implementation (see the module docstring). The callables:

    - ``target_from_connection(info) -> target``;
    - ``capture(target, staging, **options) -> [Artifact]``: stream the store into staging;
    - ``fingerprint(target, **options) -> dict``: the counts and hashes a capture records;
    - ``restore(target, store, checkpoint_id, artifacts, **options) -> ComponentRestore``;
    - ``health(target, expectations, tolerance) -> [HealthCheck]``;
    - ``expectations(artifacts, options) -> dict``: what ``health`` should find after a restore;
    - ``recover(target, entry, store) -> [str]``: replay an interrupted restore (its journal entry);
    - ``rollbacks(target, store) -> [RollbackCopy]``; ``drop_rollback(target, name, store)``;
    - ``leftovers(target, store, live, protected, dry_run, **options) -> [str]``: copies of dead
      restores and captures (``live``: restore ids still running; ``protected``: their copies);
    - ``is_own_copy(name) -> bool``: a database, db or index name of the provider's own copies,
      which captures leave out;
    - ``server_version(target) -> str``; ``compatibility(artifact, server_version) -> [problem]``;
    - optional ``deep_check(store, checkpoint_id, artifacts, target) -> DeepCheck``: parse the
      artifacts (``target`` is None when no connection is known; only engines whose data lives
      outside the archive need it);
    - optional ``expire(target, artifacts) -> [str]``: delete what the artifacts keep outside the
      archive when the checkpoint is deleted (a search snapshot; its size is reported by the deep
      check as ``evidence["external_bytes"]``).

    :param name: the component in manifests (``store``), Params, the CLI and lease keys.
    :param title: what people call it (``PostgreSQL``).
    :param kinds: the artifact kinds it writes.
    :param conn_param: the operators' connection argument (``postgres_conn_id``), also the
        ``[checkpoint]`` option holding the default connection id.
    :param default_conn_id: the connection id when neither names one.
    :param conn_types: the Airflow connection types it reads.
    :param operator: ``"module:Class"`` of its capture operator (imported by the Airflow layer only).
    """

    name: str
    title: str
    kinds: tuple[str, ...]
    conn_param: str
    default_conn_id: str
    conn_types: tuple[str, ...]
    operator: str
    target_from_connection: Callable[[ConnectionInfo], Any]
    capture: Callable[..., list[Artifact]]
    fingerprint: Callable[..., dict[str, Any]]
    restore: Callable[..., Any]
    health: Callable[..., list[Any]]
    expectations: Callable[[list[Artifact], dict[str, Any]], dict[str, Any]]
    recover: Callable[..., list[str]]
    rollbacks: Callable[..., list[Any]]
    drop_rollback: Callable[..., None]
    leftovers: Callable[..., list[str]]
    is_own_copy: Callable[[str], bool]
    server_version: Callable[[Any], str]
    compatibility: Callable[[Artifact, str], list[str]] = _no_problems
    deep_check: Callable[..., DeepCheck] | None = None
    expire: Callable[..., list[str]] | None = None

    def owns(self, artifact: Artifact) -> bool:
        return artifact.store == self.name and artifact.kind in self.kinds

    def artifacts_of(self, artifacts: list[Artifact]) -> list[Artifact]:
        return [a for a in artifacts if self.owns(a)]
