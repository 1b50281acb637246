"""The requests a restore is made of (sync client): indices, aliases, shards, snapshots, data streams.

Every function takes a :class:`~._client.SearchClient` and raises its errors (EngineError subclasses
naming the cluster, with a HINT). Nothing here decides anything: planning, cut-over and replay
(:mod:`._plan`, :mod:`._cutover`, :mod:`._replay`) do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search._client import (
    SearchClient,
    _index_path,
    _Req,
    _seg,
)
from airflow_checkpoint_provider.core.errors import EngineError, NotFoundError

#: Alias properties carried over by ``POST /_aliases`` ``add`` actions.
ALIAS_PROPERTIES = ("filter", "index_routing", "search_routing", "is_write_index", "is_hidden")
#: How long an index may stay red (a failed shard allocation) before waiting gives up early.
RED_GRACE_SECONDS = 20.0
#: Index settings the server assigns itself, so that a restored index may differ from the original in
#: these and no other: its own uuid, creation date and name as created, the history uuid a restore
#: over a closed index sets, and the version the index was last upgraded in.
SERVER_ASSIGNED_SETTINGS = (
    "index.uuid",
    "index.creation_date",
    "index.provided_name",
    "index.history.uuid",
    "index.version.upgraded",
)


def send(client: SearchClient, req: _Req) -> Any:
    return client._send(req)


# --------------------------------------------------------------------------- indices


def settings_flat(client: SearchClient, index: str) -> dict[str, Any]:
    body = send(
        client,
        _Req(
            "GET",
            f"{_index_path(index)}/_settings",
            f"read the settings of index {index!r}",
            params={"flat_settings": "true", "expand_wildcards": "all"},
        ),
    )
    return dict(((body or {}).get(index) or {}).get("settings") or {})


def put_settings(client: SearchClient, index: str, settings: dict[str, Any]) -> None:
    send(
        client,
        _Req(
            "PUT",
            f"{_index_path(index)}/_settings",
            f"update the settings of index {index!r}",
            params={"expand_wildcards": "all"},
            body=settings,
        ),
    )


def _single(index: str) -> str:
    if "*" in index or "," in index or not index or index.startswith("-"):
        raise EngineError(f"refusing to change {index!r}: not a single index name", hint="name one index")
    return index


def delete_index(client: SearchClient, index: str, *, missing_ok: bool = True) -> bool:
    body = send(
        client,
        _Req(
            "DELETE",
            _index_path(_single(index)),
            f"delete index {index!r}",
            params={"expand_wildcards": "all"},
            missing_ok=missing_ok,
        ),
    )
    return body is not None


def close_index(client: SearchClient, index: str) -> None:
    send(
        client,
        _Req(
            "POST",
            f"{_index_path(_single(index))}/_close",
            f"close index {index!r}",
            params={"expand_wildcards": "all"},
        ),
    )


def open_index(client: SearchClient, index: str) -> None:
    send(
        client,
        _Req(
            "POST", f"{_index_path(_single(index))}/_open", f"open index {index!r}", params={"expand_wildcards": "all"}
        ),
    )


def clone(client: SearchClient, source: str, target: str, settings: dict[str, Any]) -> None:
    send(
        client,
        _Req(
            "POST",
            f"{_index_path(_single(source))}/_clone/{_index_path(_single(target))}",
            f"clone index {source!r} to {target!r}",
            body={"settings": settings},
        ),
    )


def exists(client: SearchClient, index: str) -> bool:
    return (
        send(
            client,
            _Req(
                "HEAD",
                _index_path(_single(index)),
                f"check whether {index!r} exists",
                params={"expand_wildcards": "all"},
                missing_ok=True,
            ),
        )
        is not None
    )


def index_status(client: SearchClient, index: str) -> str:
    """``missing``, ``open`` or ``close``."""
    rows = (
        send(
            client,
            _Req(
                "GET",
                f"_cat/indices/{_index_path(_single(index))}",
                f"look up index {index!r}",
                params={"format": "json", "h": "index,status", "expand_wildcards": "all"},
                missing_ok=True,
            ),
        )
        or []
    )
    row = next((r for r in rows if r.get("index") == index), None)
    return "missing" if row is None else str(row.get("status") or "open")


def refresh_count(client: SearchClient, names: list[str]) -> dict[str, int]:
    client.refresh(names)
    return {n: client.count(n) for n in names}


def recovered_from(client: SearchClient, index: str) -> tuple[str, str] | None:
    """``(repository, snapshot)`` the primaries of ``index`` were last restored from, or None (created,
    cloned, recovered from its own store, or missing)."""
    body = (
        send(
            client,
            _Req("GET", f"{_index_path(_single(index))}/_recovery", f"read the recovery of {index!r}", missing_ok=True),
        )
        or {}
    )
    shards = [s for s in ((body.get(index) or {}).get("shards") or []) if s.get("primary")]
    if not shards:
        return _pending_restore_source(client, index)
    if any(s.get("type") != "SNAPSHOT" for s in shards):
        return None
    src = shards[0].get("source") or {}
    return str(src.get("repository") or ""), str(src.get("snapshot") or "")


def _pending_restore_source(client: SearchClient, index: str) -> tuple[str, str] | None:
    """The snapshot the primaries of ``index`` are about to be restored from, before any recovery began.

    Just after a RESTORE is accepted its shards are unassigned, and ``_recovery`` lists nothing; the
    routing table already carries each primary's ``recovery_source``. Without this a replay would
    judge an index (or a data stream's backing index) whose restore is in flight as not restored.
    """
    body = (
        send(
            client,
            _Req(
                "GET",
                f"_cluster/state/routing_table/{_index_path(_single(index))}",
                f"read the routing table of {index!r}",
                missing_ok=True,
            ),
        )
        or {}
    )
    table = (((body.get("routing_table") or {}).get("indices") or {}).get(index) or {}).get("shards") or {}
    primaries = [s for copies in table.values() for s in copies if s.get("primary")]
    sources = [s.get("recovery_source") or {} for s in primaries]
    if not sources or any(src.get("type") != "SNAPSHOT" for src in sources):
        return None
    return str(sources[0].get("repository") or ""), str(sources[0].get("snapshot") or "")


# --------------------------------------------------------------------------- aliases and the cluster view


def alias_props(props: dict[str, Any]) -> dict[str, Any]:
    return {k: props[k] for k in ALIAS_PROPERTIES if props.get(k) not in (None, "")}


def add(index: str, alias: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"add": {"index": index, "alias": alias, **alias_props(props or {})}}


def remove(index: str, alias: str) -> dict[str, Any]:
    return {"remove": {"index": index, "alias": alias}}


def update_aliases(client: SearchClient, actions: list[dict[str, Any]], what: str) -> None:
    if actions:
        send(client, _Req("POST", "_aliases", what, body={"actions": actions}))


@dataclass
class ClusterView:
    """Every index (status, health, docs), every alias (``{alias: {index: properties}}``) and every
    data stream (``{name: [backing indices]}``; empty where the cluster has none)."""

    indices: dict[str, dict[str, Any]]
    aliases: dict[str, dict[str, dict[str, Any]]]
    streams: dict[str, list[str]]

    def aliases_of(self, index: str) -> dict[str, dict[str, Any]]:
        return {a: holders[index] for a, holders in self.aliases.items() if index in holders}

    def serving(self, index: str) -> bool:
        """An index some alias points at."""
        return any(index in holders for holders in self.aliases.values())

    def backing(self) -> set[str]:
        return {i for names in self.streams.values() for i in names}


def cluster_view(client: SearchClient) -> ClusterView:
    rows = (
        send(
            client,
            _Req(
                "GET",
                "_cat/indices",
                "list the indices (_cat/indices)",
                params={
                    "format": "json",
                    "h": "index,status,health,docs.count,store.size,creation.date,pri,rep",
                    "bytes": "b",
                    "expand_wildcards": "all",
                },
            ),
        )
        or []
    )
    indices = {str(r["index"]): r for r in rows if r.get("index")}
    body = (
        send(client, _Req("GET", "_alias", "list the aliases (GET /_alias)", params={"expand_wildcards": "all"})) or {}
    )
    aliases: dict[str, dict[str, dict[str, Any]]] = {}
    for index, entry in body.items():
        for alias, props in ((entry or {}).get("aliases") or {}).items():
            aliases.setdefault(str(alias), {})[str(index)] = dict(props or {})
    return ClusterView(indices=indices, aliases=aliases, streams=data_streams(client))


def collect_aliases(client: SearchClient, indices: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{alias: {index: properties}}`` for every alias that points at one of ``indices`` (with all of
    its holders). This is what a capture records as the document's ``aliases`` so that a restore
    can reinstate them."""
    view = cluster_view(client)
    wanted = set(indices)
    return {
        a: {i: alias_props(p) for i, p in sorted(h.items())} for a, h in sorted(view.aliases.items()) if wanted & set(h)
    }


# --------------------------------------------------------------------------- shards


def wait_for_primaries(
    client: SearchClient, names: list[str], *, timeout: float, what: str, poll_interval: float = 0.5
) -> None:
    """Wait until every primary shard of ``names`` has started (restore/clone finished recovering).

    Shards that stay unassigned after failing (a failed restore or clone) for more than
    :data:`RED_GRACE_SECONDS` end the wait early; so does ``timeout``. Both raise EngineError
    naming the indices and the server's reason.
    """
    if not names:
        return
    deadline = time.monotonic() + max(1.0, float(timeout))
    red_since: float | None = None
    delay = 0.05  # small indices are ready in milliseconds: poll fast first, then every poll_interval
    while True:
        rows: list[dict[str, Any]] = []
        for batch in L.url_batches(names):
            rows += (
                send(
                    client,
                    _Req(
                        "GET",
                        f"_cat/shards/{_index_path(','.join(batch))}",
                        "read shard states (_cat/shards)",
                        params={"format": "json", "h": "index,shard,prirep,state,unassigned.reason,unassigned.details"},
                    ),
                )
                or []
            )
        primaries = [r for r in rows if r.get("prirep") == "p"]
        seen = {str(r.get("index")) for r in primaries}
        pending = sorted({str(r["index"]) for r in primaries if r.get("state") != "STARTED"} | (set(names) - seen))
        if not pending:
            return
        failed = [
            r
            for r in primaries
            if r.get("state") == "UNASSIGNED"
            and str(r.get("unassigned.reason") or "")
            not in ("", "INDEX_CREATED", "NEW_INDEX_RESTORED", "EXISTING_INDEX_RESTORED")
        ]
        now = time.monotonic()
        red_since = (red_since or now) if failed else None
        if (red_since is not None and now - red_since > RED_GRACE_SECONDS) or now >= deadline:
            reasons = "; ".join(
                f"{r.get('index')}[{r.get('shard')}]: {r.get('unassigned.reason')} "
                f"{r.get('unassigned.details') or ''}".strip()
                for r in failed[:10]
            )
            cause = f"primary shards failed: {reasons}" if failed else f"still recovering after {timeout:g}s"
            raise EngineError(
                f"search cluster {client.where}: {what}: {', '.join(pending)}: {cause}",
                hint="see GET /_cluster/allocation/explain and GET /_cat/recovery?active_only; raise "
                "wait_timeout for large indices",
            )
        time.sleep(min(delay, poll_interval, max(0.05, deadline - now)))
        delay *= 2


# --------------------------------------------------------------------------- snapshots


def restore_snapshot(
    client: SearchClient,
    repository: str,
    snapshot: str,
    names: list[str],
    *,
    suffix: str | None = None,
    include_global_state: bool = False,
) -> None:
    """Start restoring ``names`` (indices or data streams) of a snapshot, renamed ``<name><suffix>`` if
    ``suffix`` is given (side-by-side copies), else under their own names. Does not wait."""
    body: dict[str, Any] = {
        "indices": ",".join(names),
        "ignore_unavailable": False,
        "partial": False,
        "include_aliases": False,
        "include_global_state": bool(include_global_state),
    }
    if suffix:
        body.update({"rename_pattern": "(.+)", "rename_replacement": "$1" + suffix})
    send(
        client,
        _Req(
            "POST",
            f"_snapshot/{_seg(repository)}/{_seg(snapshot)}/_restore",
            f"restore {', '.join(names)} from snapshot {repository}:{snapshot}",
            params={"wait_for_completion": "false"},
            body=body,
        ),
    )


def snapshot_state(client: SearchClient, repository: str, snapshot: str) -> dict[str, Any] | None:
    """The parsed state of a snapshot, or None if the repository does not hold it."""
    try:
        return client.snapshot_state(repository, snapshot)
    except NotFoundError as exc:
        if "repository does not exist" in exc.message:
            raise
        return None


def list_snapshots(client: SearchClient, repository: str) -> list[dict[str, Any]]:
    """Every snapshot of a repository: the parsed state plus its ``metadata``."""
    body = send(client, _Req("GET", f"_snapshot/{_seg(repository)}/_all", f"list the snapshots of {repository!r}"))
    items = list((body or {}).get("snapshots") or [])
    for resp in (body or {}).get("responses") or []:
        items += resp.get("snapshots") or []
    return [{**L.parse_snapshot(i), "metadata": dict(i.get("metadata") or {})} for i in items if isinstance(i, dict)]


def snapshot_shard_counts(client: SearchClient, repository: str, snapshot: str) -> dict[str, int]:
    """``{index: number of shards}`` of a snapshot (``_status``)."""
    body = send(
        client,
        _Req(
            "GET",
            f"_snapshot/{_seg(repository)}/{_seg(snapshot)}/_status",
            f"read the status of snapshot {repository}:{snapshot}",
            missing_ok=True,
        ),
    )
    out: dict[str, int] = {}
    for snap in (body or {}).get("snapshots") or []:
        for index, entry in (snap.get("indices") or {}).items():
            total = ((entry or {}).get("shards_stats") or {}).get("total")
            if isinstance(total, int):
                out[str(index)] = total
    return out


def snapshot_size(client: SearchClient, repository: str, snapshot: str) -> int | None:
    """Total size in bytes of a snapshot's files (``_status``), None if the server does not say."""
    try:
        body = send(
            client,
            _Req(
                "GET",
                f"_snapshot/{_seg(repository)}/{_seg(snapshot)}/_status",
                f"read the status of snapshot {repository}:{snapshot}",
            ),
        )
    except EngineError:
        return None
    for snap in (body or {}).get("snapshots") or []:
        stats = snap.get("stats") or {}
        total = (stats.get("total") or {}).get("size_in_bytes")
        return int(total) if isinstance(total, int) else None
    return None


# --------------------------------------------------------------------------- data streams


def no_data_streams(exc: EngineError) -> bool:
    """The answer of a cluster without data streams (Elasticsearch without its data-streams module
    takes ``_data_stream`` for an index name, or knows no GET handler for it)."""
    return "(HTTP 405)" in exc.message or "Invalid index name [_data_stream]" in exc.message


def data_streams(client: SearchClient, expression: str = "*") -> dict[str, list[str]]:
    """``{name: [backing indices]}`` of the data streams matching ``expression``. A cluster without data
    streams (Elasticsearch without its data-streams module) has none; an unknown explicit name too."""
    try:
        body = send(
            client, _Req("GET", f"_data_stream/{_index_path(expression)}", "list the data streams", missing_ok=True)
        )
    except EngineError as exc:
        if no_data_streams(exc):
            return {}
        raise
    out: dict[str, list[str]] = {}
    for ds in (body or {}).get("data_streams") or []:
        out[str(ds["name"])] = [str(i["index_name"]) for i in ds.get("indices") or []]
    return out


def data_stream_info(client: SearchClient, names: list[str]) -> dict[str, dict[str, Any]]:
    """What a capture records of each data stream: backing indices, timestamp field, template."""
    out: dict[str, dict[str, Any]] = {}
    for batch in L.url_batches(names):
        body = send(client, _Req("GET", f"_data_stream/{_index_path(','.join(batch))}", "read the data streams"))
        for ds in (body or {}).get("data_streams") or []:
            ts = ds.get("timestamp_field")
            out[str(ds["name"])] = {
                "backing_indices": [str(i["index_name"]) for i in ds.get("indices") or []],
                "timestamp_field": str(ts.get("name") if isinstance(ts, dict) else ts or "@timestamp"),
                "template": str(ds.get("template") or ""),
                "generation": int(ds.get("generation") or 0),
            }
    return out


def delete_data_stream(client: SearchClient, name: str) -> bool:
    body = send(
        client,
        _Req("DELETE", f"_data_stream/{_index_path(_single(name))}", f"delete data stream {name!r}", missing_ok=True),
    )
    return body is not None
