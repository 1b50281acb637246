"""The search engine's record in the registry (see :mod:`..contract`): Elasticsearch and OpenSearch."""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider.core.engines.contract import ConnectionInfo, Engine
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.journal import ComponentEntry
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.rollbacks import RollbackCopy, normal_ts
from airflow_checkpoint_provider.core.values import as_list

from . import _maintenance as M
from ._capture import capture
from ._client import SearchClient
from ._logic import ARTIFACT_KIND as KIND
from ._names import is_own_copy
from .component import SearchRestore
from .deep import deep_check, expire
from .health import health as search_health
from .restore import recover as _recover

NAME = "search"


def target_from_connection(info: ConnectionInfo) -> SearchTarget:
    """An Airflow ``elasticsearch`` connection: host (optionally with a scheme), port, ``schema`` =
    ``http`` or ``https``, login/password for basic auth, and the extra's ``api_key``,
    ``verify_certs`` and ``ca_certs``."""
    extra = info.extra
    host = info.host or "localhost"
    scheme = (info.schema or extra.get("scheme") or "http").lower()
    if "://" in host:
        scheme, host = host.split("://", 1)
    host = host.rstrip("/")
    return SearchTarget(
        url=f"{scheme}://{host}:{info.port or 9200}",
        username=info.login or None,
        password=info.password or None,
        api_key=extra.get("api_key"),
        verify_certs=str(extra.get("verify_certs", True)).lower() not in ("0", "false", "no"),
        ca_certs=extra.get("ca_certs"),
    )


def fingerprint(target: SearchTarget, *, indices: list[str], **options: Any) -> dict[str, Any]:
    """Documents and mapping hash per index, counted now."""
    with SearchClient(target) as client:
        return {"indices": client.fingerprint_indices(indices)}


def restore(
    target: SearchTarget,
    store: Any,
    checkpoint_id: str,
    artifacts: list[Artifact],
    *,
    mode: str = "side_by_side",
    indices: Any = None,
    rollback_policy: Any = None,
    **options: Any,
) -> Any:
    """:class:`SearchRestore` (always side by side; ``rollback_policy`` is applied afterwards)."""
    return SearchRestore(target, store, checkpoint_id, artifacts[0], indices=as_list(indices), **options)


def expectations(artifacts: list[Artifact], options: dict[str, Any]) -> dict[str, Any]:
    indices: dict[str, Any] = {}
    for art in artifacts:
        indices.update(art.fingerprints.get("indices", {}))
    return {"indices": indices}


def health(target: SearchTarget, expected: dict[str, Any], tolerance: float = 0.0) -> list[Any]:
    with SearchClient(target) as client:
        return search_health(client, expected, tolerance=tolerance)


def recover(target: SearchTarget, entry: ComponentEntry, store: Any = None) -> list[str]:
    return _recover(target, entry)


def rollbacks(target: SearchTarget, store: Any = None) -> list[RollbackCopy]:
    ids = [i.checkpoint_id for i in store.list(cached=False)] if store is not None else []
    return [
        RollbackCopy(
            NAME,
            r["index"],
            r["source"],
            str(r["checkpoint"] or r["short_id"]),
            normal_ts(str(r["created_at"])),
            size=r.get("size_bytes"),
            items=r.get("docs"),
        )
        for r in M.list_rollbacks(target, checkpoints=ids)
        if r["kind"] == "index"
    ]


def drop_rollback(target: SearchTarget, name: str, store: Any = None) -> None:
    M.drop_rollback(target, name)


def referenced_snapshots(store: Any) -> set[str]:
    """The snapshots that sealed checkpoints of ``store`` reference."""
    return {
        str(a.meta["snapshot"])
        for info in store.list(cached=False)
        for a in info.manifest.artifacts
        if a.store == NAME and a.meta.get("snapshot")
    }


def leftovers(
    target: SearchTarget,
    store: Any,
    live: set[str],
    protected: set[str],
    dry_run: bool,
    *,
    repository: str | None = None,
    snapshot_age: float = 7200.0,
    **options: Any,
) -> list[str]:
    """``__restoring_`` indices no running restore owns, and, in ``repository``, snapshots the
    provider took that no sealed checkpoint references, older than ``snapshot_age``."""
    out = [f"search index {x['index']}" for x in M.drop_leftovers(target, protected=protected, dry_run=dry_run)]
    if repository:
        out += [
            f"search snapshot {repository}/{x['snapshot']}"
            for x in M.delete_orphan_snapshots(
                target, repository, referenced=referenced_snapshots(store), older_than=snapshot_age, dry_run=dry_run
            )
        ]
    return out


def server_version(target: SearchTarget) -> str:
    with SearchClient(target) as client:
        info = client.info()
    return f"{info['flavor']} {info['version']}"


ENGINE = Engine(
    name=NAME,
    title="Elasticsearch / OpenSearch",
    kinds=(KIND,),
    conn_param="elasticsearch_conn_id",
    default_conn_id="elasticsearch_default",
    conn_types=("elasticsearch",),
    operator="airflow_checkpoint_provider.operators.search:EsSnapshotOperator",
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
    expire=expire,
)
