"""Which product and version can restore which snapshot (the products' own rules)."""

from __future__ import annotations

import re

_VERSION_RE = re.compile(r"\A\s*(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(version: str) -> tuple[int, int, int] | None:
    """``"7.10.2"`` -> ``(7, 10, 2)``; ``"2.19"`` -> ``(2, 19, 0)``; unparsable -> None."""
    m = _VERSION_RE.match(str(version or ""))
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def product(flavor: str) -> str:
    return "OpenSearch" if flavor == "opensearch" else "Elasticsearch"


def compatibility_problems(
    snapshot_flavor: str, snapshot_version: str, cluster_flavor: str, cluster_version: str
) -> list[str]:
    """Whether a cluster can restore a snapshot written by another (or the same) product and version.

    Rules (the products' own): within one product a snapshot restores into the same or a newer
    version, at most one major version up (a snapshot from major N restores into N or N+1 only;
    never into an older version). Across products the only path is Elasticsearch OSS 6.x/7.x (up
    to 7.10.2, the version OpenSearch forked from) into OpenSearch (6.x into 1.x; 7.x into 1.x or
    2.x). An OpenSearch snapshot never restores into Elasticsearch, and Elasticsearch 7.11 and
    later never into OpenSearch. Returns one message per problem (empty: compatible).
    """
    s_flavor = (snapshot_flavor or "").lower()
    c_flavor = (cluster_flavor or "").lower()
    snap, clus = parse_version(snapshot_version), parse_version(cluster_version)
    s_name = f"{product(s_flavor)} {snapshot_version}"
    c_name = f"{product(c_flavor)} {cluster_version}"
    if s_flavor not in ("opensearch", "elasticsearch"):
        return [
            f"the checkpoint does not say which product took the snapshot (engine {snapshot_flavor!r}); "
            f"refusing to restore it into {c_name}"
        ]
    if snap is None or clus is None:
        which = f"snapshot version {snapshot_version!r}" if snap is None else f"cluster version {cluster_version!r}"
        return [f"cannot tell whether {c_name} can read a snapshot of {s_name}: unparsable {which}"]
    if s_flavor != c_flavor:
        if s_flavor == "opensearch":
            return [
                f"the snapshot was taken by {s_name}; Elasticsearch cannot restore OpenSearch snapshots "
                f"(the target cluster runs {c_name}): restore it into an OpenSearch cluster of version "
                f"{snap[0]}.x or {snap[0] + 1}.x"
            ]
        if snap > (7, 10, 2) or snap[0] < 6:
            return [
                f"the snapshot was taken by {s_name}; OpenSearch reads snapshots of Elasticsearch 6.x and "
                f"7.x up to 7.10.2 only (the target cluster runs {c_name}): restore it into Elasticsearch "
                f"{snap[0]}.x or {snap[0] + 1}.x"
            ]
        allowed = (1,) if snap[0] == 6 else (1, 2)
        if clus[0] not in allowed:
            return [
                f"the snapshot was taken by {s_name}; OpenSearch {' or '.join(f'{m}.x' for m in allowed)} can "
                f"restore it, the target cluster runs {c_name}"
            ]
        return []
    if clus < snap:
        return [
            f"the snapshot was taken by {s_name}, newer than the target cluster ({c_name}): a snapshot "
            f"never restores into an older version; upgrade the cluster to {snap[0]}.{snap[1]}.{snap[2]} "
            f"or later"
        ]
    if clus[0] > snap[0] + 1:
        return [
            f"the snapshot was taken by {s_name}; {c_name} is more than one major version newer: a "
            f"snapshot from major {snap[0]} restores into {snap[0]}.x or {snap[0] + 1}.x only (restore "
            f"it into a {snap[0] + 1}.x cluster and reindex there first)"
        ]
    return []
