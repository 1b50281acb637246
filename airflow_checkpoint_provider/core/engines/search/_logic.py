"""Pure logic of the search engine: names, response parsing, error mapping, state interpretation.

Nothing here does I/O, so the sync client, the async client (triggers) and the unit tests
share exactly the same rules.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_checkpoint_provider.core.engines.search._errors import error_details as error_details
from airflow_checkpoint_provider.core.engines.search._errors import error_for as error_for
from airflow_checkpoint_provider.core.engines.search._errors import error_index as error_index
from airflow_checkpoint_provider.core.engines.search._errors import error_text as error_text
from airflow_checkpoint_provider.core.errors import (
    CaptureError,
    EngineError,
    NotFoundError,
)
from airflow_checkpoint_provider.core.manifest import format_ts, utcnow

ARTIFACT_NAME = "search/snapshot.json"
ARTIFACT_KIND = "search/snapshot"
DOCUMENT_FORMAT = "airflow-checkpoint-search-snapshot"
#: 2 adds the data streams described as such and the templates of the captured indices
DOCUMENT_FORMAT_VERSION = 2

#: Snapshot names this package accepts: lowercase, portable across ES 7-9 and OpenSearch 1-3.
SNAPSHOT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,199}\Z")
#: Characters no repository or index name may contain (server rules, plus whitespace).
_FORBIDDEN_NAME_CHARS = re.compile(r'[\s\\/*?"<>|,#:]')
_SNAPSHOT_NAME_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_WILDCARD = re.compile(r"[*?]")

#: Snapshot states reported by ``GET /_snapshot/<repo>/<snap>``.
RUNNING_STATES = frozenset({"IN_PROGRESS", "STARTED", "INIT"})
FAILED_STATES = frozenset({"PARTIAL", "FAILED", "INCOMPATIBLE"})

#: Keys of repository settings that may hold secrets; redacted before anything is recorded.
_SECRET_SETTING = re.compile(r"(?i)(pass|secret|token|credential|sas|(^|_)key\s*\Z|session)")

#: URLs are limited to 4 KiB by default (``http.max_initial_line_length``): batch index lists.
URL_INDEX_BUDGET = 3000


# --------------------------------------------------------------------------- names


def validate_snapshot_name(name: str) -> str:
    """A user-supplied snapshot name: lowercase letters, digits, ``.``, ``_``, ``+``, ``-``."""
    if not isinstance(name, str) or not SNAPSHOT_NAME_RE.fullmatch(name):
        raise EngineError(
            f"invalid snapshot name {name!r}: use 1-200 lowercase letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit",
            hint="leave the snapshot name unset to get one generated from the checkpoint run "
            "(e.g. 'ckpt-checkpoint_scheduled-20261122t123042z')",
        )
    return name


def validate_repository_name(name: str) -> str:
    if not isinstance(name, str) or not name or name.startswith("_") or _FORBIDDEN_NAME_CHARS.search(name):
        raise EngineError(
            f"invalid snapshot repository name {name!r}: it must be non-empty, must not start with '_' "
            'and must not contain whitespace or any of \\ / * ? " < > | , # :',
            hint="use a simple name such as 'checkpoints'",
        )
    return name


def generate_snapshot_name(key: str, now: datetime | None = None, prefix: str = "ckpt") -> str:
    """``ckpt-<staging key, lowercased and cleaned>-<UTC time>``: lowercase, sortable by time within a key.

    >>> generate_snapshot_name("Dag__Run-0a1b", datetime(2026, 11, 22, 12, 30, 42, tzinfo=UTC))
    'ckpt-dag__run-0a1b-20261122t123042z'
    """
    ts = (now or utcnow()).astimezone(UTC).strftime("%Y%m%dt%H%M%Sz")
    clean = _SNAPSHOT_NAME_UNSAFE.sub("_", key.lower()).strip("._-+")
    if len(clean) > 150:  # keep the digest suffix of staging keys, which makes them unique
        clean = clean[:100] + "_" + hashlib.sha256(key.encode()).hexdigest()[:12]
    name = f"{prefix}-{clean}-{ts}" if clean else f"{prefix}-{ts}"
    return validate_snapshot_name(name)


def split_index_expressions(indices: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """``"a,b*"`` or ``["a", "b*"]`` -> ``["a", "b*"]``; None, ``""``, ``[]`` -> ``["*"]`` (all)."""
    if indices is None:
        return ["*"]
    items = indices.split(",") if isinstance(indices, str) else [str(i) for i in indices]
    for item in items:
        if "," in item:
            items = [p for i in items for p in i.split(",")]
            break
    out = [i.strip() for i in items if i and i.strip()]
    return out or ["*"]


def is_pattern(expression: str) -> bool:
    return bool(_WILDCARD.search(expression))


def select_resolved(expression: str, names: Iterable[str]) -> list[str]:
    """The concrete indices an expression stands for in a checkpoint.

    A wildcard expression does not pull in dot-indices (``.kibana``, ``.tasks``, data-stream
    backing indices ...) unless the pattern itself starts with a dot; explicit names and aliases
    keep whatever they resolve to.
    """
    names = sorted(set(names))
    if is_pattern(expression) and not expression.startswith("."):
        names = [n for n in names if not n.startswith(".")]
    return names


def apply_exclusions(names: Iterable[str], exclusions: Iterable[str]) -> list[str]:
    """Drop names matching any ``-pattern`` exclusion (given without the dash)."""
    excl = list(exclusions)
    return sorted(n for n in set(names) if not any(fnmatch.fnmatchcase(n, p) for p in excl))


def url_batches(names: list[str], budget: int = URL_INDEX_BUDGET) -> Iterator[list[str]]:
    """Split a list of index names so that each comma-joined batch fits into a URL."""
    batch: list[str] = []
    size = 0
    for name in names:
        if batch and size + len(name) + 1 > budget:
            yield batch
            batch, size = [], 0
        batch.append(name)
        size += len(name) + 1
    if batch:
        yield batch


# --------------------------------------------------------------------------- hashing, settings


def canonical_json_any(obj: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8. Unlike the manifest's form, floats are allowed
    (mappings may hold e.g. ``scaling_factor: 100.0``); the server's output is stable."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def mapping_sha256(mappings: dict[str, Any] | None) -> str:
    """sha256 of the canonical JSON of one index's ``mappings`` object (``{}`` for none)."""
    return hashlib.sha256(canonical_json_any(mappings or {})).hexdigest()


