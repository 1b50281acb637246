"""Search health after a restore.

Public API::

    health(client, expectations, *, tolerance=0.0, mappings=True) -> [HealthCheck]

(``list_rollbacks`` and ``drop_rollback`` moved to :mod:`._maintenance`; still importable here.)

``expectations`` has the fingerprint shape ``{"indices": {name: {"docs": n[, "mapping_sha256": h]}}}``
(the artifact's ``fingerprints`` can be passed as they are; a bare ``{name: {...}}`` works too).
Names may be indices or aliases (an alias-mode restore serves ``name`` through an alias).
"""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search._client import SearchClient
from airflow_checkpoint_provider.core.engines.search._maintenance import (
    drop_rollback,
    list_rollbacks,
)
from airflow_checkpoint_provider.core.engines.search._ops import cluster_view
from airflow_checkpoint_provider.core.engines.search._plan import COMPONENT
from airflow_checkpoint_provider.core.errors import EngineError
from airflow_checkpoint_provider.core.restore import HealthCheck, within

__all__ = ["drop_rollback", "health", "list_rollbacks"]  # the rollback helpers live in ._maintenance


def _expected_indices(expectations: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if not isinstance(expectations, dict):
        raise EngineError(
            "search health expectations must be a JSON object",
            hint='pass {"indices": {"orders": {"docs": 1200}}} (the artifact\'s fingerprints)',
        )
    inner = expectations.get("indices") if isinstance(expectations.get("indices"), dict) else expectations
    return {str(k): dict(v) for k, v in (inner or {}).items() if isinstance(v, dict)}


def health(
    client: SearchClient, expectations: dict[str, Any], *, tolerance: float = 0.0, mappings: bool = True
) -> list[HealthCheck]:
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
    checks = [
        HealthCheck(
            COMPONENT,
            "cluster health",
            status in ("green", "yellow"),
            expected="green or yellow",
            actual=status,
            detail=f"red indices: {', '.join(red)}" if red else "",
        )
    ]
    view = cluster_view(client)
    streams = (
        expectations.get("data_streams")
        if isinstance(expectations, dict) and isinstance(expectations.get("data_streams"), dict)
        else {}
    )
    for name in sorted(streams or {}):
        checks.append(
            HealthCheck(
                COMPONENT,
                f"data stream {name} exists",
                name in view.streams,
                expected="a data stream",
                actual="present" if name in view.streams else "missing",
            )
        )
    for name, want in sorted(_expected_indices(expectations).items()):
        if name in view.indices:
            concrete, kind = [name], "index"
        elif name in view.aliases:
            concrete, kind = sorted(view.aliases[name]), f"alias of {', '.join(sorted(view.aliases[name]))}"
        else:
            checks.append(
                HealthCheck(
                    COMPONENT,
                    f"index {name} exists",
                    False,
                    expected="exists",
                    actual="missing",
                    detail="no index or alias of that name",
                )
            )
            continue
        checks.append(HealthCheck(COMPONENT, f"index {name} exists", True, detail=kind))
        bad = [
            f"{c} {view.indices.get(c, {}).get('status')}"
            if view.indices.get(c, {}).get("status") == "close"
            else f"{c} red"
            for c in concrete
            if view.indices.get(c, {}).get("status") == "close" or view.indices.get(c, {}).get("health") == "red"
        ]
        if bad:
            checks.append(
                HealthCheck(
                    COMPONENT, f"index {name} health", False, expected="open, green or yellow", actual=", ".join(bad)
                )
            )
            continue
        checks.append(
            HealthCheck(
                COMPONENT,
                f"index {name} health",
                True,
                actual=", ".join(str(view.indices.get(c, {}).get("health")) for c in concrete),
            )
        )
        if isinstance(want.get("docs"), int):
            try:
                client.refresh([name])
                count = client.count(name)
            except EngineError as exc:
                checks.append(
                    HealthCheck(
                        COMPONENT,
                        f"index {name} docs",
                        False,
                        expected=want["docs"],
                        detail=exc.message.splitlines()[0],
                    )
                )
            else:
                checks.append(
                    HealthCheck(
                        COMPONENT,
                        f"index {name} docs",
                        within(want["docs"], count, tolerance),
                        expected=want["docs"],
                        actual=count,
                        detail=f"tolerance {tolerance:.2%}" if tolerance else "",
                    )
                )
        if mappings and want.get("mapping_sha256"):
            found = client.get_mappings(name)
            hashes = sorted({L.mapping_sha256(m) for m in found.values()})
            checks.append(
                HealthCheck(
                    COMPONENT,
                    f"index {name} mapping",
                    hashes == [want["mapping_sha256"]],
                    expected=want["mapping_sha256"],
                    actual=", ".join(hashes),
                )
            )
    return checks
