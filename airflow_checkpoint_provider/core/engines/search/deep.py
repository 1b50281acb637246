"""Lifecycle of search snapshots: the deep check, the snapshot's size, and its deletion with the checkpoint.

The deep check reads ``search/snapshot.json`` from the archive and asks the cluster for the
snapshot it names: it must be in its repository, with state ``SUCCESS``, the recorded uuid,
every recorded index, and the recorded shard count. The size comes from the snapshot status
API (``GET _snapshot/<repo>/<snap>/_status``, ``stats.total.size_in_bytes``): the bytes of
the files the snapshot references, shared ones included (a repository is incremental).
"""

from __future__ import annotations

import json
from typing import Any

from airflow_checkpoint_provider.core.engines.contract import DeepCheck
from airflow_checkpoint_provider.core.engines.search._client import SearchClient, _Req, _seg
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import CheckpointError, ConnectionFailedError, NotFoundError
from airflow_checkpoint_provider.core.manifest import Artifact


def _where(art: Artifact) -> tuple[str, str]:
    return str(art.meta.get("repository", "")), str(art.meta.get("snapshot", ""))


def snapshot_size(client: SearchClient, repository: str, snapshot: str) -> int | None:
    """``stats.total.size_in_bytes`` of the snapshot status API, or None if the cluster does not say."""
    body = client._send(
        _Req(
            "GET",
            f"_snapshot/{_seg(repository)}/{_seg(snapshot)}/_status",
            f"read the status of snapshot {repository}:{snapshot}",
        )
    )
    for item in (body or {}).get("snapshots") or []:
        total = ((item.get("stats") or {}).get("total") or {}).get("size_in_bytes")
        if isinstance(total, int) and not isinstance(total, bool):
            return total
    return None


def _check_one(client: SearchClient, doc: dict[str, Any], art: Artifact) -> tuple[list[str], dict[str, Any]]:
    repository, snapshot = _where(art)
    state = client.snapshot_state(repository, snapshot)
    recorded = doc.get("snapshot") or {}
    problems = []
    if state.get("state") != "SUCCESS":
        problems.append(f"snapshot {repository}:{snapshot} is {state.get('state')}, not SUCCESS")
    if recorded.get("uuid") and state.get("uuid") != recorded.get("uuid"):
        problems.append(
            f"snapshot {repository}:{snapshot} has uuid {state.get('uuid')}, the checkpoint recorded "
            f"{recorded.get('uuid')}: it was deleted and taken again"
        )
    missing = sorted(set(recorded.get("indices") or []) - set(state.get("indices") or []))
    if missing:
        problems.append(f"snapshot {repository}:{snapshot} lacks the recorded indices {', '.join(missing)}")
    want, have = (recorded.get("shards") or {}).get("total"), (state.get("shards") or {}).get("total")
    if want is not None and have != want:
        problems.append(f"snapshot {repository}:{snapshot} has {have} shards, the checkpoint recorded {want}")
    size = snapshot_size(client, repository, snapshot)
    return problems, {
        "state": state.get("state"),
        "indices": len(state.get("indices") or []),
        "shards": have,
        "size_bytes": size,
    }


def deep_check(store: Any, checkpoint_id: str, artifacts: list[Artifact], target: SearchTarget | None) -> DeepCheck:
    """Check every snapshot the checkpoint records (see the module docstring)."""
    result = DeepCheck()
    if target is None:
        result.unchecked.append("no search connection was given: the snapshot in its repository was not checked")
        return result
    total = 0
    with SearchClient(target) as client:
        for art in artifacts:
            try:
                doc = json.loads(store.read_artifact(checkpoint_id, art.name))
                problems, evidence = _check_one(client, doc if isinstance(doc, dict) else {}, art)
            except NotFoundError as exc:
                problems, evidence = [exc.message], {}
            except ConnectionFailedError as exc:
                result.unchecked.append(exc.message)
                continue
            except (CheckpointError, ValueError) as exc:
                problems, evidence = [str(getattr(exc, "message", exc))], {}
            result.problems += [(art.member, p) for p in problems]
            result.evidence[art.name] = evidence
            total += evidence.get("size_bytes") or 0
    if not result.unchecked:
        result.evidence["external_bytes"] = total
    return result


def expire(target: SearchTarget, artifacts: list[Artifact]) -> list[str]:
    """Delete the snapshots of a deleted checkpoint (an already missing one is fine). A cluster that
    does not answer raises ConnectionFailedError: the caller keeps the tombstone and retries."""
    done = []
    with SearchClient(target) as client:
        for art in artifacts:
            repository, snapshot = _where(art)
            if not repository or not snapshot:
                continue
            deleted = client.delete_snapshot(repository, snapshot, missing_ok=True)
            done.append(f"search snapshot {repository}:{snapshot} {'deleted' if deleted else 'was already gone'}")
    return done
