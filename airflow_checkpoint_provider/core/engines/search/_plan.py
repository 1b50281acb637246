"""Planning a search restore: what each index, data stream and template would become, and why not.

The plan is made of JSON-safe item dicts, because the journal records them before anything
changes and a replay (:mod:`._replay`) works from that record alone::

    {"kind": "index" | "stream", "source": <name in the snapshot>, "target": <name it lands under>,
     "action": "replace" | "create" | "switch-alias" | "create-alias" | "replace-alias"
               | "replace-stream" | "create-stream",
     "staging": <side-by-side copy> | None, "staging_backing": {backing index: its copy} (streams),
     "expected": {"docs", "mapping_sha256"} (indices) | {backing index: {...}} (streams),
     "holders": {index: alias properties} (an alias target), "old_aliases": {alias: properties},
     "same_shards": bool, "rollback": <rollback index> | <rollback snapshot> | None,
     "backing_now": [backing indices of the data stream being replaced]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search import _names as N
from airflow_checkpoint_provider.core.engines.search._client import SearchClient
from airflow_checkpoint_provider.core.engines.search._compat import (
    compatibility_problems,
    product,
)
from airflow_checkpoint_provider.core.engines.search._ops import (
    ClusterView,
    cluster_view,
    list_snapshots,
    settings_flat,
    snapshot_shard_counts,
)
from airflow_checkpoint_provider.core.engines.search._plan_checks import (
    _check_snapshot,
    _free_rollback,
    _has_stream_api,
    _path_repo_problem,
    _pick_short,
    _select,
    holders_text,
)
from airflow_checkpoint_provider.core.engines.search._source import SnapshotSource
from airflow_checkpoint_provider.core.engines.search._templates import plan_templates
from airflow_checkpoint_provider.core.errors import EngineError
from airflow_checkpoint_provider.core.restore import PlanItem, RestorePlan

COMPONENT = "search"
SWAP_MODES = ("auto", "alias", "replace")
#: actions after which the target name is a concrete index restored from the snapshot
RESTORES_TARGET = frozenset({"replace", "create", "replace-alias"})


@dataclass
class Planned:
    plan: RestorePlan
    source: SnapshotSource
    items: list[dict[str, Any]]
    short: str
    stamp: str
    info: dict[str, Any]
    leftovers: list[str]  #: ``<index>__restoring_*`` copies nothing points at (reported, never deleted)
    alias_names: list[str]  #: recorded aliases this restore reinstates
    templates: list[dict[str, Any]] = field(default_factory=list)  #: from plan_templates
    register_repository: bool = False
    mark: str = N.STAGING_MARK  #: the side-by-side copies are ``<index><mark><short>``

    def copies(self) -> list[str]:
        """Every side-by-side copy the load creates."""
        out = []
        for it in self.items:
            out += [it["staging"]] if it["staging"] else list(it["staging_backing"].values())
        return out

    def record(self) -> dict[str, Any]:
        """What the journal keeps for a replay."""
        s = self.source
        return {
            "checkpoint_id": self.plan.checkpoint_id,
            "repository": s.repository,
            "snapshot": s.snapshot,
            "uuid": s.uuid,
            "short": self.short,
            "items": self.items,
            "alias_names": self.alias_names,
            "recorded_aliases": {a: s.aliases[a] for a in self.alias_names} if s.aliases else None,
            "templates": [
                {k: t[k] for k in ("kind", "name", "action", "body", "previous")}
                for t in self.templates
                if t["action"] in ("create", "overwrite")
            ],
        }


def make_plan(
    client: SearchClient,
    source: SnapshotSource,
    *,
    checkpoint_id: str,
    indices: list[str] | str | None,
    swap: str,
    include_global_state: bool,
    repository_settings: dict[str, Any] | None,
    restore_templates: bool | None = None,
    mark: str = N.STAGING_MARK,
) -> Planned:
    """The plan of a restore (see :func:`.restore.plan_restore`); changes nothing. ``mark``: what the
    side-by-side copies are named by (``<index>__restoring_<short id>``; a drill's ``__drill_``)."""
    if swap not in SWAP_MODES:
        raise EngineError(f"unknown swap mode {swap!r}", hint=f"use one of {', '.join(SWAP_MODES)}")
    plan = RestorePlan(checkpoint_id=checkpoint_id)
    problems = plan.problems
    info = client.info()
    where = client.where
    problems += compatibility_problems(source.engine, source.engine_version, info["flavor"], info["version"])

    # 1. repository and snapshot
    repo = client.get_repository(source.repository)
    register = False
    repo_notes: list[str] = []
    if repo is None:
        if repository_settings is None:
            problems.append(
                f"snapshot repository {source.repository!r} is not registered on {where}: register it "
                "(read-only when another cluster writes to it) or pass repository_settings, e.g. "
                '{"type": "fs", "settings": {"location": "<a directory below path.repo>", '
                '"readonly": true}}'
            )
        else:
            register = True
            bad = _path_repo_problem(client, repository_settings)
            if bad:
                problems.append(bad)
            repo_notes.append(
                f"repository {source.repository!r} is not registered yet: the restore registers and "
                f"verifies it with the given settings; the snapshot could not be checked now"
            )
    else:
        if repository_settings is not None:
            rtype, rsettings = L.normalize_repository_settings(repository_settings)
            if not L.repository_matches(repo, rtype, rsettings):
                repo_notes.append(
                    f"repository {source.repository!r} is already registered on {where} with other "
                    "settings: it is used as it is (repository_settings are only used to register "
                    "a missing repository)"
                )
        _check_snapshot(client, source, problems, where)
    readonly = str(((repo or {}).get("settings") or {}).get("readonly", "")).lower() == "true" or (
        repository_settings is not None
        and str(L.normalize_repository_settings(repository_settings)[1].get("readonly", "")).lower() == "true"
    )

    # 2. what to restore, under which names
    chosen = _select(source, indices, problems)
    view = cluster_view(client)
    short = _pick_short(
        N.short_id(checkpoint_id),
        [n for n, k in chosen.items() if k == "index"]
        + [b for n, k in chosen.items() if k == "stream" for b in source.data_streams[n]["backing_indices"]],
        view,
        mark,
    )
    stamp = N.stamp()
    taken = set(view.indices)
    snapshots_taken: set[str] | None = None
    items: list[dict[str, Any]] = []
    leftovers: list[str] = []
    recorded = source.aliases or {}
    alias_names = sorted(a for a, holders in recorded.items() if set(chosen) & set(holders))
    backing_now = view.backing()
    counts: dict[str, int] = {}

    def shard_counts() -> dict[str, int]:
        if not counts and repo is not None:
            counts.update(snapshot_shard_counts(client, source.repository, source.snapshot))
        return counts

    for name, kind in chosen.items():
        conflicts: list[str] = []
        notes: list[str] = []
        item: dict[str, Any] = {
            "kind": kind,
            "source": name,
            "target": name,
            "staging": None,
            "staging_backing": {},
            "expected": {},
            "holders": {},
            "old_aliases": {},
            "same_shards": True,
            "rollback": None,
            "backing_now": [],
        }
        if kind == "stream":
            backing = source.data_streams[name]["backing_indices"]
            item["expected"] = {b: source.expected.get(b, {}) for b in backing}
            item["staging_backing"] = {b: N.staging_name(b, short, mark) for b in backing}
            docs = sum(int(e.get("docs") or 0) for e in item["expected"].values())
            notes.append(f"checkpoint: data stream with {len(backing)} backing index(es), {docs} documents")
            if info["flavor"] == "elasticsearch" and not view.streams and not _has_stream_api(client):
                problems.append(
                    f"data stream {name}: this Elasticsearch cluster has no data streams (they need "
                    "the default distribution's data-streams module); restore it into a cluster "
                    "that has them"
                )
            if name in view.streams:
                item["action"] = "replace-stream"
                item["backing_now"] = list(view.streams[name])
                item["orig_blocks"] = {
                    b: settings_flat(client, b).get("index.blocks.write") for b in item["backing_now"]
                }
                now = client.count(name)
                if readonly:
                    problems.append(
                        f"data stream {name} exists: replacing it needs a rollback snapshot, but "
                        f"repository {source.repository!r} is read-only; delete the data stream first "
                        "or restore through a writable repository"
                    )
                if snapshots_taken is None:
                    snapshots_taken = (
                        {s["snapshot"] for s in list_snapshots(client, source.repository)}
                        if repo is not None
                        else set()
                    )
                snap = N.rollback_snapshot_name(short, stamp)
                k = 1
                while snap in snapshots_taken:
                    snap = N.rollback_snapshot_name(short, str(int(stamp) + k))
                    k += 1
                snapshots_taken.add(snap)
                item["rollback"] = snap
                conflicts.append(
                    f"data stream {name} exists ({now} documents now): it will be replaced; its current "
                    f"data is kept in the rollback snapshot {source.repository}:{snap}"
                )
            elif name in view.indices or name in view.aliases:
                problems.append(
                    f"data stream {name}: {name} is now an index or alias, not a data stream; rename or delete it first"
                )
                item["action"] = "create-stream"
            else:
                item["action"] = "create-stream"
                notes.append(f"data stream {name} does not exist: it will be created from the snapshot")
            clash = sorted(b for b in backing if b in view.indices and b not in backing_now)
            if clash:
                problems.append(
                    f"data stream {name}: {', '.join(clash)} exist(s) as plain indices (an earlier restore "
                    f"of the backing indices alone?): delete them (DELETE /{clash[0]}) first"
                )
            staging_names = list(item["staging_backing"].values())
        else:
            staging = N.staging_name(name, short, mark)
            item["staging"] = staging
            item["expected"] = source.expected.get(name, {})
            notes.append(f"checkpoint: {item['expected'].get('docs', '?')} documents")
            holders = dict(view.aliases.get(name, {}))
            if name in view.indices:
                item["action"] = "replace"
                if swap == "alias":
                    problems.append(
                        f"index {name} is a concrete index: swap='alias' needs {name} to be an alias or "
                        "absent; use swap='auto' or 'replace'"
                    )
            elif name in view.streams:
                item["action"] = "replace"
                problems.append(
                    f"{name} is now a data stream, the checkpoint has an index of that name: delete the "
                    "data stream first"
                )
            elif holders:
                item["action"] = "replace-alias" if swap == "replace" else "switch-alias"
                item["holders"] = holders
            else:
                item["action"] = "create-alias" if swap == "alias" else "create"
            staging_names = [staging]
            _plan_index(client, item, view, source, short, stamp, taken, conflicts, notes, problems, shard_counts)
        for bad in staging_names + ([item["rollback"]] if item["rollback"] and kind == "index" else []):
            if N.name_too_long(bad):
                problems.append(
                    f"name {name} is too long for the restore's side-by-side name {bad!r} "
                    f"(over {N.MAX_INDEX_NAME_BYTES} bytes)"
                )
        for other in sorted(view.indices):
            m = N.STAGING_RE.match(other)
            if not m or view.serving(other):
                continue
            if m.group("source") == name or (kind == "stream" and m.group("source") in item["expected"]):
                leftovers.append(other)
                conflicts.append(
                    f"leftover from an earlier restore: {other} (a failed restore's copy, or the "
                    f"rollback copy of an alias switch; left alone here: drop_leftovers removes it "
                    "when no restore is running)"
                )
        _plan_aliases(item, alias_names, recorded, view, short, conflicts, notes, problems)
        pi = PlanItem(
            component=COMPONENT,
            source=f"{name} ({source.repository}:{source.snapshot})",
            target=name,
            action=item["action"],
            staging_name=", ".join(staging_names),
            conflicts=conflicts,
            notes=notes,
        )
        items.append(item)
        plan.items.append(pi)

    # 3. templates, global state, odds and ends
    templates = plan_templates(client, source.templates, restore_templates) if source.templates else []
    for t in templates:
        if t["action"] == "equal":
            continue
        pi = PlanItem(
            component=COMPONENT,
            source=f"{t['kind'].replace('_', ' ')[:-1]} {t['name']} (checkpoint)",
            target=t["name"],
            action={"create": "create-template", "overwrite": "overwrite-template"}.get(t["action"], "keep-template"),
        )
        (pi.conflicts if t["action"] in ("overwrite", "keep") else pi.notes).append(t["text"])
        plan.items.append(pi)
    if source.aliases is None and items:
        plan.items[0].notes.append(
            "the checkpoint does not record aliases: aliases other than those of replaced indices are left as they are"
        )
    if include_global_state:
        conflicts = [
            f"the cluster's global state (persistent settings, index templates, ingest pipelines, "
            f"...) on {where} will be replaced by the snapshot's"
        ]
        if not source.include_global_state:
            problems.append(f"snapshot {source.repository}:{source.snapshot} does not include the global state")
        plan.items.append(
            PlanItem(
                component=COMPONENT,
                source=f"global state ({source.repository}:{source.snapshot})",
                target="cluster",
                action="restore-global-state",
                conflicts=conflicts,
            )
        )
    if source.undescribed_streams and plan.items:
        plan.items[0].notes.append(
            "data streams in the snapshot that this checkpoint did not capture as such are "
            f"not restored: {', '.join(source.undescribed_streams)}"
        )
    if plan.items:
        plan.items[0].notes.extend(repo_notes)
    if source.engine and info["flavor"] != source.engine and not problems and plan.items:
        plan.items[0].notes.append(
            f"cross-product restore: {product(source.engine)} {source.engine_version} "
            f"snapshot into {product(info['flavor'])} {info['version']}"
        )
    return Planned(
        plan=plan,
        source=source,
        items=items,
        short=short,
        stamp=stamp,
        info=info,
        leftovers=leftovers,
        alias_names=alias_names,
        templates=templates,
        register_repository=register,
        mark=mark,
    )


def _plan_index(
    client: SearchClient,
    item: dict[str, Any],
    view: ClusterView,
    source: SnapshotSource,
    short: str,
    stamp: str,
    taken: set[str],
    conflicts: list[str],
    notes: list[str],
    problems: list[str],
    shard_counts: Any,
) -> None:
    name, action, staging = item["target"], item["action"], item["staging"]
    holders = item["holders"]
    if action == "replace" and name in view.indices:
        row = view.indices[name]
        status, health = str(row.get("status") or ""), str(row.get("health") or "")
        if status == "close":
            problems.append(
                f"index {name} is closed: it cannot be copied to a rollback copy; open it "
                f"(POST /{name}/_open) or delete it before restoring"
            )
            return
        if health == "red":
            problems.append(
                f"index {name} is red (a primary shard is unassigned): no rollback copy can be "
                f"taken; fix it (GET /_cluster/allocation/explain) or delete it before restoring"
            )
            return
        rb = _free_rollback(name, short, stamp, taken)
        taken.add(rb)
        item["rollback"] = rb
        item["old_aliases"] = view.aliases_of(name)
        settings = settings_flat(client, name)
        item["orig_block"] = settings.get("index.blocks.write")
        shards_now = settings.get("index.number_of_shards")
        want = shard_counts().get(name)
        item["same_shards"] = want is None or str(want) == str(shards_now)
        how = (
            "closed and restored over from the snapshot"
            if item["same_shards"]
            else f"deleted and restored from the snapshot (the checkpoint has {want} shards, the index {shards_now})"
        )
        conflicts.append(
            f"index {name} exists and is open ({client.count(name)} documents now): it will be "
            f"replaced ({how}); its current data is kept in the rollback copy {rb}"
        )
        current = item["old_aliases"]
        if current and source.aliases is None:
            notes.append(
                f"its aliases ({', '.join(sorted(current))}) will be moved to the restored index "
                "(the checkpoint does not record aliases)"
            )
    elif action == "switch-alias":
        conflicts.append(
            f"{name} is an alias of {holders_text(holders)}: it will be switched to the "
            f"restored index {staging} in one atomic step; {holders_text(holders)} stay as "
            "rollback copies"
        )
        notes.append(f"the restored index keeps the name {staging}")
    elif action == "replace-alias":
        conflicts.append(
            f"{name} is an alias of {holders_text(holders)}: the alias will be removed and "
            f"an index {name} restored; {holders_text(holders)} stay as rollback copies"
        )
    elif action == "create-alias":
        notes.append(f"{name} does not exist: an alias {name} will point at the restored index {staging}")
        notes.append(f"the restored index keeps the name {staging}")
    elif action == "create":
        notes.append(f"{name} does not exist: it will be restored from the snapshot")


def _plan_aliases(
    item: dict[str, Any],
    alias_names: list[str],
    recorded: dict[str, Any],
    view: ClusterView,
    short: str,
    conflicts: list[str],
    notes: list[str],
    problems: list[str],
) -> None:
    name = item["source"]
    final = name if item["action"] in RESTORES_TARGET or item["kind"] == "stream" else item["staging"]
    for alias in alias_names:
        if name not in recorded[alias]:
            continue
        now_holders = view.aliases.get(alias, {})
        if alias in view.indices:
            problems.append(
                f"the checkpoint has alias {alias} on {name}, but {alias} is now a concrete index: "
                "rename or delete that index first"
            )
        elif not now_holders:
            notes.append(f"alias {alias} (missing now) will be recreated on {final}")
        elif set(now_holders) - set(recorded[alias]):
            conflicts.append(
                f"alias {alias} points at {holders_text(now_holders)}, the checkpoint had it on "
                f"{holders_text(recorded[alias])}: it will point at {final} again"
            )
