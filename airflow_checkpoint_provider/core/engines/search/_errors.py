"""Server error bodies -> the package's exceptions (pure; shared by the sync and async clients)."""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    CaptureError,
    EngineError,
    NotFoundError,
)


def error_details(body: Any) -> list[tuple[str, str]]:
    """(type, reason) pairs of a server error body, outermost first, without duplicates.

    Handles ``{"error": {"type", "reason", "root_cause": [...], "caused_by": {...}}, "status": N}``,
    ``{"error": "text"}`` and plain text bodies.
    """
    out: list[tuple[str, str]] = []

    def add(t: Any, r: Any) -> None:
        pair = (str(t or ""), str(r or ""))
        if (pair[0] or pair[1]) and pair not in out:
            out.append(pair)

    def walk(err: Any, depth: int = 0) -> None:
        if depth > 8:
            return
        if isinstance(err, dict):
            add(err.get("type"), err.get("reason"))
            if isinstance(err.get("caused_by"), dict):
                walk(err["caused_by"], depth + 1)
            for rc in err.get("root_cause") or []:
                walk(rc, depth + 1)
            for fail in err.get("failed_shards") or []:
                if isinstance(fail, dict):
                    walk(fail.get("reason"), depth + 1)
        elif isinstance(err, str):
            add("", err)

    if isinstance(body, dict):
        if "error" in body:
            walk(body["error"])
        elif body.get("message"):  # proxies / cloud front-ends
            add("", body["message"])
    elif isinstance(body, str) and body.strip():
        add("", body.strip()[:500])
    return out


def error_text(body: Any) -> str:
    details = error_details(body)
    if not details:
        return "no error details"
    return "; caused by ".join(f"{t}: {r}" if t and r else (t or r) for t, r in details)


def error_index(body: Any) -> str | None:
    """The index an ``index_not_found_exception`` names."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        for cand in [err, *(err.get("root_cause") or [])]:
            if isinstance(cand, dict):
                idx = cand.get("index") or cand.get("resource.id")
                if idx:
                    return str(idx)
    return None


def _types(body: Any) -> set[str]:
    return {t for t, _ in error_details(body)}


def _reasons(body: Any) -> list[str]:
    return [r for _, r in error_details(body) if r]


def error_for(where: str, what: str, status: int, body: Any) -> EngineError:
    """The exception for a failed HTTP call: ``where`` is the cluster URL, ``what`` the action.

    Every message names the cluster and quotes the server's reason; every one ends with a HINT.
    """
    text = error_text(body)
    types = _types(body)
    prefix = f"search cluster {where}: {what} failed (HTTP {status})"
    path_repo_reason = next((r for r in _reasons(body) if "path.repo" in r), None)

    if status == 401:
        return AuthenticationError(
            f"{prefix}: the credentials were refused: {text}",
            hint="check the connection's login/password or api_key (an API key must be the base64 "
            "'encoded' value, or 'id:api_key')",
        )
    if status == 403:
        return AuthenticationError(
            f"{prefix}: the account lacks a permission: {text}",
            hint="grant the user the cluster privileges 'monitor', 'manage_snapshot' (or 'create_snapshot' "
            "for an existing repository) and, on the captured indices, 'monitor' and 'read'",
        )
    if path_repo_reason:
        return EngineError(
            f"{prefix}: the server refused the repository location: {path_repo_reason}",
            hint="add the location (or a parent directory of it) to 'path.repo' in elasticsearch.yml / "
            "opensearch.yml on every master and data node, mount the same shared filesystem there, and "
            "restart the nodes; or choose a location below an existing path.repo entry",
        )
    if "repository_missing_exception" in types:
        return NotFoundError(
            f"{prefix}: the snapshot repository does not exist: {text}",
            hint="list the registered repositories with GET /_snapshot; register it with PUT /_snapshot/<name> "
            '(a capture also does this when given repository settings such as {"type": "fs", "settings": '
            '{"location": "<dir below path.repo>"}})',
        )
    if "snapshot_missing_exception" in types:
        return NotFoundError(
            f"{prefix}: the snapshot does not exist: {text}",
            hint="list the repository's snapshots with GET /_snapshot/<repository>/_all; it may have been "
            "deleted by retention or by hand",
        )
    if "index_not_found_exception" in types:
        index = error_index(body)
        return NotFoundError(
            f"{prefix}: no such index{' ' + repr(index) if index else ''}: {text}",
            hint="check the index names (GET /_cat/indices?v); wildcards such as 'logs-*' may match nothing "
            "without an error, plain names must exist",
        )
    if "repository_verification_exception" in types:
        return EngineError(
            f"{prefix}: the repository could not be verified: {text}",
            hint="every master and data node must see the same repository location, writable by the "
            "search process (for 'fs': the same shared filesystem mounted at the same path)",
        )
    if types & {"concurrent_snapshot_execution_exception"}:
        return CaptureError(
            f"{prefix}: another snapshot or snapshot deletion is running: {text}",
            hint="retry when it has finished (GET /_snapshot/_status); older clusters run one snapshot at a time",
        )
    if "invalid_snapshot_name_exception" in types:
        return CaptureError(
            f"{prefix}: the snapshot name was refused: {text}",
            hint="snapshot names must be unique in the repository and lowercase; leave the name unset to "
            "get a generated one",
        )
    if types & {"snapshot_exception", "snapshot_creation_exception"}:
        return CaptureError(
            f"{prefix}: the snapshot was refused: {text}",
            hint="check the health of the listed indices (GET /_cluster/health?level=indices and "
            "GET /_cluster/allocation/explain): every primary shard must be assigned",
        )
    if status == 404:
        return NotFoundError(f"{prefix}: not found: {text}", hint="check the names used and the cluster URL")
    if status in (502, 503, 504):
        return EngineError(
            f"{prefix}: the cluster is unavailable: {text}",
            hint="check cluster health (GET /_cluster/health); a red index or a missing master makes requests fail",
        )
    return EngineError(f"{prefix}: {text}", hint="see the server's reason above and the cluster's log")
