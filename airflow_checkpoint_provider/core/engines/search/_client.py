"""HTTP clients for the snapshot REST API: :class:`SearchClient` (sync) and :class:`AsyncSearchClient`.

Plain httpx, no elasticsearch-py: the requests used here are the same on Elasticsearch 7-9 and
OpenSearch 1-3, and the official client's product checks would refuse some of them. Each request
is described once (:class:`_Req`) and sent by either client; responses go through the same
error mapping (:func:`._logic.error_for`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import (
    CaptureError,
    ConnectionFailedError,
    EngineError,
    NotFoundError,
)

log = logging.getLogger(__name__)

USER_AGENT = "airflow-checkpoint-provider"


def _seg(value: str, safe: str = "") -> str:
    return quote(value, safe=safe)


def _index_path(expression: str) -> str:
    """An index expression as a path segment: keep ``,`` and ``*`` (multi-target syntax)."""
    return quote(expression, safe=",*")


def safe_url(url: str) -> str:
    """The target URL without any user-info (credentials never reach messages or logs)."""
    try:
        u = httpx.URL(url)
    except Exception:
        return url.split("@")[-1]
    if u.userinfo:
        u = u.copy_with(username=None, password=None)
    return str(u).rstrip("/")


def _auth_header(target: SearchTarget) -> dict[str, str]:
    if not target.api_key:
        return {}
    key = target.api_key.strip()
    if ":" in key:  # "id:api_key" -> the encoded form the server expects
        key = base64.b64encode(key.encode()).decode()
    return {"Authorization": f"ApiKey {key}"}


def _client_kwargs(target: SearchTarget) -> dict[str, Any]:
    verify: Any
    if not target.verify_certs:
        verify = False
    elif target.ca_certs:
        try:
            verify = ssl.create_default_context(cafile=target.ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionFailedError(
                f"search cluster {safe_url(target.url)}: cannot load the CA certificates {target.ca_certs!r}: {exc}",
                hint="set the connection's extra 'ca_certs' to a readable PEM file",
            ) from None
    else:
        verify = True
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **_auth_header(target)}
    auth = (target.username, target.password or "") if target.username and not target.api_key else None
    return {
        "base_url": target.url.rstrip("/") + "/",
        "headers": headers,
        "auth": auth,
        "verify": verify,
        "timeout": httpx.Timeout(target.timeout, connect=min(10.0, target.timeout)),
        "follow_redirects": False,
        "trust_env": False,
    }


@dataclass(frozen=True)
class _Req:
    method: str
    path: str  # relative to the base URL, no leading slash
    what: str  # for messages: "register repository 'x'"
    params: dict[str, Any] | None = None
    body: Any = None
    missing_ok: bool = False  # 404 -> None instead of NotFoundError


def _transport_error(where: str, req: _Req, exc: Exception, timeout: float) -> ConnectionFailedError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionFailedError(
            f"search cluster {where}: {req.what}: no answer within {timeout:g}s ({type(exc).__name__})",
            hint="check that the node is up and not overloaded; raise the connection timeout for slow clusters",
        )
    if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
        return ConnectionFailedError(
            f"search cluster {where}: {req.what}: TLS failed: {text}",
            hint="set the connection's extra 'ca_certs' to the cluster's CA (PEM), or 'verify_certs': false "
            "for a test cluster; use schema 'https' only if the node serves TLS",
        )
    return ConnectionFailedError(
        f"search cluster {where}: {req.what}: cannot connect: {text}",
        hint="check that the node is running and that the connection's scheme (http/https), host and port "
        "point at its HTTP interface (default port 9200)",
    )


def _decode(where: str, req: _Req, resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            body: Any = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code == 404 and req.missing_ok:
            return None
        raise L.error_for(where, req.what, resp.status_code, body)
    if not resp.content:
        return {}
    try:
        return resp.json()
    except ValueError:
        raise EngineError(
            f"search cluster {where}: {req.what}: the answer is not JSON: {resp.text[:200]!r}",
            hint="check that the URL points at an Elasticsearch/OpenSearch node, not a proxy page",
        ) from None


# --------------------------------------------------------------------------- requests shared by both clients


def _req_info() -> _Req:
    return _Req("GET", "", "read the cluster info (GET /)")


def _req_health(
    indices: list[str] | str | None, level: str | None, wait_for_status: str | None, timeout: str | None
) -> _Req:
    path = "_cluster/health"
    if indices:
        path += "/" + _index_path(indices if isinstance(indices, str) else ",".join(indices))
    params = {k: v for k, v in {"level": level, "wait_for_status": wait_for_status, "timeout": timeout}.items() if v}
    return _Req("GET", path, "read the cluster health", params=params or None)


def _req_get_snapshot(repository: str, snapshot: str) -> _Req:
    return _Req("GET", f"_snapshot/{_seg(repository)}/{_seg(snapshot)}", f"read snapshot {repository}:{snapshot}")


class _Base:
    def __init__(self, target: SearchTarget) -> None:
        self.target = target
        self.where = safe_url(target.url)

    def _http_error(self, req: _Req, exc: Exception) -> ConnectionFailedError:
        return _transport_error(self.where, req, exc, self.target.timeout)


class SearchClient(_Base):
    """Synchronous client. Use as a context manager, or call :meth:`close` when done.

    Every error is an :class:`~airflow_checkpoint_provider.core.errors.EngineError` that names the
    cluster URL (never credentials) and ends with a HINT.
    """

    def __init__(self, target: SearchTarget) -> None:
        super().__init__(target)
        self._http = httpx.Client(**_client_kwargs(target))

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, req: _Req) -> Any:
        try:
            resp = self._http.request(
                req.method, req.path, params=req.params, json=req.body if req.body is not None else None
            )
        except (httpx.TransportError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise self._http_error(req, exc) from None
        return _decode(self.where, req, resp)

    # ------------------------------------------------------------------ cluster

    def info(self) -> dict[str, Any]:
        """``{"flavor": "opensearch"|"elasticsearch", "version", "cluster_name", "cluster_uuid"}``."""
        return L.parse_info(self.where, self._send(_req_info()))

    def cluster_health(
        self,
        indices: list[str] | str | None = None,
        *,
        level: str | None = None,
        wait_for_status: str | None = None,
        timeout: str | None = None,
    ) -> dict[str, Any]:
        """``GET /_cluster/health[/<indices>]`` as returned by the server (``status`` green/yellow/red)."""
        return dict(self._send(_req_health(indices, level, wait_for_status, timeout)))

    # ------------------------------------------------------------------ repository

    def get_repository(self, name: str) -> dict[str, Any] | None:
        """``{"type", "settings"}`` of a registered repository, or None if it is not registered."""
        L.validate_repository_name(name)
        body = self._send(_Req("GET", f"_snapshot/{_seg(name)}", f"read snapshot repository {name!r}", missing_ok=True))
        if not body or name not in body:
            return None
        entry = body[name]
        return {"type": str(entry.get("type", "")), "settings": dict(entry.get("settings") or {})}

    def verify_repository(self, name: str) -> list[str]:
        """``POST /_snapshot/<name>/_verify``: the names of the nodes that could use the repository."""
        body = self._send(_Req("POST", f"_snapshot/{_seg(name)}/_verify", f"verify snapshot repository {name!r}"))
        nodes = body.get("nodes") or {}
        return sorted(str(n.get("name", k)) for k, n in nodes.items()) if isinstance(nodes, dict) else []

    def ensure_repository(self, name: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """Make sure the repository is usable; return its ``{"type", "settings"}``.

        With ``settings`` (``{"type": "fs", "settings": {"location": ...}}`` or the flat
        ``{"location": ...}``; type defaults to ``fs``) the repository is registered unless it
        already is with exactly these settings (re-registering a repository in use by a running
        snapshot fails), then verified. Without settings it must already exist.
        """
        L.validate_repository_name(name)
        existing = self.get_repository(name)
        if settings is None:
            if existing is None:
                raise NotFoundError(
                    f"search cluster {self.where}: snapshot repository {name!r} is not registered",
                    hint=f"register it (PUT /_snapshot/{name}) or give the capture repository settings, e.g. "
                    '{"type": "fs", "settings": {"location": "<a directory below path.repo>"}}',
                )
            return existing
        rtype, rsettings = L.normalize_repository_settings(settings)
        if existing is None or not L.repository_matches(existing, rtype, rsettings):
            log.info("registering snapshot repository %s (%s) on %s", name, rtype, self.where)
            self._send(
                _Req(
                    "PUT",
                    f"_snapshot/{_seg(name)}",
                    f"register snapshot repository {name!r}",
                    params={"verify": "false"},
                    body={"type": rtype, "settings": rsettings},
                )
            )
        nodes = self.verify_repository(name)
        log.info("snapshot repository %s verified on %d node(s)", name, len(nodes))
        return self.get_repository(name) or {"type": rtype, "settings": rsettings}

    # ------------------------------------------------------------------ snapshots

    def start_snapshot(
        self,
        repository: str,
        snapshot: str,
        indices: list[str] | str | None,
        include_global_state: bool = False,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start a snapshot and return at once (``wait_for_completion=false``).

        ``ignore_unavailable`` and ``partial`` are false: a missing index or an unassigned primary
        shard makes the server refuse the snapshot (:class:`NotFoundError` / :class:`CaptureError`).
        ``indices=None`` snapshots every index the server includes by default.
        """
        L.validate_repository_name(repository)
        L.validate_snapshot_name(snapshot)
        body: dict[str, Any] = {
            "ignore_unavailable": False,
            "partial": False,
            "include_global_state": bool(include_global_state),
        }
        if indices is not None:
            names = L.split_index_expressions(indices)
            body["indices"] = ",".join(names)
        if metadata:
            body["metadata"] = metadata
        log.info(
            "starting snapshot %s:%s of %s on %s", repository, snapshot, body.get("indices", "all indices"), self.where
        )
        return dict(
            self._send(
                _Req(
                    "PUT",
                    f"_snapshot/{_seg(repository)}/{_seg(snapshot)}",
                    f"start snapshot {repository}:{snapshot}",
                    params={"wait_for_completion": "false"},
                    body=body,
                )
            )
        )

    def get_snapshot(self, repository: str, snapshot: str) -> dict[str, Any]:
        """The raw ``GET /_snapshot/<repo>/<snap>`` answer."""
        return dict(self._send(_req_get_snapshot(repository, snapshot)))

    def snapshot_state(self, repository: str, snapshot: str) -> dict[str, Any]:
        """``{"state", "uuid", "indices", "shards", "failures", "start_time", "end_time", ...}``."""
        return L.pick_snapshot(self.where, repository, snapshot, self.get_snapshot(repository, snapshot))

    def snapshot_exists(self, repository: str, snapshot: str) -> bool:
        """Whether the snapshot is in the repository (an unknown repository raises NotFoundError)."""
        try:
            self.snapshot_state(repository, snapshot)
        except NotFoundError as exc:
            if "repository does not exist" in exc.message:
                raise
            return False
        return True

    def delete_snapshot(self, repository: str, snapshot: str, *, missing_ok: bool = False) -> bool:
        """Delete a snapshot (also cancels a running one). False if it did not exist and ``missing_ok``."""
        try:
            self._send(
                _Req(
                    "DELETE",
                    f"_snapshot/{_seg(repository)}/{_seg(snapshot)}",
                    f"delete snapshot {repository}:{snapshot}",
                )
            )
        except NotFoundError as exc:
            if missing_ok and "snapshot does not exist" in exc.message:
                return False
            raise
        return True

    def wait_for_snapshot(
        self, repository: str, snapshot: str, *, poll_interval: float = 1.0, timeout: float = 3600.0
    ) -> dict[str, Any]:
        """Poll until the snapshot leaves IN_PROGRESS; return its state on SUCCESS.

        PARTIAL, FAILED and INCOMPATIBLE raise :class:`~._logic.SnapshotFailedError` (a CaptureError)
        listing the shard failures; a timeout raises :class:`~._logic.SnapshotTimeoutError`.
        """
        wait = L.SnapshotWait(self.where, repository, snapshot, poll_interval=poll_interval, timeout=timeout)
        while True:
            try:
                state = self.snapshot_state(repository, snapshot)
            except ConnectionFailedError as exc:
                log.warning("polling snapshot %s:%s: %s", repository, snapshot, exc.message)
                wait.on_error(exc)
            else:
                if wait.on_state(state):
                    return state
            time.sleep(wait.next_delay())

    # ------------------------------------------------------------------ indices

    def get_mappings(self, expression: str) -> dict[str, Any]:
        """``GET /<expression>/_mapping`` -> ``{concrete index: mappings}`` (open indices for wildcards)."""
        body = self._send(
            _Req("GET", f"{_index_path(expression)}/_mapping", f"resolve index expression {expression!r}")
        )
        return {str(k): (v or {}).get("mappings", {}) for k, v in (body or {}).items()}

    def resolve_indices(self, indices: list[str] | str | None) -> tuple[list[str], dict[str, Any]]:
        """Resolve names, aliases and patterns to concrete index names; also return their mappings.

        ``None`` means every index (``*``). A pattern does not match dot-indices (``.kibana``,
        ``.tasks``, ...) unless it starts with a dot itself; an explicit name always counts. Names
        starting with ``-`` exclude (``["logs-*", "-logs-debug*"]``). A plain name that does not exist
        raises :class:`NotFoundError` naming it; a result with no index at all raises one too.
        """
        expressions = L.split_index_expressions(indices)
        include = [e for e in expressions if not e.startswith("-")]
        exclude = [e[1:] for e in expressions if e.startswith("-") and len(e) > 1]
        if not include:
            include = ["*"]
        mappings: dict[str, Any] = {}
        for expr in include:
            found = self.get_mappings(expr)
            for name in L.select_resolved(expr, found):
                mappings[name] = found[name]
        names = L.apply_exclusions(mappings, exclude)
        if not names:
            raise NotFoundError(
                f"search cluster {self.where}: no index matches {', '.join(expressions)}",
                hint="check the index names or patterns (GET /_cat/indices?v); dot-indices are only included "
                "when named explicitly or by a pattern starting with '.'",
            )
        return names, {n: mappings[n] for n in names}

    def cat_indices(self, names: list[str]) -> list[dict[str, Any]]:
        """``_cat/indices`` rows (index, health, status) for concrete index names."""
        rows: list[dict[str, Any]] = []
        for batch in L.url_batches(names):
            rows += (
                self._send(
                    _Req(
                        "GET",
                        f"_cat/indices/{_index_path(','.join(batch))}",
                        "read index status (_cat/indices)",
                        params={"format": "json", "h": "index,health,status", "expand_wildcards": "all"},
                    )
                )
                or []
            )
        return rows

    def refresh(self, names: list[str]) -> dict[str, int]:
        """``POST /<names>/_refresh``; returns the summed ``_shards`` counts; failed shards raise."""
        total = {"total": 0, "successful": 0, "failed": 0}
        for batch in L.url_batches(names):
            body = self._send(_Req("POST", f"{_index_path(','.join(batch))}/_refresh", "refresh the indices"))
            shards = body.get("_shards") or {}
            for k in total:
                total[k] += int(shards.get(k) or 0)
            if shards.get("failed"):
                raise CaptureError(
                    f"search cluster {self.where}: refresh failed on {shards.get('failed')} shard(s) of "
                    f"{', '.join(batch)}: {L.error_text({'error': {'failed_shards': shards.get('failures')}})}",
                    hint="check the indices' health (GET /_cluster/health?level=indices)",
                )
        return total

    def count(self, index: str) -> int:
        """Top-level documents of one index (``_count``; nested documents are not counted)."""
        body = self._send(_Req("GET", f"{_index_path(index)}/_count", f"count documents of index {index!r}"))
        shards = body.get("_shards") or {}
        if shards.get("failed"):
            raise CaptureError(
                f"search cluster {self.where}: counting index {index!r} failed on {shards['failed']} of "
                f"{shards.get('total')} shards",
                hint="check the index health (GET /_cluster/health/<index>?level=shards)",
            )
        return int(body["count"])

    def fingerprint_indices(
        self, names: list[str], *, mappings: dict[str, Any] | None = None, refresh: bool = True
    ) -> dict[str, dict[str, Any]]:
        """``{index: {"docs": n, "mapping_sha256": h}}`` for concrete indices.

        Refuses closed and red indices (CaptureError naming them). With ``refresh`` (the default)
        the indices are refreshed first so that ``_count`` sees every indexed document, which is
        what a snapshot (a flushed commit per shard) contains.
        """
        if not names:
            return {}
        rows = {str(r.get("index")): r for r in self.cat_indices(names)}
        closed = sorted(n for n in names if str(rows.get(n, {}).get("status", "")).lower() == "close")
        red = sorted(n for n in names if str(rows.get(n, {}).get("health", "")).lower() == "red" and n not in closed)
        if closed:
            raise CaptureError(
                f"search cluster {self.where}: closed indices cannot be fingerprinted: {', '.join(closed)}",
                hint="open them (POST /<index>/_open) or leave them out of the checkpoint",
            )
        if red:
            raise CaptureError(
                f"search cluster {self.where}: indices are red (a primary shard is unassigned): {', '.join(red)}",
                hint="fix the allocation first (GET /_cluster/allocation/explain); a checkpoint needs every "
                "primary shard",
            )
        if mappings is None or set(names) - set(mappings):
            mappings = dict(mappings or {})
            for batch in L.url_batches([n for n in names if n not in mappings]):
                mappings.update(self.get_mappings(",".join(batch)))
        if refresh:
            self.refresh(names)
        return {n: {"docs": self.count(n), "mapping_sha256": L.mapping_sha256(mappings.get(n))} for n in names}


