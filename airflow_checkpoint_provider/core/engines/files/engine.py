"""The files engine's record in the registry (see :mod:`..contract`): a directory tree on the worker."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from airflow_checkpoint_provider.core.engines.contract import ConnectionInfo, Engine
from airflow_checkpoint_provider.core.engines.files import _cutover
from airflow_checkpoint_provider.core.engines.files._names import is_own_copy, restoring_path, rollback_of
from airflow_checkpoint_provider.core.engines.files._target import FilesTarget
from airflow_checkpoint_provider.core.engines.files.capture import (
    KIND_LIST,
    KIND_TREE,
    STORE,
    capture,
    check_directory,
)
from airflow_checkpoint_provider.core.engines.files.deep import deep_check
from airflow_checkpoint_provider.core.engines.files.fingerprint import fingerprint
from airflow_checkpoint_provider.core.engines.files.health import health
from airflow_checkpoint_provider.core.engines.files.restore import FilesRestore, select_tree
from airflow_checkpoint_provider.core.errors import CheckpointError, NotFoundError
from airflow_checkpoint_provider.core.journal import ComponentEntry
from airflow_checkpoint_provider.core.manifest import Artifact, format_ts
from airflow_checkpoint_provider.core.rollbacks import RollbackCopy


def target_from_connection(info: ConnectionInfo) -> FilesTarget:
    """An Airflow ``fs`` connection (Airflow's "File (path)", as FSHook reads it), or any connection
    whose extra names the directory: ``{"path": "/srv/app/uploads"}``."""
    path = info.extra.get("path")
    if not isinstance(path, str) or not path.strip():
        raise CheckpointError(
            f'connection {info.conn_id!r} names no directory: its extra has no "path"',
            hint='set the extra to {"path": "/srv/app/uploads"}: an absolute directory that '
            "every worker running the capture and the restore sees",
        )
    return FilesTarget(path=path.strip())


def restore(
    target: FilesTarget,
    store: Any,
    checkpoint_id: str,
    artifacts: list[Artifact],
    *,
    rollback_policy: Any = None,
    **options: Any,
) -> FilesRestore:
    """:class:`FilesRestore` (``rollback_policy`` is applied by the orchestration afterwards)."""
    return FilesRestore(target, store, checkpoint_id, artifacts, **options)


def expectations(artifacts: list[Artifact], options: dict[str, Any]) -> dict[str, Any]:
    """The counts and the Merkle root of the tree a restore with ``options`` restores."""
    tree, _listing, _problems = select_tree(artifacts, "", options.get("source") or None)
    return dict(tree.fingerprints) if tree is not None else {}


def recover(target: FilesTarget, entry: ComponentEntry, store: Any = None) -> list[str]:
    return _cutover.recover(entry, target.path)


def rollbacks(target: FilesTarget, store: Any = None) -> list[RollbackCopy]:
    """The rollback copies beside the directory, newest first."""
    parent = os.path.dirname(target.path)
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = rollback_of(target.path, name)
        if m and os.path.isdir(os.path.join(parent, name)):
            when = format_ts(datetime.strptime(m.group("stamp"), "%Y%m%d%H%M%S").replace(tzinfo=UTC))
            out.append(RollbackCopy(STORE, name, target.path, m.group("short"), when))
    return sorted(out, key=lambda c: (c.created_at, c.name), reverse=True)


def drop_rollback(target: FilesTarget, name: str, store: Any = None) -> None:
    if not rollback_of(target.path, name):
        raise CheckpointError(
            f"{name!r} is not a rollback copy of {target.path}", hint="`airflow-checkpoint rollbacks list` shows them"
        )
    if not _cutover.remove_copy(os.path.join(os.path.dirname(target.path), name)):
        raise NotFoundError(
            f"rollback copy {name} of {target.path} does not exist",
            hint="`airflow-checkpoint rollbacks list` shows the copies there are",
        )


def leftovers(
    target: FilesTarget, store: Any, live: set[str], protected: set[str], dry_run: bool, **options: Any
) -> list[str]:
    """``<dir>.__restoring`` when no running restore owns it."""
    staging = restoring_path(target.path)
    if not os.path.lexists(staging) or staging in protected:
        return []
    if not dry_run:
        _cutover.remove_copy(staging)
    return [f"files directory {staging}"]


def server_version(target: FilesTarget) -> str:
    """The worker's system, once the directory is found (the pre-deploy connection check)."""
    check_directory(target.path, action="checking the connection")
    uname = os.uname()
    return f"{uname.sysname} {uname.release}"


ENGINE = Engine(
    name=STORE,
    title="Files",
    kinds=(KIND_TREE, KIND_LIST),
    conn_param="files_conn_id",
    default_conn_id="files_default",
    conn_types=("fs",),
    operator="airflow_checkpoint_provider.operators.files:FilesSnapshotOperator",
    target_from_connection=target_from_connection,
    capture=capture,
    fingerprint=fingerprint,
    restore=restore,
    health=health,
    expectations=expectations,
    recover=recover,
    rollbacks=rollbacks,
    drop_rollback=drop_rollback,
    leftovers=leftovers,
    is_own_copy=is_own_copy,
    server_version=server_version,
    deep_check=deep_check,
)
