"""Search restore: restore the snapshot side by side, verify it, then cut over.

Public API::

    plan_restore(client, artifact, doc=None, *, checkpoint_id, indices=None, swap="auto",
                 include_global_state=False, repository_settings=None) -> RestorePlan
    restore(client, artifact, doc=None, *, checkpoint_id, indices=None, swap="auto",
            include_global_state=False, wait_timeout=3600, log=None, repository_settings=None,
            poll_interval=1.0) -> RestoreOutcome
    compatibility_problems(snapshot_flavor, snapshot_version, cluster_flavor, cluster_version) -> [str]
    collect_aliases(client, indices) -> {alias: {index: properties}}
    staging_name(index, short_id), rollback_name(index, short_id, stamp), short_id(checkpoint_id)

``artifact`` is the checkpoint's ``search/snapshot.json`` :class:`~...manifest.Artifact` (its
``meta`` names the repository and snapshot, its ``fingerprints`` hold the expected documents per
index); ``doc`` is the artifact's JSON document (``json.loads`` of its bytes). Either may be
omitted when the other carries what is needed; when both are given the artifact's fingerprints
(covered by the manifest's checksum) win.

**Side by side.** Every selected index ``X`` is restored from the snapshot under the name
``X__restoring_<short id>`` (``rename_pattern`` ``(.+)``, ``include_aliases`` false, the global
state only on request) while ``X`` keeps serving. The restore waits until every primary shard of
the copies has started, then refreshes them and compares ``_count`` and the mapping hash with the
checkpoint's fingerprints. Any difference deletes the copies and raises
:class:`RestoreVerificationError` naming each index and both numbers: nothing serving was touched.

**Cut-over**, per index, by the kind of name ``X`` is now (``swap="auto"``):

- ``X`` is an alias -> ``switch-alias``: one atomic ``POST /_aliases`` removes ``X`` from the
  indices it points at and adds it to the restored copy, which keeps its ``__restoring_`` name
  and now serves. The previously aliased indices are the rollback copies (left as they are).
- ``X`` is a concrete index -> ``replace``: write-block ``X``, ``_clone`` it to
  ``X__rollback_<short id>_<UTC yyyymmddhhmmss>`` (the rollback copy, kept read-only), check
  the clone holds as many documents, delete ``X``, ``_clone`` the (write-blocked) restored copy
  into ``X`` with the original's replica count and write block, wait for its primaries.
- ``X`` does not exist -> ``create``: the clone only.

``swap="alias"`` also turns an absent ``X`` into an alias (``create-alias``) and refuses a
concrete ``X``; ``swap="replace"`` turns an alias ``X`` into a concrete index
(``replace-alias``: the alias is removed, the indices it pointed at stay as rollback copies).

**Aliases.** Snapshots are restored without their aliases (restoring them would change what
serving aliases point at before anything is verified). When the document records the aliases of
the captured indices (``doc["aliases"]``: ``{alias: {index: properties}}``, as built by
:func:`collect_aliases`), the restore reinstates them in one atomic ``POST /_aliases`` at the end
of the cut-over, removing those aliases from indices the checkpoint did not have them on. Without
that record, the aliases a replaced index carried are moved onto its replacement, and no other
alias is touched.

After the cut-over every target is refreshed and counted again. If anything fails during the
cut-over, every step already taken is undone in reverse (an index deleted for replacement is
cloned back from its rollback copy, aliases are switched back) and :class:`CutOverError` says
what state each index was left in; if an undo step fails too, the message lists the manual steps.
When everything succeeded the ``__restoring_`` copies of cloned indices are deleted.

**Leftovers.** ``X__restoring_*`` indices that no alias points at (a restore killed half-way, or
the copy an earlier alias switch served and a later one switched away from) are reported by the
plan and never deleted or reused: the short id gets a ``-2``, ``-3`` ... suffix instead.

**Compatibility.** The snapshot must exist in the repository (registered on the target cluster;
``repository_settings`` registers it, e.g. read-only on another cluster), be SUCCESS and carry
the recorded uuid. Product and version rules: see :func:`compatibility_problems`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search._client import SearchClient, _index_path, _Req, _seg
from airflow_checkpoint_provider.core.errors import CaptureError, EngineError, NotFoundError
from airflow_checkpoint_provider.core.manifest import Artifact, utcnow
from airflow_checkpoint_provider.core.restore import PlanItem, RestoreOutcome, RestorePlan

_log = logging.getLogger(__name__)

COMPONENT = "search"
STAGING_MARK = "__restoring_"
ROLLBACK_MARK = "__rollback_"
SWAP_MODES = ("auto", "alias", "replace")
#: Index names are limited to 255 bytes by both products.
MAX_INDEX_NAME_BYTES = 255
#: Alias properties carried over by ``POST /_aliases`` ``add`` actions.
ALIAS_PROPERTIES = ("filter", "index_routing", "search_routing", "is_write_index", "is_hidden")

_SHORT_ID_RE = re.compile(r"-([0-9a-f]{6,12})$")
_SHORT_ID_OK = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_VERSION_RE = re.compile(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?")
#: How long an index may stay red (a failed shard allocation) before waiting gives up early.
RED_GRACE_SECONDS = 20.0


class RestoreRefusedError(EngineError):
    """The restore plan has problems (incompatible snapshot, missing repository, closed target ...)."""

    def __init__(self, message: str, *, hint: str | None = None, plan: RestorePlan | None = None) -> None:
        super().__init__(message, hint=hint)
        self.plan = plan


class RestoreVerificationError(CaptureError):
    """The restored copies do not match the checkpoint's fingerprints; nothing serving was touched."""

    def __init__(self, message: str, *, hint: str | None = None,
                 mismatches: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.mismatches = mismatches or []


class CutOverError(EngineError):
    """The cut-over failed. ``rolled_back`` tells whether every step was undone; ``state`` is per index."""

    def __init__(self, message: str, *, hint: str | None = None, rolled_back: bool = False,
                 state: dict[str, str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.rolled_back = rolled_back
        self.state = state or {}


# --------------------------------------------------------------------------- names


def short_id(checkpoint_id: str) -> str:
    """The lowercase short id used in staging and rollback names.

    ``ckpt-20261122T123042Z-7c4e1a`` -> ``7c4e1a`` (the random suffix of generated ids); any other
    id -> the first 8 hex digits of its sha256.
    """
    m = _SHORT_ID_RE.search(checkpoint_id.lower())
    if m:
        return m.group(1)
    return hashlib.sha256(checkpoint_id.encode("utf-8")).hexdigest()[:8]


def staging_name(index: str, short: str) -> str:
    return f"{index}{STAGING_MARK}{short}"


def rollback_name(index: str, short: str, stamp: str) -> str:
    """``<index>__rollback_<short id>_<UTC yyyymmddhhmmss>``."""
    return f"{index}{ROLLBACK_MARK}{short}_{stamp}"


#: ``<index>__rollback_<short>_<14 digits>``
ROLLBACK_RE = re.compile(r"^(?P<source>.+)__rollback_(?P<short>[a-z0-9][a-z0-9-]*)_(?P<stamp>\d{14})$")
#: ``<index>__restoring_<short>``
STAGING_RE = re.compile(r"^(?P<source>.+)__restoring_(?P<short>[a-z0-9][a-z0-9-]*)$")


def _stamp() -> str:
    return utcnow().astimezone(UTC).strftime("%Y%m%d%H%M%S")


def _name_too_long(name: str) -> bool:
    return len(name.encode("utf-8")) > MAX_INDEX_NAME_BYTES


# --------------------------------------------------------------------------- compatibility


def parse_version(version: str) -> tuple[int, int, int] | None:
    """``"7.10.2"`` -> ``(7, 10, 2)``; ``"2.19"`` -> ``(2, 19, 0)``; unparsable -> None."""
    m = _VERSION_RE.match(str(version or ""))
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _product(flavor: str) -> str:
    return "OpenSearch" if flavor == "opensearch" else "Elasticsearch"


def compatibility_problems(snapshot_flavor: str, snapshot_version: str, cluster_flavor: str,
                           cluster_version: str) -> list[str]:
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
    s_name = f"{_product(s_flavor)} {snapshot_version}"
    c_name = f"{_product(c_flavor)} {cluster_version}"
    if s_flavor not in ("opensearch", "elasticsearch"):
        return [f"the checkpoint does not say which product took the snapshot (engine {snapshot_flavor!r}); "
                f"refusing to restore it into {c_name}"]
    if snap is None or clus is None:
        which = f"snapshot version {snapshot_version!r}" if snap is None else f"cluster version {cluster_version!r}"
        return [f"cannot tell whether {c_name} can read a snapshot of {s_name}: unparsable {which}"]
    if s_flavor != c_flavor:
        if s_flavor == "opensearch":
            return [f"the snapshot was taken by {s_name}; Elasticsearch cannot restore OpenSearch snapshots "
                    f"(the target cluster runs {c_name}): restore it into an OpenSearch cluster of version "
                    f"{snap[0]}.x or {snap[0] + 1}.x"]
        if snap > (7, 10, 2) or snap[0] < 6:
            return [f"the snapshot was taken by {s_name}; OpenSearch reads snapshots of Elasticsearch 6.x and "
                    f"7.x up to 7.10.2 only (the target cluster runs {c_name}): restore it into Elasticsearch "
                    f"{snap[0]}.x or {snap[0] + 1}.x"]
        allowed = (1,) if snap[0] == 6 else (1, 2)
        if clus[0] not in allowed:
            return [f"the snapshot was taken by {s_name}; OpenSearch {' or '.join(f'{m}.x' for m in allowed)} can "
                    f"restore it, the target cluster runs {c_name}"]
        return []
    if clus < snap:
        return [f"the snapshot was taken by {s_name}, newer than the target cluster ({c_name}): a snapshot "
                f"never restores into an older version; upgrade the cluster to {snap[0]}.{snap[1]}.{snap[2]} "
                f"or later"]
    if clus[0] > snap[0] + 1:
        return [f"the snapshot was taken by {s_name}; {c_name} is more than one major version newer: a "
                f"snapshot from major {snap[0]} restores into {snap[0]}.x or {snap[0] + 1}.x only (restore "
                f"it into a {snap[0] + 1}.x cluster and reindex there first)"]
    return []


# --------------------------------------------------------------------------- what the checkpoint says


@dataclass
class SnapshotSource:
    """What a restore needs from the artifact and its document."""

    repository: str
    snapshot: str
    uuid: str
    engine: str
    engine_version: str
    indices: list[str]  #: indices in the snapshot (as recorded)
    expected: dict[str, dict[str, Any]]  #: {index: {"docs": n, "mapping_sha256": h}}
    aliases: dict[str, dict[str, dict[str, Any]]] | None  #: {alias: {index: properties}} if recorded
    include_global_state: bool = False
    data_streams: list[str] = field(default_factory=list)


def snapshot_source(artifact: Artifact | None, doc: dict[str, Any] | None) -> SnapshotSource:
    """Combine the artifact (manifest entry) and its JSON document; refuse what does not fit."""
    if artifact is None and doc is None:
        raise EngineError("restore needs the checkpoint's search artifact or its document",
                          hint="pass the Artifact of search/snapshot.json and json.loads of its bytes")
    doc = doc or {}
    if doc:
        if doc.get("format") not in (None, L.DOCUMENT_FORMAT):
            raise EngineError(f"the search artifact's document has format {doc.get('format')!r}, "
                              f"expected {L.DOCUMENT_FORMAT!r}",
                              hint="pass the JSON of the checkpoint's search/snapshot.json artifact")
        version = doc.get("format_version", L.DOCUMENT_FORMAT_VERSION)
        if not isinstance(version, int) or version > L.DOCUMENT_FORMAT_VERSION:
            raise EngineError(f"the search artifact's document has format version {version!r}; this reader "
                              f"knows version {L.DOCUMENT_FORMAT_VERSION}",
                              hint="upgrade airflow-checkpoint-provider")
    meta = dict(artifact.meta) if artifact is not None else {}
    snap_doc = doc.get("snapshot") or {}
    repo_doc = doc.get("repository") or {}
    repository = str(meta.get("repository") or repo_doc.get("name") or "")
    snapshot = str(meta.get("snapshot") or snap_doc.get("name") or "")
    uuid = str(meta.get("uuid") or snap_doc.get("uuid") or "")
    for key, mine, theirs in (("repository", repository, repo_doc.get("name")),
                              ("snapshot", snapshot, snap_doc.get("name")), ("uuid", uuid, snap_doc.get("uuid"))):
        if theirs and mine and str(theirs) != mine:
            raise EngineError(f"the search artifact names {key} {mine!r} but its document says {theirs!r}",
                              hint="pass the document of this artifact, not of another checkpoint")
    if not repository or not snapshot:
        raise EngineError("the search artifact does not name its repository and snapshot",
                          hint="is this the search/snapshot.json artifact of a checkpoint?")
    fps = (artifact.fingerprints if artifact is not None and artifact.fingerprints else None) \
        or doc.get("fingerprints") or {}
    expected = {str(k): dict(v or {}) for k, v in (fps.get("indices") or {}).items()}
    engine = (artifact.engine if artifact is not None and artifact.engine else "") or str(doc.get("engine") or "")
    engine_version = (artifact.engine_version if artifact is not None and artifact.engine_version else "") \
        or str(doc.get("engine_version") or "")
    indices = [str(i) for i in (snap_doc.get("indices") or sorted(expected))]
    aliases = doc.get("aliases")
    if aliases is not None and not isinstance(aliases, dict):
        raise EngineError("the search artifact's document has a malformed 'aliases' entry",
                          hint="expected {alias: {index: properties}}")
    return SnapshotSource(
        repository=repository, snapshot=snapshot, uuid=uuid, engine=engine, engine_version=engine_version,
        indices=indices, expected=expected,
        aliases={str(a): {str(i): dict(p or {}) for i, p in (h or {}).items()} for a, h in aliases.items()}
        if isinstance(aliases, dict) else None,
        include_global_state=bool(snap_doc.get("include_global_state", False)),
        data_streams=[str(d) for d in snap_doc.get("data_streams") or []],
    )


# --------------------------------------------------------------------------- requests (sync client)


def _send(client: SearchClient, req: _Req) -> Any:
    return client._send(req)  # noqa: SLF001 - same package: the client's transport and error mapping


def _settings_flat(client: SearchClient, index: str) -> dict[str, Any]:
    body = _send(client, _Req("GET", f"{_index_path(index)}/_settings", f"read the settings of index {index!r}",
                              params={"flat_settings": "true"}))
    return dict(((body or {}).get(index) or {}).get("settings") or {})


def _put_settings(client: SearchClient, index: str, settings: dict[str, Any]) -> None:
    _send(client, _Req("PUT", f"{_index_path(index)}/_settings", f"update the settings of index {index!r}",
                       body=settings))


def _delete_index(client: SearchClient, index: str, *, missing_ok: bool = True) -> bool:
    if "*" in index or "," in index or not index:
        raise EngineError(f"refusing to delete {index!r}: not a single index name", hint="name one index")
    body = _send(client, _Req("DELETE", _index_path(index), f"delete index {index!r}", missing_ok=missing_ok))
    return body is not None


def _clone(client: SearchClient, source: str, target: str, settings: dict[str, Any]) -> None:
    _send(client, _Req("POST", f"{_index_path(source)}/_clone/{_index_path(target)}",
                       f"clone index {source!r} to {target!r}", body={"settings": settings}))


def _update_aliases(client: SearchClient, actions: list[dict[str, Any]], what: str) -> None:
    if actions:
        _send(client, _Req("POST", "_aliases", what, body={"actions": actions}))


def _refresh_count(client: SearchClient, names: list[str]) -> dict[str, int]:
    client.refresh(names)
    return {n: client.count(n) for n in names}


def _alias_props(props: dict[str, Any]) -> dict[str, Any]:
    return {k: props[k] for k in ALIAS_PROPERTIES if props.get(k) not in (None, "")}


def _add(index: str, alias: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"add": {"index": index, "alias": alias, **_alias_props(props or {})}}


def _remove(index: str, alias: str) -> dict[str, Any]:
    return {"remove": {"index": index, "alias": alias}}


@dataclass
class ClusterView:
    """Every index (status, health, docs) and every alias (``{alias: {index: properties}}``)."""

    indices: dict[str, dict[str, Any]]
    aliases: dict[str, dict[str, dict[str, Any]]]

    def aliases_of(self, index: str) -> dict[str, dict[str, Any]]:
        return {a: holders[index] for a, holders in self.aliases.items() if index in holders}

    def serving(self, index: str) -> bool:
        """An index some alias points at."""
        return any(index in holders for holders in self.aliases.values())


def cluster_view(client: SearchClient) -> ClusterView:
    rows = _send(client, _Req("GET", "_cat/indices", "list the indices (_cat/indices)", params={
        "format": "json", "h": "index,status,health,docs.count,store.size,creation.date,pri,rep",
        "bytes": "b", "expand_wildcards": "all"})) or []
    indices = {str(r["index"]): r for r in rows if r.get("index")}
    body = _send(client, _Req("GET", "_alias", "list the aliases (GET /_alias)",
                              params={"expand_wildcards": "all"})) or {}
    aliases: dict[str, dict[str, dict[str, Any]]] = {}
    for index, entry in body.items():
        for alias, props in ((entry or {}).get("aliases") or {}).items():
            aliases.setdefault(str(alias), {})[str(index)] = dict(props or {})
    return ClusterView(indices=indices, aliases=aliases)


def collect_aliases(client: SearchClient, indices: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{alias: {index: properties}}`` for every alias that points at one of ``indices`` (with all of
    its holders). This is what a capture records as the document's ``aliases`` so that a restore
    can reinstate them."""
    view = cluster_view(client)
    wanted = set(indices)
    return {a: {i: _alias_props(p) for i, p in sorted(h.items())} for a, h in sorted(view.aliases.items())
            if wanted & set(h)}


def wait_for_primaries(client: SearchClient, names: list[str], *, timeout: float, what: str,
                       poll_interval: float = 0.5) -> None:
    """Wait until every primary shard of ``names`` has started (restore/clone finished recovering).

    Shards that stay unassigned after failing (a failed restore or clone) for more than
    :data:`RED_GRACE_SECONDS` end the wait early; so does ``timeout``. Both raise EngineError
    naming the indices and the server's reason.
    """
    deadline = time.monotonic() + max(1.0, float(timeout))
    red_since: float | None = None
    while True:
        rows: list[dict[str, Any]] = []
        for batch in L.url_batches(names):
            rows += _send(client, _Req("GET", f"_cat/shards/{_index_path(','.join(batch))}",
                                       "read shard states (_cat/shards)",
                                       params={"format": "json",
                                               "h": "index,shard,prirep,state,unassigned.reason,"
                                                    "unassigned.details"})) or []
        primaries = [r for r in rows if r.get("prirep") == "p"]
        seen = {str(r.get("index")) for r in primaries}
        pending = sorted({str(r["index"]) for r in primaries if r.get("state") != "STARTED"} | (set(names) - seen))
        if not pending:
            return
        failed = [r for r in primaries if r.get("state") == "UNASSIGNED"
                  and str(r.get("unassigned.reason") or "") not in ("", "INDEX_CREATED", "NEW_INDEX_RESTORED")]
        now = time.monotonic()
        if failed:
            red_since = red_since or now
        else:
            red_since = None
        if (red_since is not None and now - red_since > RED_GRACE_SECONDS) or now >= deadline:
            reasons = "; ".join(f"{r.get('index')}[{r.get('shard')}]: {r.get('unassigned.reason')} "
                                f"{r.get('unassigned.details') or ''}".strip() for r in failed[:10])
            cause = f"primary shards failed: {reasons}" if failed else f"still recovering after {timeout:g}s"
            raise EngineError(
                f"search cluster {client.where}: {what}: {', '.join(pending)}: {cause}",
                hint="see GET /_cluster/allocation/explain and GET /_cat/recovery?active_only; raise "
                "wait_timeout for large indices",
            )
        time.sleep(min(poll_interval, max(0.05, deadline - now)))


# --------------------------------------------------------------------------- planning


@dataclass
class _Item:
    source: str
    target: str
    action: str  #: replace | create | switch-alias | create-alias | replace-alias
    staging: str
    expected: dict[str, Any]
    holders: dict[str, dict[str, Any]] = field(default_factory=dict)  #: alias X -> {index: props} now
    plan_item: PlanItem | None = None

    @property
    def clones(self) -> bool:
        return self.action in ("replace", "create", "replace-alias")


@dataclass
class _Planned:
    plan: RestorePlan
    source: SnapshotSource
    items: list[_Item]
    short: str
    info: dict[str, Any]
    view: ClusterView
    leftovers: list[str]  #: ``<index>__restoring_*`` copies nothing points at (reported, never deleted)
    alias_names: list[str]  #: recorded aliases this restore reinstates


def _select(source: SnapshotSource, indices: list[str] | str | None, problems: list[str]) -> list[str]:
    available = sorted(source.expected)
    in_snapshot = set(source.indices)
    for name in available:
        if name not in in_snapshot:
            problems.append(f"index {name} has fingerprints but is not in snapshot "
                            f"{source.repository}:{source.snapshot}")
    if not available:
        problems.append(f"the checkpoint records no index fingerprints for snapshot "
                        f"{source.repository}:{source.snapshot}: nothing can be verified")
        return []
    if indices is None:
        return available
    chosen: list[str] = []
    for expr in L.split_index_expressions(indices):
        if expr == "*":
            matched = available
        elif L.is_pattern(expr):
            matched = [n for n in available if fnmatch.fnmatchcase(n, expr)]
        else:
            matched = [expr] if expr in source.expected else []
        if not matched:
            problems.append(f"{expr!r} matches no index of the checkpoint (it has: {', '.join(available)})")
        chosen += [m for m in matched if m not in chosen]
    return sorted(chosen)


def _pick_short(base: str, names: list[str], view: ClusterView) -> str:
    """``base``, or ``base-2``, ``base-3`` ... so that no side-by-side name is taken already.

    An existing ``X__restoring_<base>`` is either a leftover of a failed restore or the copy an
    earlier alias-mode restore of the same checkpoint switched an alias to (serving, or kept as
    that restore's rollback copy once a later restore switched away): it is never reused or deleted.
    """
    n = 1
    while True:
        short = base if n == 1 else f"{base}-{n}"
        taken = [staging_name(x, short) for x in names]
        if not any(t in view.indices or t in view.aliases for t in taken):
            return short
        n += 1


def _holders_text(holders: dict[str, Any]) -> str:
    return ", ".join(sorted(holders)) or "nothing"


def _plan(client: SearchClient, source: SnapshotSource, *, checkpoint_id: str, indices: list[str] | str | None,
          swap: str, include_global_state: bool, repository_settings: dict[str, Any] | None) -> _Planned:
    if swap not in SWAP_MODES:
        raise EngineError(f"unknown swap mode {swap!r}", hint=f"use one of {', '.join(SWAP_MODES)}")
    plan = RestorePlan(checkpoint_id=checkpoint_id)
    problems = plan.problems
    info = client.info()
    where = client.where

    # product and version
    problems += compatibility_problems(source.engine, source.engine_version, info["flavor"], info["version"])

    # repository and snapshot
    repo = client.get_repository(source.repository)
    snapshot_note = ""
    if repo is None:
        if repository_settings is None:
            problems.append(f"snapshot repository {source.repository!r} is not registered on {where}: register it "
                            "(read-only when another cluster writes to it) or pass repository_settings")
        else:
            snapshot_note = (f"repository {source.repository!r} is not registered yet: the restore registers it "
                             f"with the given settings; the snapshot could not be checked now")
    else:
        try:
            state = client.snapshot_state(source.repository, source.snapshot)
        except NotFoundError as exc:
            problems.append(f"snapshot {source.repository}:{source.snapshot} is not in the repository on {where} "
                            f"({exc.message.splitlines()[0]})")
        else:
            if state.get("state") != "SUCCESS":
                problems.append(f"snapshot {source.repository}:{source.snapshot} is {state.get('state')}, not "
                                "SUCCESS: it cannot be restored completely")
            if source.uuid and state.get("uuid") and state["uuid"] != source.uuid:
                problems.append(f"snapshot {source.repository}:{source.snapshot} has uuid {state['uuid']}, the "
                                f"checkpoint recorded {source.uuid}: it is another snapshot with the same name")
            missing = sorted(set(source.expected) - set(state.get("indices") or []))
            if missing:
                problems.append(f"snapshot {source.repository}:{source.snapshot} lacks indices the checkpoint "
                                f"recorded: {', '.join(missing)}")

    names = _select(source, indices, problems)
    view = cluster_view(client)
    base = short_id(checkpoint_id)
    short = _pick_short(base, names, view)
    stamp_example = "<UTC yyyymmddhhmmss>"
    items: list[_Item] = []
    leftovers: list[str] = []
    chosen = set(names)
    recorded = source.aliases or {}
    alias_names = sorted(a for a, holders in recorded.items() if chosen & set(holders))

    for name in names:
        staging = staging_name(name, short)
        expected = source.expected.get(name, {})
        conflicts: list[str] = []
        notes: list[str] = [f"checkpoint: {expected.get('docs', '?')} documents"]
        is_index = name in view.indices
        holders = dict(view.aliases.get(name, {}))
        if is_index:
            action = "replace"
            if swap == "alias":
                problems.append(f"index {name} is a concrete index: swap='alias' needs {name} to be an alias or "
                                "absent; use swap='auto' or 'replace'")
        elif holders:
            action = "replace-alias" if swap == "replace" else "switch-alias"
        else:
            action = "create-alias" if swap == "alias" else "create"

        for bad in (staging, rollback_name(name, short, "0" * 14)):
            if _name_too_long(bad):
                problems.append(f"index name {name} is too long for the restore's side-by-side name {bad!r} "
                                f"(over {MAX_INDEX_NAME_BYTES} bytes)")
        if is_index:
            row = view.indices[name]
            status, health = str(row.get("status") or ""), str(row.get("health") or "")
            if status == "close":
                problems.append(f"index {name} is closed: it cannot be copied to a rollback copy; open it "
                                f"(POST /{name}/_open) or delete it before restoring")
            elif health == "red":
                problems.append(f"index {name} is red (a primary shard is unassigned): no rollback copy can be "
                                f"taken; fix it (GET /_cluster/allocation/explain) or delete it before restoring")
            else:
                # top-level documents (_count), as the checkpoint counted them; _cat's docs.count adds nested ones
                conflicts.append(f"index {name} exists and is open ({client.count(name)} documents now): it "
                                 f"will be replaced; its current data is kept in the rollback copy "
                                 f"{rollback_name(name, short, stamp_example)}")
            current = view.aliases_of(name)
            if current and source.aliases is None:
                notes.append(f"its aliases ({', '.join(sorted(current))}) will be moved to the restored index "
                             "(the checkpoint does not record aliases)")
        elif holders:
            if action == "switch-alias":
                conflicts.append(f"{name} is an alias of {_holders_text(holders)}: it will be switched to the "
                                 f"restored index {staging} in one atomic step; {_holders_text(holders)} stay as "
                                 "rollback copies")
            else:
                conflicts.append(f"{name} is an alias of {_holders_text(holders)}: the alias will be removed and "
                                 f"an index {name} created; {_holders_text(holders)} stay as rollback copies")
        elif action == "create-alias":
            notes.append(f"{name} does not exist: an alias {name} will point at the restored index {staging}")
        else:
            notes.append(f"{name} does not exist: it will be created")

        for other in sorted(view.indices):
            m = STAGING_RE.match(other)
            if not m or m.group("source") != name or view.serving(other):
                continue
            leftovers.append(other)
            conflicts.append(f"leftover from an earlier restore: {other} (a failed restore's copy, or the rollback "
                             f"copy of an alias switch; left alone: delete it with DELETE /{other} when it is not "
                             "needed)")

        for alias in alias_names:
            if name not in recorded[alias]:
                continue
            now_holders = view.aliases.get(alias, {})
            final = name if action in ("replace", "create", "replace-alias") else staging
            if alias in view.indices:
                problems.append(f"the checkpoint has alias {alias} on {name}, but {alias} is now a concrete index: "
                                "rename or delete that index first")
            elif not now_holders:
                notes.append(f"alias {alias} (missing now) will be recreated on {final}")
            elif set(now_holders) - set(recorded[alias]):
                conflicts.append(f"alias {alias} points at {_holders_text(now_holders)}, the checkpoint had it on "
                                 f"{_holders_text(recorded[alias])}: it will point at {final} again")
        if action in ("switch-alias", "create-alias"):
            notes.append(f"the restored index keeps the name {staging}")
        item = PlanItem(component=COMPONENT, source=f"{name} ({source.repository}:{source.snapshot})",
                        target=name, action=action, staging_name=staging, conflicts=conflicts, notes=notes)
        items.append(_Item(source=name, target=name, action=action, staging=staging, expected=expected,
                           holders=holders, plan_item=item))
        plan.items.append(item)

    if source.aliases is None and names:
        for it in plan.items[:1]:
            it.notes.append("the checkpoint does not record aliases: aliases other than those of replaced "
                            "indices are left as they are")
    if include_global_state:
        conflicts = [f"the cluster's global state (persistent settings, index templates, ingest pipelines, "
                     f"...) on {where} will be replaced by the snapshot's"]
        if not source.include_global_state:
            problems.append(f"snapshot {source.repository}:{source.snapshot} does not include the global state")
        plan.items.append(PlanItem(component=COMPONENT, source=f"global state ({source.repository}:{source.snapshot})",
                                   target="cluster", action="restore-global-state", conflicts=conflicts))
    if source.data_streams:
        for it in plan.items[:1]:
            it.notes.append(f"data streams in the snapshot are not restored: {', '.join(source.data_streams)}")
    if snapshot_note and plan.items:
        plan.items[0].notes.append(snapshot_note)
    if source.engine and info["flavor"] != source.engine and not problems and plan.items:
        plan.items[0].notes.append(f"cross-product restore: {_product(source.engine)} {source.engine_version} "
                                   f"snapshot into {_product(info['flavor'])} {info['version']}")
    return _Planned(plan=plan, source=source, items=items, short=short, info=info, view=view,
                    leftovers=leftovers, alias_names=alias_names)


def plan_restore(
    client: SearchClient,
    artifact: Artifact | None,
    doc: dict[str, Any] | None = None,
    *,
    checkpoint_id: str,
    indices: list[str] | str | None = None,
    swap: str = "auto",
    include_global_state: bool = False,
    repository_settings: dict[str, Any] | None = None,
) -> RestorePlan:
    """What :func:`restore` would do, and why it would refuse (``plan.problems``). Changes nothing.

    One :class:`PlanItem` per index (``action`` replace / create / switch-alias / create-alias /
    replace-alias; ``staging_name`` the side-by-side copy; ``conflicts``: the open index that will
    be replaced, leftovers ``*__restoring_*`` of earlier restores, aliases that point elsewhere),
    plus one for the global state when requested. ``staging_name`` avoids existing names: where
    one is taken the short id becomes ``<id>-2``, ``<id>-3`` ... (leftovers are never deleted).
    ``problems``: the snapshot is missing, not SUCCESS or another one (uuid); the repository is
    not registered; the product or version cannot read it (:func:`compatibility_problems`); a
    target is closed or red; a name would exceed 255 bytes; ``swap='alias'`` on a concrete index.
    """
    source = snapshot_source(artifact, doc)
    return _plan(client, source, checkpoint_id=checkpoint_id, indices=indices, swap=swap,
                 include_global_state=include_global_state, repository_settings=repository_settings).plan


# --------------------------------------------------------------------------- restoring


def _say(log: Any) -> Callable[[str], None]:
    if log is None:
        return _log.info
    if isinstance(log, logging.Logger | logging.LoggerAdapter):
        return log.info
    if callable(log):
        return log
    return _log.info


def _cleanup_staging(client: SearchClient, names: list[str], say: Callable[[str], None]) -> list[str]:
    """Delete staging copies (best effort); return the ones that could not be deleted."""
    kept = []
    for name in names:
        try:
            _delete_index(client, name)
        except EngineError as exc:
            say(f"could not delete the staging copy {name}: {exc.message}")
            kept.append(name)
    return kept


def _restore_copies(client: SearchClient, planned: _Planned, *, include_global_state: bool, timeout: float,
                    poll_interval: float, say: Callable[[str], None]) -> None:
    src = planned.source
    names = [it.source for it in planned.items]
    body = {
        "indices": ",".join(names),
        "ignore_unavailable": False,
        "partial": False,
        "include_aliases": False,
        "include_global_state": bool(include_global_state),
        "rename_pattern": "(.+)",
        "rename_replacement": "$1" + STAGING_MARK + planned.short,
    }
    say(f"restoring {len(names)} index(es) of {src.repository}:{src.snapshot} side by side as "
        f"<index>{STAGING_MARK}{planned.short}")
    _send(client, _Req("POST", f"_snapshot/{_seg(src.repository)}/{_seg(src.snapshot)}/_restore",
                       f"restore snapshot {src.repository}:{src.snapshot}",
                       params={"wait_for_completion": "false"}, body=body))
    wait_for_primaries(client, [it.staging for it in planned.items], timeout=timeout,
                       what=f"restore of {src.repository}:{src.snapshot}", poll_interval=poll_interval)


def _verify_copies(client: SearchClient, planned: _Planned) -> tuple[list[dict[str, Any]], dict[str, int]]:
    staging = [it.staging for it in planned.items]
    counts = _refresh_count(client, staging)
    mappings: dict[str, Any] = {}
    for batch in L.url_batches(staging):
        mappings.update(client.get_mappings(",".join(batch)))
    mismatches = []
    for it in planned.items:
        docs = counts[it.staging]
        want = it.expected.get("docs")
        if isinstance(want, int) and docs != want:
            mismatches.append({"index": it.source, "staging": it.staging, "what": "docs", "expected": want,
                               "actual": docs})
        want_map = it.expected.get("mapping_sha256")
        have_map = L.mapping_sha256(mappings.get(it.staging))
        if want_map and have_map != want_map:
            mismatches.append({"index": it.source, "staging": it.staging, "what": "mapping_sha256",
                               "expected": want_map, "actual": have_map})
    return mismatches, counts


class _CutOver:
    """Runs the per-index cut-over steps and remembers how to undo each of them."""

    def __init__(self, client: SearchClient, planned: _Planned, *, stamp: str, timeout: float,
                 poll_interval: float, say: Callable[[str], None]) -> None:
        self.client = client
        self.planned = planned
        self.stamp = stamp
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.say = say
        self.records: list[dict[str, Any]] = []  #: per item, in order; undone in reverse
        self.alias_undo: list[dict[str, Any]] | None = None  #: inverse of the final alias reconcile
        self.step = ""
        self.current = ""

    # -- helpers
    def _wait(self, names: list[str], what: str) -> None:
        wait_for_primaries(self.client, names, timeout=self.timeout, what=what, poll_interval=self.poll_interval)

    def _clone_settings(self, settings: dict[str, Any], block: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"index.blocks.write": block}
        if settings.get("index.auto_expand_replicas") not in (None, "false", False):
            out["index.auto_expand_replicas"] = settings["index.auto_expand_replicas"]
        elif settings.get("index.number_of_replicas") is not None:
            out["index.number_of_replicas"] = int(settings["index.number_of_replicas"])
        return out

    def _free_rollback_name(self, index: str) -> str:
        """The rollback name; if taken (a retry within the same second), the next free second."""
        stamp = self.stamp
        for _ in range(120):
            name = rollback_name(index, self.planned.short, stamp)
            if _send(self.client, _Req("HEAD", _index_path(name), f"check whether {name!r} exists",
                                       missing_ok=True)) is None:
                return name
            stamp = str(int(stamp) + 1)
        raise EngineError(f"search cluster {self.client.where}: no free rollback name for {index}",
                          hint=f"drop old rollback copies (list_rollbacks) of {index}")

    # -- the steps
    def run_item(self, it: _Item) -> dict[str, Any]:
        rec: dict[str, Any] = {"item": it, "action": it.action, "done": [], "rollback": [],
                               "old_aliases": {}, "holders": it.holders}
        self.records.append(rec)
        self.current = it.target
        c = self.client
        if it.clones:
            self.step = f"read the settings of {it.staging}"
            staging_settings = _settings_flat(c, it.staging)
            rec["staging_block"] = staging_settings.get("index.blocks.write")
            self.step = f"write-block the restored copy {it.staging}"
            _put_settings(c, it.staging, {"index.blocks.write": True})
        if it.action == "replace":
            x = it.target
            self.step = f"read the settings of {x}"
            settings = _settings_flat(c, x)
            rec["orig_settings"] = settings
            rec["orig_block"] = settings.get("index.blocks.write")
            rec["old_aliases"] = cluster_view(c).aliases_of(x)
            self.step = f"make {x} read-only (index.blocks.write)"
            _put_settings(c, x, {"index.blocks.write": True})
            rec["done"].append("blocked")
            self.step = f"count the documents of {x}"
            before = _refresh_count(c, [x])[x]
            rb = self._free_rollback_name(x)
            self.step = f"clone {x} to the rollback copy {rb}"
            self.say(f"{x}: copying the current index to the rollback copy {rb}")
            _clone(c, x, rb, self._clone_settings(settings, True))
            rec["rollback_copy"] = rb
            rec["done"].append("rollback_cloned")
            self._wait([rb], f"clone of {x} to {rb}")
            self.step = f"check the rollback copy {rb}"
            got = _refresh_count(c, [rb])[rb]
            if got != before:
                raise EngineError(f"search cluster {c.where}: the rollback copy {rb} holds {got} documents, "
                                  f"{x} holds {before}", hint="check the cluster's health and retry")
            rec["rollback"].append(rb)
            self.step = f"delete {x}"
            self.say(f"{x}: deleting the current index (kept as {rb})")
            _delete_index(c, x, missing_ok=False)
            rec["done"].append("deleted")
            self._create_from_staging(it, rec, staging_settings)
        elif it.action == "create":
            self._create_from_staging(it, rec, staging_settings)
        elif it.action == "replace-alias":
            self.step = f"remove the alias {it.target} from {_holders_text(it.holders)}"
            _update_aliases(c, [_remove(h, it.target) for h in sorted(it.holders)],
                            f"remove the alias {it.target!r}")
            rec["done"].append("alias_removed")
            rec["rollback"] += sorted(it.holders)
            self._create_from_staging(it, rec, staging_settings)
        else:  # switch-alias, create-alias
            self.step = f"switch the alias {it.target} to {it.staging}"
            self.say(f"{it.target}: switching the alias from {_holders_text(it.holders)} to {it.staging}")
            actions = [_remove(h, it.target) for h in sorted(it.holders)] + [_add(it.staging, it.target)]
            _update_aliases(c, actions, f"switch the alias {it.target!r} to {it.staging!r}")
            rec["done"].append("alias_switched")
            rec["rollback"] += sorted(it.holders)
        return rec

    def _create_from_staging(self, it: _Item, rec: dict[str, Any], staging_settings: dict[str, Any]) -> None:
        c, x = self.client, it.target
        self.step = f"clone the restored copy {it.staging} into {x}"
        self.say(f"{x}: creating it from the restored copy {it.staging}")
        _clone(c, it.staging, x, self._clone_settings(staging_settings, rec.get("staging_block")))
        rec["done"].append("created")
        self._wait([x], f"clone of {it.staging} to {x}")
        recorded = self.planned.source.aliases
        if recorded is None:  # carry the replaced index's aliases over
            aliases = rec.get("old_aliases") or {}
        else:  # the checkpoint's aliases of this index, at once (the final reconcile removes strays)
            # (without is_write_index: the alias may still have another write index until then)
            aliases = {a: {k: v for k, v in holders[it.source].items() if k != "is_write_index"}
                       for a, holders in recorded.items() if it.source in holders}
        if aliases:
            self.step = f"add the aliases {', '.join(sorted(aliases))} to the new {x}"
            _update_aliases(c, [_add(x, a, p) for a, p in sorted(aliases.items())], f"add the aliases of {x!r}")

    def final_target(self, index: str) -> str:
        for rec in self.records:
            it = rec["item"]
            if it.source == index:
                return it.target if it.clones else it.staging
        return index

    def reconcile_aliases(self) -> list[dict[str, Any]]:
        """Point the recorded aliases where the checkpoint had them (one atomic request)."""
        recorded = self.planned.source.aliases or {}
        if not self.planned.alias_names:
            return []
        self.current = "aliases"
        self.step = "reinstate the checkpoint's aliases"
        view = cluster_view(self.client)
        restored = {rec["item"].source for rec in self.records}
        actions: list[dict[str, Any]] = []
        undo: list[dict[str, Any]] = []
        for alias in self.planned.alias_names:
            want: dict[str, dict[str, Any]] = {}
            for index, props in recorded[alias].items():
                if index in restored:
                    want[self.final_target(index)] = props
            keep = {i for i in recorded[alias] if i not in restored}
            now = view.aliases.get(alias, {})
            for holder, props in sorted(now.items()):
                if holder not in want and holder not in keep:
                    actions.append(_remove(holder, alias))
                    undo.append(_add(holder, alias, props))
            for index, props in sorted(want.items()):
                actions.append(_add(index, alias, props))
                undo.append(_add(index, alias, now[index]) if index in now else _remove(index, alias))
        self.say(f"reinstating the checkpoint's aliases: {', '.join(self.planned.alias_names)}")
        _update_aliases(self.client, actions, "reinstate the checkpoint's aliases")
        self.alias_undo = undo
        return actions

    # -- undo
    def undo(self) -> tuple[bool, dict[str, str], list[str]]:
        """Undo everything in reverse. Returns (complete, state per index, manual steps)."""
        c = self.client
        state: dict[str, str] = {}
        manual: list[str] = []
        ok = True
        if self.alias_undo:
            try:
                _update_aliases(c, self.alias_undo, "switch the checkpoint's aliases back")
                state["aliases"] = "switched back"
            except EngineError as exc:
                ok = False
                state["aliases"] = f"NOT switched back ({exc.message.splitlines()[0]})"
                manual.append(f"POST /_aliases {{\"actions\": {self.alias_undo}}}")
        for rec in reversed(self.records):
            it: _Item = rec["item"]
            done: list[str] = rec["done"]
            x = it.target
            try:
                if it.action in ("switch-alias", "create-alias"):
                    if "alias_switched" in done:
                        actions = [_remove(it.staging, x)] + [_add(h, x, p) for h, p in sorted(it.holders.items())]
                        _update_aliases(c, actions, f"switch the alias {x!r} back")
                        state[x] = (f"alias switched back to {_holders_text(it.holders)}" if it.holders
                                    else "alias removed again")
                    else:
                        state[x] = "untouched"
                    continue
                if "created" in done:
                    _delete_index(c, x)
                if it.action == "replace":
                    rb = rec.get("rollback_copy")
                    if "deleted" in done:
                        settings = rec.get("orig_settings") or {}
                        try:
                            _clone(c, rb, x, self._clone_settings(settings, rec.get("orig_block")))
                            wait_for_primaries(c, [x], timeout=self.timeout, what=f"clone of {rb} back to {x}",
                                               poll_interval=self.poll_interval)
                            if rec.get("old_aliases"):
                                _update_aliases(c, [_add(x, a, p) for a, p in sorted(rec["old_aliases"].items())],
                                                f"re-add the aliases of {x!r}")
                        except EngineError:
                            ok = False
                            state[x] = f"MISSING: its data is in the read-only rollback copy {rb}"
                            manual.append(f"POST /{rb}/_clone/{x} (then PUT /{x}/_settings "
                                          "{\"index.blocks.write\": null} and re-add its aliases "
                                          f"{sorted(rec.get('old_aliases') or {})})")
                            continue
                        state[x] = f"recreated from the rollback copy {rb} (kept, read-only)"
                    elif "blocked" in done:
                        _put_settings(c, x, {"index.blocks.write": rec.get("orig_block")})
                        if "rollback_cloned" in done and rb:
                            _delete_index(c, rb)
                        state[x] = "untouched (write block lifted)"
                    else:
                        state[x] = "untouched"
                elif it.action == "replace-alias":
                    if "alias_removed" in done:
                        _update_aliases(c, [_add(h, x, p) for h, p in sorted(it.holders.items())],
                                        f"re-add the alias {x!r}")
                        state[x] = f"alias restored on {_holders_text(it.holders)}"
                    else:
                        state[x] = "untouched"
                else:  # create
                    state[x] = "absent again" if "created" in done else "untouched"
            except EngineError as exc:
                ok = False
                state[x] = f"UNKNOWN: undo failed: {exc.message.splitlines()[0]}"
                manual.append(f"inspect {x} (GET /_cat/indices/{x}*?v, GET /_alias/{x})")
        return ok, state, manual


def restore(
    client: SearchClient,
    artifact: Artifact | None,
    doc: dict[str, Any] | None = None,
    *,
    checkpoint_id: str,
    indices: list[str] | str | None = None,
    swap: str = "auto",
    include_global_state: bool = False,
    wait_timeout: float = 3600,
    log: Any = None,
    repository_settings: dict[str, Any] | None = None,
    poll_interval: float = 1.0,
) -> RestoreOutcome:
    """Restore the checkpoint's snapshot side by side, verify it, then cut over (module docstring).

    Raises :class:`RestoreRefusedError` when the plan has problems (nothing done),
    :class:`RestoreVerificationError` when the restored copies differ from the fingerprints (copies
    deleted, originals untouched), :class:`CutOverError` when the cut-over failed (rolled back as
    far as possible; the message says what state each index is in). ``log`` is a logger or a
    callable taking one string; it gets one line per step.
    """
    say = _say(log)
    started = time.monotonic()
    source = snapshot_source(artifact, doc)
    if repository_settings is not None:
        client.ensure_repository(source.repository, repository_settings)
    planned = _plan(client, source, checkpoint_id=checkpoint_id, indices=indices, swap=swap,
                    include_global_state=include_global_state, repository_settings=None)
    plan = planned.plan
    if plan.problems:
        raise RestoreRefusedError(
            f"search cluster {client.where}: refusing to restore checkpoint {checkpoint_id}:\n"
            + "\n".join(f"  - {p}" for p in plan.problems),
            hint="fix the problems listed (plan_restore shows the same list without changing anything)",
            plan=plan,
        )
    if not planned.items:
        return RestoreOutcome(component=COMPONENT, details={"plan": plan.to_dict(), "note": "nothing to restore"})
    for leftover in planned.leftovers:
        say(f"note: {leftover} is left over by an earlier restore (left alone)")

    staging = [it.staging for it in planned.items]
    # a. side by side
    try:
        _restore_copies(client, planned, include_global_state=include_global_state, timeout=wait_timeout,
                        poll_interval=poll_interval, say=say)
        # b. verify
        mismatches, counts = _verify_copies(client, planned)
    except BaseException:
        _cleanup_staging(client, staging, say)
        raise
    if mismatches:
        kept = _cleanup_staging(client, staging, say)
        lines = [f"index {m['index']}: {m['what']} expected {m['expected']}, restored copy has {m['actual']}"
                 for m in mismatches]
        raise RestoreVerificationError(
            f"search cluster {client.where}: the restored copies of snapshot {source.repository}:"
            f"{source.snapshot} do not match checkpoint {checkpoint_id}:\n" + "\n".join(f"  - {x}" for x in lines)
            + "\nnothing serving was changed; the restored copies were "
            + (f"deleted except {', '.join(kept)}" if kept else "deleted"),
            hint="the snapshot does not hold what the checkpoint recorded (was the snapshot replaced, or were "
            "writers active during the capture?); restore another checkpoint",
            mismatches=mismatches,
        )
    say("restored copies verified: " + ", ".join(f"{it.source}={counts[it.staging]}" for it in planned.items))

    # c. cut over
    cut = _CutOver(client, planned, stamp=_stamp(), timeout=wait_timeout, poll_interval=poll_interval, say=say)
    try:
        for it in planned.items:
            cut.run_item(it)
        alias_actions = cut.reconcile_aliases()
        cut.current, cut.step = "all", "count the documents of the restored indices"
        targets = [it.target for it in planned.items]
        after = _refresh_count(client, targets)
        wrong = [f"{it.target}: {after[it.target]} documents, expected {it.expected.get('docs')}"
                 for it in planned.items
                 if isinstance(it.expected.get("docs"), int) and after[it.target] != it.expected["docs"]]
        if wrong:
            raise EngineError(f"search cluster {client.where}: after the cut-over: " + "; ".join(wrong),
                              hint="is something writing to the indices during the restore?")
    except BaseException as exc:  # noqa: BLE001 - undo on anything, even an interrupt, then re-raise
        failed_at, step = cut.current, cut.step
        ok, state, manual = cut.undo()
        kept = _cleanup_staging(client, staging, say) if ok else []
        reason = exc.message if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
        lines = [f"search cluster {client.where}: restore of checkpoint {checkpoint_id} failed during the cut-over "
                 f"({failed_at}: {step}): {reason}"]
        lines.append("rolled back completely:" if ok else "ROLLBACK INCOMPLETE:")
        lines += [f"  - {k}: {v}" for k, v in state.items()]
        if ok:
            lines.append("the restored copies were " + (f"deleted except {', '.join(kept)}" if kept else "deleted"))
        else:
            lines.append(f"the restored copies were kept: {', '.join(staging)}")
            lines += ["manual steps:"] + [f"  - {m}" for m in manual]
        error = CutOverError(
            "\n".join(lines),
            hint="the cluster serves what it served before the restore; fix the cause and retry" if ok else
            "finish the manual steps above before anything writes to these indices",
            rolled_back=ok, state=state,
        )
        if not isinstance(exc, Exception):
            _log.error("%s", error)
            raise
        raise error from exc

    # d. done: drop the copies that were cloned into place
    kept = _cleanup_staging(client, [it.staging for it in planned.items if it.clones], say)
    restored = [it.target for it in planned.items]
    rollback = [r for rec in cut.records for r in rec["rollback"]]
    details = {
        "cluster": client.where,
        "engine": planned.info["flavor"],
        "engine_version": planned.info["version"],
        "repository": source.repository,
        "snapshot": source.snapshot,
        "uuid": source.uuid,
        "short_id": planned.short,
        "indices": {
            rec["item"].target: {
                "action": rec["item"].action,
                "serving_index": cut.final_target(rec["item"].source),
                "docs": after[rec["item"].target],
                "rollback": rec["rollback"],
                "previous_aliases": sorted(rec.get("old_aliases") or {}),
            } for rec in cut.records
        },
        "aliases_reinstated": planned.alias_names,
        "alias_actions": alias_actions,
        "leftovers": planned.leftovers,
        "staging_not_removed": kept,
        "include_global_state": bool(include_global_state),
        "seconds": round(time.monotonic() - started, 3),
    }
    say(f"restore of checkpoint {checkpoint_id} done: {', '.join(restored)}; rollback copies: "
        f"{', '.join(rollback) or 'none'}")
    return RestoreOutcome(component=COMPONENT, restored=restored, rollback=rollback, details=details)