class AsyncSearchClient(_Base):
    """Asynchronous client for triggers: the subset needed to watch a snapshot.

    ``async with AsyncSearchClient(target) as client: state = await client.wait_for_snapshot(...)``
    """

    def __init__(self, target: SearchTarget) -> None:
        super().__init__(target)
        self._http = httpx.AsyncClient(**_client_kwargs(target))

    async def __aenter__(self) -> AsyncSearchClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, req: _Req) -> Any:
        try:
            resp = await self._http.request(
                req.method, req.path, params=req.params, json=req.body if req.body is not None else None
            )
        except (httpx.TransportError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise self._http_error(req, exc) from None
        return _decode(self.where, req, resp)

    async def info(self) -> dict[str, Any]:
        return L.parse_info(self.where, await self._send(_req_info()))

    async def cluster_health(
        self,
        indices: list[str] | str | None = None,
        *,
        level: str | None = None,
        wait_for_status: str | None = None,
        timeout: str | None = None,
    ) -> dict[str, Any]:
        return dict(await self._send(_req_health(indices, level, wait_for_status, timeout)))

    async def snapshot_state(self, repository: str, snapshot: str) -> dict[str, Any]:
        body = await self._send(_req_get_snapshot(repository, snapshot))
        return L.pick_snapshot(self.where, repository, snapshot, body)

    async def wait_for_snapshot(
        self, repository: str, snapshot: str, *, poll_interval: float = 1.0, timeout: float = 3600.0
    ) -> dict[str, Any]:
        """Same rules as :meth:`SearchClient.wait_for_snapshot` (shared :class:`~._logic.SnapshotWait`)."""
        wait = L.SnapshotWait(self.where, repository, snapshot, poll_interval=poll_interval, timeout=timeout)
        while True:
            try:
                state = await self.snapshot_state(repository, snapshot)
            except ConnectionFailedError as exc:
                log.warning("polling snapshot %s:%s: %s", repository, snapshot, exc.message)
                wait.on_error(exc)
            else:
                if wait.on_state(state):
                    return state
            await asyncio.sleep(wait.next_delay())


async def async_wait_for_snapshot(
    target: SearchTarget, repository: str, snapshot: str, *, poll_interval: float = 1.0, timeout: float = 3600.0
) -> dict[str, Any]:
    """One call for a trigger's ``run()``: poll until SUCCESS (returns the state) or raise."""
    async with AsyncSearchClient(target) as client:
        return await client.wait_for_snapshot(repository, snapshot, poll_interval=poll_interval, timeout=timeout)