def normalize_repository_settings(settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``{"type": "fs", "settings": {...}}`` or flat ``{"location": ..., "type": "fs"}`` -> (type, settings)."""
    if not isinstance(settings, dict):
        raise EngineError(
            f"repository settings must be a JSON object, got {type(settings).__name__}",
            hint='pass e.g. {"type": "fs", "settings": {"location": "/mnt/snapshots/app"}}',
        )
    if "settings" in settings and isinstance(settings["settings"], dict):
        extra = set(settings) - {"type", "settings"}
        if extra:
            raise EngineError(
                f"repository settings have unknown top-level keys {sorted(extra)}",
                hint='use {"type": "fs", "settings": {"location": ...}}',
            )
        return str(settings.get("type") or "fs"), dict(settings["settings"])
    flat = dict(settings)
    rtype = str(flat.pop("type", None) or "fs")
    return rtype, flat


def _setting_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def repository_matches(existing: dict[str, Any], rtype: str, settings: dict[str, Any]) -> bool:
    """Whether a registered repository (``GET /_snapshot/<name>`` entry) has this type and settings.

    The server returns every setting as a string, so values are compared as strings.
    """
    if existing.get("type") != rtype:
        return False
    have = {k: _setting_str(v) for k, v in (existing.get("settings") or {}).items()}
    want = {k: _setting_str(v) for k, v in settings.items()}
    return have == want


def redact_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Repository settings safe to record: values of secret-looking keys become ``"<redacted>"``."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out[key] = redact_settings(value)
        elif _SECRET_SETTING.search(key):
            out[key] = "<redacted>"
        else:
            out[key] = _setting_str(value) if isinstance(value, float) else value
    return out


# --------------------------------------------------------------------------- responses


def parse_info(where: str, body: Any) -> dict[str, Any]:
    """``GET /`` -> ``{"flavor", "version", "cluster_name", "cluster_uuid"}``."""
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, dict) or not version.get("number"):
        raise EngineError(
            f"{where} did not answer like an Elasticsearch or OpenSearch node: {json.dumps(body)[:200]}",
            hint="check the URL of the connection (scheme, host and port of the HTTP interface)",
        )
    flavor = "opensearch" if version.get("distribution") == "opensearch" else "elasticsearch"
    return {
        "flavor": flavor,
        "version": str(version["number"]),
        "cluster_name": str(body.get("cluster_name", "")),
        "cluster_uuid": str(body.get("cluster_uuid", "")),
    }


def ms_to_ts(ms: Any) -> str:
    """Epoch milliseconds from the server -> RFC 3339 UTC (``""`` for none)."""
    if not isinstance(ms, int) or isinstance(ms, bool) or ms <= 0:
        return ""
    return format_ts(datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_snapshot(item: dict[str, Any]) -> dict[str, Any]:
    """One entry of ``GET /_snapshot/<repo>/<snap>`` -> the small state dict used everywhere."""
    shards = item.get("shards") or {}
    failures = []
    for f in item.get("failures") or []:
        if not isinstance(f, dict):
            continue
        failures.append(
            {
                "index": str(f.get("index", "")),
                "shard": _int(f.get("shard_id", f.get("shard"))),
                "reason": str(f.get("reason", "")),
                "status": str(f.get("status", "")),
                "node_id": str(f.get("node_id", "") or ""),
            }
        )
    start_ms, end_ms = _int(item.get("start_time_in_millis")), _int(item.get("end_time_in_millis"))
    return {
        "snapshot": str(item.get("snapshot", "")),
        "uuid": str(item.get("uuid", "")),
        "state": str(item.get("state", "")).upper(),
        "reason": str(item.get("reason") or ""),
        "indices": sorted(str(i) for i in item.get("indices") or []),
        "data_streams": sorted(str(i) for i in item.get("data_streams") or []),
        "include_global_state": bool(item.get("include_global_state", False)),
        "shards": {k: _int(shards.get(k)) for k in ("total", "successful", "failed")},
        "failures": failures,
        "start_time": ms_to_ts(start_ms),
        "end_time": ms_to_ts(end_ms),
        "start_time_in_millis": start_ms,
        "end_time_in_millis": end_ms,
        "duration_in_millis": _int(item.get("duration_in_millis")),
        "version": str(item.get("version", "")),
    }


def pick_snapshot(where: str, repository: str, snapshot: str, body: Any) -> dict[str, Any]:
    """Find the named snapshot in a ``GET /_snapshot/<repo>/<snap>`` body (7.x, 8.x and OpenSearch shapes)."""
    items: list[Any] = []
    if isinstance(body, dict):
        items = list(body.get("snapshots") or [])
        for resp in body.get("responses") or []:  # ES 7.x multi-repository shape
            if isinstance(resp, dict):
                items += resp.get("snapshots") or []
    for item in items:
        if isinstance(item, dict) and item.get("snapshot") == snapshot:
            return parse_snapshot(item)
    raise NotFoundError(
        f"search cluster {where}: snapshot {repository}:{snapshot} is not in the repository",
        hint=f"list the snapshots with GET /_snapshot/{repository}/_all",
    )


class SnapshotFailedError(CaptureError):
    """The snapshot ended PARTIAL, FAILED or INCOMPATIBLE. ``state`` is the parsed snapshot state."""

    def __init__(self, message: str, *, hint: str | None = None, state: dict[str, Any] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.state = state or {}


class SnapshotTimeoutError(CaptureError):
    """The snapshot was still running when the wait gave up (it keeps running on the cluster)."""


def format_failures(failures: list[dict[str, Any]], limit: int = 50) -> list[str]:
    lines = []
    for f in failures[:limit]:
        status = f" ({f['status']})" if f.get("status") else ""
        lines.append(
            f"  - index {f.get('index')} shard {f.get('shard')}: {f.get('reason') or 'no reason given'}{status}"
        )
    if len(failures) > limit:
        lines.append(f"  - ... and {len(failures) - limit} more")
    return lines


def snapshot_failure(
    where: str, repository: str, state: dict[str, Any], *, deleted: bool = False
) -> SnapshotFailedError:
    """The error for a snapshot that ended PARTIAL, FAILED or INCOMPATIBLE, listing the shard failures."""
    name = f"{repository}:{state.get('snapshot')}"
    shards = state.get("shards") or {}
    lines = [
        f"search cluster {where}: snapshot {name} ended {state.get('state')}: "
        f"{shards.get('failed', 0)} of {shards.get('total', 0)} shards failed"
    ]
    if state.get("reason"):
        lines.append(f"reason: {state['reason']}")
    failed_indices = sorted({f["index"] for f in state.get("failures") or [] if f.get("index")})
    if failed_indices:
        lines.append(f"failed indices: {', '.join(failed_indices)}")
    lines += format_failures(state.get("failures") or [])
    if state.get("state") == "INCOMPATIBLE":
        lines.append("the snapshot was written by a version this cluster cannot read")
    lines.append(
        "the failed snapshot was deleted from the repository"
        if deleted
        else "the failed snapshot remains in the repository"
    )
    cleanup = "" if deleted else f"; delete it with DELETE /_snapshot/{repository}/{state.get('snapshot')}"
    return SnapshotFailedError(
        "\n".join(lines),
        hint="a checkpoint needs every shard: fix the failed shards (GET /_cluster/health?level=indices, "
        f"GET /_cluster/allocation/explain) and take a new checkpoint{cleanup}",
        state=state,
    )


def snapshot_done(where: str, repository: str, state: dict[str, Any]) -> bool:
    """Interpret a snapshot state: False while it runs, True on SUCCESS; raise on anything else."""
    st = state.get("state", "")
    if st == "SUCCESS":
        return True
    if st in RUNNING_STATES:
        return False
    if st in FAILED_STATES:
        raise snapshot_failure(where, repository, state)
    raise CaptureError(
        f"search cluster {where}: snapshot {repository}:{state.get('snapshot')} is in unknown state {st!r}",
        hint="inspect it with GET /_snapshot/<repository>/<snapshot>",
    )


class SnapshotWait:
    """The polling rules for one snapshot, shared by the sync loop and the async (trigger) loop.

    Usage: ``on_state(state)`` after each poll (True when done, raises on failure), ``on_error(exc)``
    for a transient connection error, ``next_delay()`` for the sleep before the next poll (raises
    :class:`SnapshotTimeoutError` once the deadline has passed).
    """

    def __init__(
        self,
        where: str,
        repository: str,
        snapshot: str,
        *,
        poll_interval: float = 1.0,
        timeout: float = 3600.0,
        max_transient_errors: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where, self.repository, self.snapshot = where, repository, snapshot
        self.poll_interval = max(0.05, float(poll_interval))
        self.timeout = float(timeout)
        self.max_transient_errors = max_transient_errors
        self.clock = clock
        self.started = clock()
        self.deadline = self.started + self.timeout
        self.last_state: dict[str, Any] | None = None
        self.errors_in_a_row = 0
        self.polls = 0

    def on_state(self, state: dict[str, Any]) -> bool:
        self.polls += 1
        self.errors_in_a_row = 0
        self.last_state = state
        return snapshot_done(self.where, self.repository, state)

    def on_error(self, exc: Exception) -> None:
        """A connection error while polling: tolerated a few times in a row, then re-raised."""
        self.polls += 1
        self.errors_in_a_row += 1
        if self.errors_in_a_row > self.max_transient_errors or self.clock() >= self.deadline:
            raise exc

    def next_delay(self) -> float:
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            st = self.last_state or {}
            shards = st.get("shards") or {}
            progress = (
                f" ({shards.get('successful', 0)} of {shards.get('total', 0)} shards done)"
                if shards.get("total")
                else ""
            )
            raise SnapshotTimeoutError(
                f"search cluster {self.where}: snapshot {self.repository}:{self.snapshot} still "
                f"{st.get('state') or 'not reported'} after {self.timeout:g}s{progress}",
                hint="the snapshot keeps running on the cluster: raise the timeout, watch it with "
                f"GET /_snapshot/{self.repository}/{self.snapshot}/_status, or cancel it with "
                f"DELETE /_snapshot/{self.repository}/{self.snapshot}",
            )
        return min(self.poll_interval, remaining)


# --------------------------------------------------------------------------- the artifact


def snapshot_document(
    *,
    info: dict[str, Any],
    repository: str,
    repository_type: str,
    repository_settings: dict[str, Any],
    state: dict[str, Any],
    fingerprints: dict[str, Any],
    requested: list[str] | None,
    counted_at: str,
    aliases: dict[str, Any] | None = None,
    data_streams: dict[str, Any] | None = None,
    templates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON content of ``search/snapshot.json``: everything a restore needs to find the snapshot."""
    return {
        "format": DOCUMENT_FORMAT,
        "format_version": DOCUMENT_FORMAT_VERSION,
        "engine": info.get("flavor", ""),
        "engine_version": info.get("version", ""),
        "cluster_name": info.get("cluster_name", ""),
        "cluster_uuid": info.get("cluster_uuid", ""),
        "repository": {"name": repository, "type": repository_type, "settings": repository_settings},
        "snapshot": {
            "name": state.get("snapshot", ""),
            "uuid": state.get("uuid", ""),
            "state": state.get("state", ""),
            "indices": state.get("indices", []),
            "data_streams": state.get("data_streams", []),
            "include_global_state": state.get("include_global_state", False),
            "shards": state.get("shards", {}),
            "start_time": state.get("start_time", ""),
            "end_time": state.get("end_time", ""),
            "start_time_in_millis": state.get("start_time_in_millis", 0),
            "end_time_in_millis": state.get("end_time_in_millis", 0),
            "duration_in_millis": state.get("duration_in_millis", 0),
            "version": state.get("version", ""),
        },
        "requested_indices": requested,
        "counted_at": counted_at,
        "fingerprints": fingerprints,
        "aliases": aliases or {},
        "data_streams": data_streams or {},
        "templates": templates or {},
    }
