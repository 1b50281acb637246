"""Choosing what a search restore takes from the snapshot, and the checks its plan makes first:
the indices a pattern selects, free short names for the copies, the repository and the snapshot."""

from __future__ import annotations

import fnmatch
import posixpath
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search import _names as N
from airflow_checkpoint_provider.core.engines.search._client import SearchClient, _Req
from airflow_checkpoint_provider.core.engines.search._ops import (
    ClusterView,
    no_data_streams,
    send,
)
from airflow_checkpoint_provider.core.engines.search._source import SnapshotSource
from airflow_checkpoint_provider.core.errors import EngineError, NotFoundError


def _units(source: SnapshotSource) -> dict[str, str]:
    """What can be selected: ``{name: "index" | "stream"}`` (backing indices go with their stream)."""
    backing = {i for d in source.data_streams.values() for i in d["backing_indices"]}
    units = {n: "index" for n in source.expected if n not in backing}
    units.update(dict.fromkeys(source.data_streams, "stream"))
    return units


def _select(source: SnapshotSource, indices: list[str] | str | None, problems: list[str]) -> dict[str, str]:
    in_snapshot = set(source.indices)
    for name in sorted(source.expected):
        if name not in in_snapshot:
            problems.append(
                f"index {name} has fingerprints but is not in snapshot {source.repository}:{source.snapshot}"
            )
    for ds, info in sorted(source.data_streams.items()):
        missing = [b for b in info["backing_indices"] if b not in source.expected]
        if missing:
            problems.append(
                f"data stream {ds}: the checkpoint has no fingerprints of its backing indices {', '.join(missing)}"
            )
    units = _units(source)
    if not units:
        problems.append(
            f"the checkpoint records no index fingerprints for snapshot "
            f"{source.repository}:{source.snapshot}: nothing can be verified"
        )
        return {}
    if indices is None:
        return dict(sorted(units.items()))
    chosen: dict[str, str] = {}
    for expr in L.split_index_expressions(indices):
        if expr == "*":
            matched = sorted(units)
        elif L.is_pattern(expr):
            matched = sorted(n for n in units if fnmatch.fnmatchcase(n, expr))
        else:
            matched = [expr] if expr in units else []
            stream = source.stream_of(expr)
            if stream:  # a backing index named: its data stream
                matched = [stream]
        if not matched:
            problems.append(
                f"{expr!r} matches no index or data stream of the checkpoint (it has: {', '.join(sorted(units))})"
            )
        for m in matched:
            chosen[m] = units[m]
    return dict(sorted(chosen.items()))


def _pick_short(base: str, names: list[str], view: ClusterView, mark: str = N.STAGING_MARK) -> str:
    """``base``, or ``base-2``, ``base-3`` ... so that no side-by-side name is taken already.

    An existing ``X__restoring_<base>`` is either a leftover of a failed restore or the copy an
    earlier alias-mode restore of the same checkpoint switched an alias to (serving, or kept as
    that restore's rollback copy once a later restore switched away): it is never reused or deleted.
    """
    n = 1
    while True:
        short = base if n == 1 else f"{base}-{n}"
        taken = [N.staging_name(x, short, mark) for x in names]
        if not any(t in view.indices or t in view.aliases for t in taken):
            return short
        n += 1


def holders_text(holders: dict[str, Any]) -> str:
    return ", ".join(sorted(holders)) or "nothing"


def _free_rollback(name: str, short: str, stamp: str, taken: set[str]) -> str:
    for k in range(600):
        candidate = N.rollback_name(name, short, str(int(stamp) + k))
        if candidate not in taken:
            return candidate
    raise EngineError(f"no free rollback name for {name}", hint=f"drop old rollback copies of {name}")


def _path_repo_problem(client: SearchClient, settings: dict[str, Any]) -> str | None:
    """For an ``fs`` repository to be registered: a location outside every node's ``path.repo``."""
    rtype, rsettings = L.normalize_repository_settings(settings)
    location = str(rsettings.get("location") or "")
    if rtype != "fs" or not location.startswith("/"):
        return None
    body = (
        send(
            client,
            _Req(
                "GET",
                "_nodes/settings",
                "read the nodes' settings",
                params={"filter_path": "nodes.*.settings.path,nodes.*.name"},
            ),
        )
        or {}
    )
    loc = posixpath.normpath(location)
    for node_id, node in (body.get("nodes") or {}).items():
        repo = ((node.get("settings") or {}).get("path") or {}).get("repo") or []
        roots = [repo] if isinstance(repo, str) else list(repo)
        if not any(loc == posixpath.normpath(r) or loc.startswith(posixpath.normpath(r) + "/") for r in roots):
            return (
                f"repository location {location!r} is not below path.repo of node {node.get('name', node_id)} "
                f"({', '.join(roots) or 'path.repo is not set'}): the cluster would refuse to register it; add "
                "it to path.repo on every node (and restart them), or choose a location below it"
            )
    return None


def _check_snapshot(client: SearchClient, source: SnapshotSource, problems: list[str], where: str) -> None:
    try:
        state = client.snapshot_state(source.repository, source.snapshot)
    except NotFoundError as exc:
        problems.append(
            f"snapshot {source.repository}:{source.snapshot} is not in the repository on {where} "
            f"({exc.message.splitlines()[0]})"
        )
        return
    if state.get("state") != "SUCCESS":
        problems.append(
            f"snapshot {source.repository}:{source.snapshot} is {state.get('state')}, not "
            "SUCCESS: it cannot be restored completely"
        )
    if source.uuid and state.get("uuid") and state["uuid"] != source.uuid:
        problems.append(
            f"snapshot {source.repository}:{source.snapshot} has uuid {state['uuid']}, the "
            f"checkpoint recorded {source.uuid}: it is another snapshot with the same name"
        )
    missing = sorted(set(source.expected) - set(state.get("indices") or []))
    if missing:
        problems.append(
            f"snapshot {source.repository}:{source.snapshot} lacks indices the checkpoint "
            f"recorded: {', '.join(missing)}"
        )


def _has_stream_api(client: SearchClient) -> bool:
    try:
        body = send(client, _Req("GET", "_data_stream", "list the data streams", missing_ok=True))
    except EngineError as exc:
        if no_data_streams(exc):
            return False
        raise
    return isinstance(body, dict) and "data_streams" in body
