"""Search health after a restore, and the rollback copies a restore keeps.

Public API::

    health(client, expectations, *, tolerance=0.0, mappings=True) -> [HealthCheck]
    list_rollbacks(client) -> [{"index", "source", "short_id", "stamp", "created", "size_bytes",
                                "docs", "health", "status", "aliases"}]
    drop_rollback(client, name) -> None

``expectations`` has the fingerprint shape ``{"indices": {name: {"docs": n[, "mapping_sha256": h]}}}``
(the artifact's ``fingerprints`` can be passed as they are; a bare ``{name: {...}}`` works too).
Names may be indices or aliases (an alias-mode restore serves ``name`` through an alias).
"""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search._client import SearchClient, _index_path, _Req
from airflow_checkpoint_provider.core.engines.search.restore import (
    COMPONENT,
    ROLLBACK_RE,
    _delete_index,
    _send,
    cluster_view,
)
from airflow_checkpoint_provider.core.errors import EngineError, NotFoundError
from airflow_checkpoint_provider.core.restore import HealthCheck, within


def _expected_indices(expectations: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if not isinstance(expectations, dict):
        raise EngineError("search health expectations must be a JSON object",
                          hint='pass {"indices": {"orders": {"docs": 1200}}} (the artifact\'s fingerprints)')
    inner = expectations.get("indices") if isinstance(expectations.get("indices"), dict) else expectations
    return {str(k): dict(v) for k, v in inner.items() if isinstance(v, dict)}


def health(client: SearchClient, expectations: dict[str, Any], *, tolerance: float = 0.0,
           mappings: bool = True) -> list[HealthCheck]:
    """Check the cluster after a restore; one :class:`HealthCheck` per check, failures included.

    - ``connect``: the cluster answers (only reported when it does not);
    - ``cluster health``: green or yellow; red fails and names the red indices;
    - per expected name: ``index <name> exists`` (index or alias), ``index <name> health`` (not red,
      not closed), ``index <name> docs`` (``_count`` after a refresh, within ``tolerance``, a fraction:
      0.0 = exact), and with ``mappings`` and a recorded ``mapping_sha256``, ``index <name> mapping``.
    """
    try:
        cluster = client.cluster_health(level="indices")
    except EngineError as exc:
        return [HealthCheck(COMPONENT, "connect", False, detail=exc.message.splitlines()[0])]
    status = str(cluster.get("status") or "")
    red = sorted(str(i) for i, v in (cluster.get("indices") or {}).items() if (v or {}).get("status") == "red")
    checks = [HealthCheck(COMPONENT, "cluster health", status in ("green", "yellow"), expected="green or yellow",
                          actual=status, detail=f"red indices: {', '.join(red)}" if red else "")]
    view = cluster_view(client)
    for name, want in sorted(_expected_indices(expectations).items()):
        if name in view.indices:
            concrete, kind = [name], "index"
        elif name in view.aliases:
            concrete, kind = sorted(view.aliases[name]), f"alias of {', '.join(sorted(view.aliases[name]))}"
        else:
            checks.append(HealthCheck(COMPONENT, f"index {name} exists", False, expected="exists", actual="missing",
                                      detail="no index or alias of that name"))
            continue
        checks.append(HealthCheck(COMPONENT, f"index {name} exists", True, detail=kind))
        bad = [f"{c} {view.indices.get(c, {}).get('status')}" if view.indices.get(c, {}).get("status") == "close"
               else f"{c} red" for c in concrete
               if view.indices.get(c, {}).get("status") == "close" or view.indices.get(c, {}).get("health") == "red"]
        if bad:
            checks.append(HealthCheck(COMPONENT, f"index {name} health", False, expected="open, green or yellow",
                                      actual=", ".join(bad)))
            continue
        checks.append(HealthCheck(COMPONENT, f"index {name} health", True,
                                  actual=", ".join(str(view.indices.get(c, {}).get("health")) for c in concrete)))
        if isinstance(want.get("docs"), int):
            try:
                client.refresh([name])
                count = client.count(name)
            except EngineError as exc:
                checks.append(HealthCheck(COMPONENT, f"index {name} docs", False, expected=want["docs"],
                                          detail=exc.message.splitlines()[0]))
            else:
                checks.append(HealthCheck(COMPONENT, f"index {name} docs", within(want["docs"], count, tolerance),
                                          expected=want["docs"], actual=count,
                                          detail=f"tolerance {tolerance:.2%}" if tolerance else ""))
        if mappings and want.get("mapping_sha256"):
            found = client.get_mappings(name)
            hashes = sorted({L.mapping_sha256(m) for m in found.values()})
            checks.append(HealthCheck(COMPONENT, f"index {name} mapping", hashes == [want["mapping_sha256"]],
                                      expected=want["mapping_sha256"], actual=", ".join(hashes)))
    return checks


def list_rollbacks(client: SearchClient) -> list[dict[str, Any]]:
    """The rollback copies restores kept (``<index>__rollback_<short id>_<yyyymmddhhmmss>``), newest first."""
    rows = _send(client, _Req("GET", "_cat/indices/*__rollback_*", "list rollback copies (_cat/indices)", params={
        "format": "json", "h": "index,creation.date,store.size,docs.count,health,status", "bytes": "b",
        "expand_wildcards": "all"})) or []
    view = cluster_view(client)
    out = []
    for r in rows:
        name = str(r.get("index") or "")
        m = ROLLBACK_RE.match(name)
        if not m:
            continue
        created_ms = int(r["creation.date"]) if str(r.get("creation.date") or "").isdigit() else 0
        out.append({
            "index": name,
            "source": m.group("source"),
            "short_id": m.group("short"),
            "stamp": m.group("stamp"),
            "created": L.ms_to_ts(created_ms),
            "size_bytes": int(r["store.size"]) if str(r.get("store.size") or "").isdigit() else None,
            "docs": int(r["docs.count"]) if str(r.get("docs.count") or "").isdigit() else None,
            "health": r.get("health"),
            "status": r.get("status"),
            "aliases": sorted(view.aliases_of(name)),
        })
    return sorted(out, key=lambda x: (x["created"], x["index"]), reverse=True)


def drop_rollback(client: SearchClient, name: str) -> None:
    """Delete one rollback copy. Refuses anything not named like one, and copies an alias points at."""
    if not isinstance(name, str) or not ROLLBACK_RE.match(name) or any(ch in name for ch in "*?,"):
        raise EngineError(
            f"refusing to drop {name!r}: it is not a rollback copy (<index>__rollback_<id>_<yyyymmddhhmmss>)",
            hint="list the rollback copies with list_rollbacks (airflow-checkpoint search rollbacks)",
        )
    rows = _send(client, _Req("GET", f"_cat/indices/{_index_path(name)}", f"look up index {name!r}",
                              params={"format": "json", "h": "index", "expand_wildcards": "all"},
                              missing_ok=True))
    if not rows or not any(r.get("index") == name for r in rows):
        raise NotFoundError(f"search cluster {client.where}: no rollback copy {name!r}",
                            hint="list the rollback copies with list_rollbacks")
    aliases = sorted(cluster_view(client).aliases_of(name))
    if aliases:
        raise EngineError(
            f"search cluster {client.where}: refusing to drop {name}: the aliases {', '.join(aliases)} point at it, "
            "so it is serving",
            hint=f"remove the aliases first (POST /_aliases) if {name} really is no longer needed",
        )
    _delete_index(client, name, missing_ok=False)
