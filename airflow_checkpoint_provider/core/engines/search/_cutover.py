"""Loading the side-by-side copies, verifying them, and the forward pass of the cut-over.

**Load** (journal phase ``loading`` with the copies' names, written before they exist): every
selected index ``X`` of the snapshot is restored as ``X__restoring_<short id>`` (a data stream's
backing indices likewise, as plain indices), then each copy's ``_count`` and mapping hash are
compared with the checkpoint's fingerprints. A difference drops the copies: nothing serving was
touched. Then phase ``verified``.

**Forward pass** (phase ``cutting_over``; each step journaled, each skipped when the live cluster
shows it took effect already):

1. templates the cluster lacks are created (``put_template``), before anything that may need them;
2. per index ``X`` that exists (``replace``): ``block_writes`` on ``X``, ``clone`` it to the
   rollback copy ``X__rollback_<short id>_<stamp>`` (its documents counted against ``X``), then
   ``close`` ``X`` and ``restore_index`` ``X`` over it from the snapshot (or, when the checkpoint
   has another number of shards, ``delete`` ``X`` and restore it). Restoring from the snapshot,
   not cloning the verified copy, gives ``X`` exactly the original's settings (a clone would add
   ``index.resize.source.*`` and ``index.routing_partition_size``). ``X`` is never missing in the
   first case, and only between two requests in the second;
3. ``X`` an alias (``switch-alias``): one atomic ``alias_switch`` to the verified copy, which keeps
   its ``__restoring_`` name and serves;
4. per data stream ``D`` that exists (``replace-stream``): ``block_writes`` on its backing indices,
   ``snapshot_stream`` into a rollback snapshot (a data stream cannot be rebuilt from clones),
   ``delete_stream``, then ``restore_stream`` from the checkpoint's snapshot; an absent ``D`` is
   only restored;
5. the checkpoint's aliases are reinstated in one atomic ``alias_switch``;
6. every target is counted again, and the copies nothing serves are dropped. Phase ``cut_over``.
"""

from __future__ import annotations

import time
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search import _names as N
from airflow_checkpoint_provider.core.engines.search import _ops as O
from airflow_checkpoint_provider.core.engines.search._plan import (
    RESTORES_TARGET,
    Planned,
)
from airflow_checkpoint_provider.core.engines.search._steps import Ctx
from airflow_checkpoint_provider.core.engines.search._templates import (
    get_template,
    put_template,
)
from airflow_checkpoint_provider.core.errors import CaptureError, EngineError
from airflow_checkpoint_provider.version import __version__

#: how often a data stream a writer re-created during the cut-over is deleted again before giving up
_RECREATED_RETRIES = 3


class RestoreVerificationError(CaptureError):
    """The restored copies do not match the checkpoint's fingerprints; nothing serving was touched."""

    def __init__(
        self, message: str, *, hint: str | None = None, mismatches: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.mismatches = mismatches or []


# --------------------------------------------------------------------------- load and verify


def drop_copies(client: Any, names: list[str], say: Any) -> list[str]:
    """Delete side-by-side copies (best effort); return the ones that could not be deleted."""
    kept = []
    for name in names:
        try:
            O.delete_index(client, name)
        except EngineError as exc:
            say(f"could not delete the side-by-side copy {name}: {exc.message.splitlines()[0]}")
            kept.append(name)
    return kept


def load(ctx: Ctx, planned: Planned, *, include_global_state: bool) -> dict[str, int]:
    """Restore the copies side by side and verify them (phases ``loading`` -> ``verified``)."""
    src, client = planned.source, ctx.client
    copies = planned.copies()
    ctx.journal.note(plan=ctx.record)
    ctx.journal.phase("loading", staging=copies)
    names = [it["source"] for it in planned.items if it["kind"] == "index"] + [
        b for it in planned.items if it["kind"] == "stream" for b in it["staging_backing"]
    ]
    try:
        ctx.say(
            f"restoring {len(names)} index(es) of {src.repository}:{src.snapshot} side by side as "
            f"<index>{planned.mark}{planned.short}"
        )
        O.restore_snapshot(
            client,
            src.repository,
            src.snapshot,
            names,
            suffix=planned.mark + planned.short,
            include_global_state=include_global_state,
        )
        ctx.wait(copies, f"restore of {src.repository}:{src.snapshot}")
        mismatches, counts = _verify_copies(client, planned)
    except BaseException:
        drop_copies(client, copies, ctx.say)
        ctx.journal.phase("aborted")
        raise
    if mismatches:
        kept = drop_copies(client, copies, ctx.say)
        ctx.journal.phase("aborted")
        lines = [
            f"index {m['index']}: {m['what']} expected {m['expected']}, restored copy has {m['actual']}"
            for m in mismatches
        ]
        raise RestoreVerificationError(
            f"search cluster {client.where}: the restored copies of snapshot {src.repository}:"
            f"{src.snapshot} do not match checkpoint {planned.plan.checkpoint_id}:\n"
            + "\n".join(f"  - {x}" for x in lines)
            + "\nnothing serving was changed; the restored copies were "
            + (f"deleted except {', '.join(kept)}" if kept else "deleted"),
            hint="the snapshot does not hold what the checkpoint recorded (was the snapshot replaced, or were "
            "writers active during the capture?); restore another checkpoint",
            mismatches=mismatches,
        )
    ctx.journal.phase("verified")
    ctx.say("restored copies verified: " + ", ".join(f"{n}={c}" for n, c in sorted(counts.items())))
    return counts


def _pairs(planned: Planned) -> list[tuple[str, str, dict[str, Any]]]:
    """``(name in the snapshot, its copy, expected fingerprint)`` for every copy."""
    out = []
    for it in planned.items:
        if it["kind"] == "index":
            out.append((it["source"], it["staging"], it["expected"]))
        else:
            out += [(b, copy, it["expected"].get(b, {})) for b, copy in it["staging_backing"].items()]
    return out


def _verify_copies(client: Any, planned: Planned) -> tuple[list[dict[str, Any]], dict[str, int]]:
    pairs = _pairs(planned)
    counts = O.refresh_count(client, [c for _, c, _ in pairs])
    mappings: dict[str, Any] = {}
    for batch in L.url_batches([c for _, c, _ in pairs]):
        mappings.update(client.get_mappings(",".join(batch)))
    mismatches = []
    for name, copy, want in pairs:
        if isinstance(want.get("docs"), int) and counts[copy] != want["docs"]:
            mismatches.append(
                {"index": name, "staging": copy, "what": "docs", "expected": want["docs"], "actual": counts[copy]}
            )
        have_map = L.mapping_sha256(mappings.get(copy))
        if want.get("mapping_sha256") and have_map != want["mapping_sha256"]:
            mismatches.append(
                {
                    "index": name,
                    "staging": copy,
                    "what": "mapping_sha256",
                    "expected": want["mapping_sha256"],
                    "actual": have_map,
                }
            )
    return mismatches, {name: counts[copy] for name, copy, _ in pairs}


# --------------------------------------------------------------------------- forward pass


def forward(ctx: Ctx) -> dict[str, int]:
    """Cut over (idempotent; see the module docstring). Returns the documents per restored index."""
    for t in ctx.record.get("templates") or []:
        _put_template(ctx, t)
    for it in ctx.items:
        ctx.current = it["target"]
        if it["kind"] == "stream":
            _stream(ctx, it)
        else:
            _index(ctx, it)
    ctx.current = "aliases"
    reconcile_aliases(ctx)
    ctx.current, ctx.doing = "all", "count the documents of the restored indices"
    counts = _count_targets(ctx)
    drop_copies(
        ctx.client,
        [it["staging"] for it in ctx.items if it["kind"] == "index" and it["action"] in RESTORES_TARGET]
        + [c for it in ctx.items if it["kind"] == "stream" for c in it["staging_backing"].values()],
        ctx.say,
    )
    for it in ctx.items:
        ctx.state[it["target"]] = "restored"
    return counts


def _put_template(ctx: Ctx, t: dict[str, Any]) -> None:
    have = get_template(ctx.client, t["kind"], t["name"])
    if have is not None and L.canonical_json_any(have) == L.canonical_json_any(t["body"]):
        return
    if t["action"] == "create" and have is not None and not ctx.started("put_template", name=t["name"]):
        ctx.say(
            f"{t['kind'][:-1].replace('_', ' ')} {t['name']} was created meanwhile with other content: left as it is"
        )
        return
    with ctx.step(
        "put_template",
        {"kind": t["kind"], "name": t["name"]},
        {"kind": t["kind"], "name": t["name"], "previous": t["previous"]},
        f"{t['kind'][:-1].replace('_', ' ')} {t['name']}: putting the checkpoint's version",
    ):
        put_template(ctx.client, t["kind"], t["name"], t["body"])


def target_restored(ctx: Ctx, x: str) -> bool:
    """``x`` was restored (or is being restored) from the snapshot by this restore."""
    return ctx.started("restore_index", index=x) and ctx.status(x) == "open" and ctx.ours(x)


def _clone_settings(settings: dict[str, Any], block: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"index.blocks.write": block}
    if settings.get("index.auto_expand_replicas") not in (None, "false", False):
        out["index.auto_expand_replicas"] = settings["index.auto_expand_replicas"]
    elif settings.get("index.number_of_replicas") is not None:
        out["index.number_of_replicas"] = int(settings["index.number_of_replicas"])
    return out


def ensure_rollback_copy(ctx: Ctx, it: dict[str, Any]) -> None:
    """Write-block ``X`` and clone it to its rollback copy, unless that copy is complete already."""
    c, x, rb = ctx.client, it["target"], it["rollback"]
    if rb in ctx.noted("rollbacks_verified"):
        return
    settings = O.settings_flat(c, x)
    if str(settings.get("index.blocks.write")).lower() != "true":
        with ctx.step(
            "block_writes",
            {"index": x},
            {"index": x, "index.blocks.write": it.get("orig_block")},
            f"{x}: blocking writes before the rollback copy is taken",
        ):
            O.put_settings(c, x, {"index.blocks.write": True})
    before = O.refresh_count(c, [x])[x]
    if ctx.status(rb) != "missing":
        ctx.wait([rb], f"clone of {x} to {rb}")
        if O.refresh_count(c, [rb])[rb] != before:
            O.delete_index(c, rb)
    if ctx.status(rb) == "missing":
        with ctx.step(
            "clone",
            {"source": x, "index": rb},
            {"delete": rb},
            f"{x}: copying the current index to the rollback copy {rb}",
        ):
            O.clone(c, x, rb, _clone_settings(settings, True))
        ctx.wait([rb], f"clone of {x} to {rb}")
    got = O.refresh_count(c, [rb])[rb]
    if got != before:
        raise EngineError(
            f"search cluster {c.where}: the rollback copy {rb} holds {got} documents, {x} holds {before}",
            hint="check the cluster's health and retry",
        )
    ctx.note_add("rollbacks_verified", rb)


def _index(ctx: Ctx, it: dict[str, Any]) -> None:
    c, x, action = ctx.client, it["target"], it["action"]
    if action in ("switch-alias", "create-alias"):
        view = O.cluster_view(c)
        now = view.aliases.get(x, {})
        if set(now) == {it["staging"]}:
            return
        actions = [O.remove(h, x) for h in sorted(now)] + [O.add(it["staging"], x)]
        with ctx.step(
            "alias_switch",
            {"alias": x, "actions": actions},
            {"alias": x, "holders": now},
            f"{x}: switching the alias from {', '.join(sorted(now)) or 'nothing'} to {it['staging']}",
        ):
            O.update_aliases(c, actions, f"switch the alias {x!r} to {it['staging']!r}")
        return
    if not target_restored(ctx, x):
        if action == "replace-alias":
            now = O.cluster_view(c).aliases.get(x, {})
            if now:
                actions = [O.remove(h, x) for h in sorted(now)]
                with ctx.step(
                    "alias_switch",
                    {"alias": x, "actions": actions},
                    {"alias": x, "holders": now},
                    f"{x}: removing the alias from {', '.join(sorted(now))}",
                ):
                    O.update_aliases(c, actions, f"remove the alias {x!r}")
        elif action == "replace":
            if ctx.status(x) == "open":
                ensure_rollback_copy(ctx, it)  # returns at once once the copy was verified
            status = ctx.status(x)
            if it["same_shards"] and status == "open":
                with ctx.step(
                    "close",
                    {"index": x},
                    {"open": x, "index.blocks.write": it.get("orig_block")},
                    f"{x}: closing the current index to restore over it (kept as {it['rollback']})",
                ):
                    O.close_index(c, x)
            elif status == "open":  # the original, or an index a writer re-created after the delete
                if ctx.started("delete", index=x):
                    ctx.say(
                        f"WARNING: {x} was re-created by a writer during the cut-over "
                        f"({c.count(x)} documents written meanwhile are dropped)"
                    )
                with ctx.step(
                    "delete",
                    {"index": x},
                    {"clone_from": it["rollback"]},
                    f"{x}: deleting the current index (kept as {it['rollback']})",
                ):
                    O.delete_index(c, x, missing_ok=False)
        elif ctx.status(x) != "missing":  # create: something appeared under that name meanwhile
            raise EngineError(
                f"search cluster {c.where}: {x} exists now, it did not when the restore was planned",
                hint=f"check what created {x}; delete it or restore it explicitly, then retry",
            )
        with ctx.step(
            "restore_index",
            {"index": x, "snapshot": ctx.snapshot},
            {"index": x, "rollback": it["rollback"]},
            f"{x}: restoring it from {ctx.repository}:{ctx.snapshot}",
        ):
            O.restore_snapshot(c, ctx.repository, ctx.snapshot, [x])
    ctx.wait([x], f"restore of {x} from {ctx.repository}:{ctx.snapshot}")
    _add_aliases(ctx, it)


def _add_aliases(ctx: Ctx, it: dict[str, Any]) -> None:
    """The aliases of a freshly restored index: the replaced index's, except those the checkpoint
    records (as a restore over the closed index keeps them), and the checkpoint's (without
    ``is_write_index``: the alias may still have another write index until the reconcile)."""
    x = it["target"]
    recorded = ctx.record.get("recorded_aliases")
    governed = set(ctx.record.get("alias_names") or [])
    wanted = {a: p for a, p in (it.get("old_aliases") or {}).items() if a not in governed}
    if recorded is not None:
        wanted.update(
            {
                a: {k: v for k, v in holders[it["source"]].items() if k != "is_write_index"}
                for a, holders in recorded.items()
                if it["source"] in holders
            }
        )
    have = O.cluster_view(ctx.client).aliases_of(x)
    missing = {a: p for a, p in wanted.items() if a not in have}
    if missing:
        actions = [O.add(x, a, p) for a, p in sorted(missing.items())]
        with ctx.step(
            "alias_switch",
            {"alias": ",".join(sorted(missing)), "index": x, "actions": actions},
            {"actions": [O.remove(x, a) for a in sorted(missing)]},
            f"{x}: adding the aliases {', '.join(sorted(missing))}",
        ):
            O.update_aliases(ctx.client, actions, f"add the aliases of {x!r}")


def stream_restored(ctx: Ctx, it: dict[str, Any], snapshot: str | None = None) -> bool:
    """The data stream exists and every backing index of it came from ``snapshot`` (default: ours)."""
    d = it["target"]
    backing = O.data_streams(ctx.client, d).get(d) or []
    return bool(backing) and all(ctx.ours(b, snapshot) for b in backing)


def ensure_rollback_snapshot(ctx: Ctx, it: dict[str, Any]) -> None:
    c, d, snap = ctx.client, it["target"], it["rollback"]
    if snap in ctx.noted("rollbacks_verified"):
        return
    state = O.snapshot_state(c, ctx.repository, snap)
    if state is not None and state["state"] in L.RUNNING_STATES:
        state = c.wait_for_snapshot(ctx.repository, snap, poll_interval=ctx.poll_interval, timeout=ctx.timeout)
    if state is not None and state["state"] != "SUCCESS":
        c.delete_snapshot(ctx.repository, snap, missing_ok=True)
        state = None
    if state is None:
        backing = O.data_streams(c, d).get(d) or []
        blocks = {b: O.settings_flat(c, b).get("index.blocks.write") for b in backing}
        if any(str(v).lower() != "true" for v in blocks.values()):
            with ctx.step(
                "block_writes",
                {"stream": d, "indices": backing},
                {"blocks": it.get("orig_blocks") or blocks},
                f"{d}: blocking writes to the data stream before its rollback snapshot",
            ):
                for b in backing:
                    O.put_settings(c, b, {"index.blocks.write": True})
        with ctx.step(
            "snapshot_stream",
            {"stream": d, "snapshot": snap},
            {"delete_snapshot": snap},
            f"{d}: snapshotting the current data stream to {ctx.repository}:{snap}",
        ):
            c.start_snapshot(
                ctx.repository,
                snap,
                [d],
                metadata={
                    "taken_by": N.TAKEN_BY,
                    "provider_version": __version__,
                    "purpose": "rollback",
                    "source": d,
                    "checkpoint": ctx.checkpoint_id,
                    "short_id": ctx.record.get("short", ""),
                    "docs": sum(c.count(b) for b in backing),
                },
            )
        c.wait_for_snapshot(ctx.repository, snap, poll_interval=ctx.poll_interval, timeout=ctx.timeout)
    ctx.note_add("rollbacks_verified", snap)


def _stream(ctx: Ctx, it: dict[str, Any]) -> None:
    c, d = ctx.client, it["target"]
    for attempt in range(_RECREATED_RETRIES + 1):
        if stream_restored(ctx, it):
            break
        live = d in O.data_streams(c, d)
        deleted_before = ctx.started("delete_stream", stream=d)
        if live and not deleted_before:
            if it["action"] != "replace-stream":
                raise EngineError(
                    f"search cluster {c.where}: data stream {d} exists now, it did not when the restore was planned",
                    hint=f"check what created {d}; delete it, then retry",
                )
            ensure_rollback_snapshot(ctx, it)  # the original is still there
        if live:
            if deleted_before:
                ctx.say(
                    f"WARNING: data stream {d} was re-created by a writer during the cut-over "
                    f"({_docs_written(ctx, d)} documents written meanwhile are dropped)"
                )
            with ctx.step(
                "delete_stream",
                {"stream": d},
                {"restore_from": it["rollback"]},
                f"{d}: deleting the current data stream (kept in {it['rollback']})",
            ):
                O.delete_data_stream(c, d)
        try:
            with ctx.step(
                "restore_stream",
                {"stream": d, "snapshot": ctx.snapshot},
                {"stream": d},
                f"{d}: restoring the data stream from {ctx.repository}:{ctx.snapshot}",
            ):
                O.restore_snapshot(c, ctx.repository, ctx.snapshot, [d])
        except EngineError as exc:
            if attempt < _RECREATED_RETRIES and "already exists" in exc.message:
                time.sleep(0.2)
                continue
            raise
        break
    ctx.wait(list(it["expected"]), f"restore of data stream {d} from {ctx.repository}:{ctx.snapshot}")


def _docs_written(ctx: Ctx, stream: str) -> str:
    """How many documents ``stream`` holds, for a warning; "some" when its shards can't be counted yet."""
    try:
        return str(ctx.client.count(stream))
    except EngineError:
        return "some"


def final_target(ctx: Ctx, source: str) -> str | None:
    """The index that serves ``source``'s data once cut over (None for data streams)."""
    for it in ctx.items:
        if it["source"] == source:
            if it["kind"] == "stream":
                return None
            return str(it["target"] if it["action"] in RESTORES_TARGET else it["staging"])
    return source


def reconcile_aliases(ctx: Ctx) -> None:
    """Point the recorded aliases where the checkpoint had them (one atomic request)."""
    recorded = ctx.record.get("recorded_aliases") or {}
    if not recorded:
        return
    view = O.cluster_view(ctx.client)
    restored = {it["source"] for it in ctx.items}
    actions: list[dict[str, Any]] = []
    undo: list[dict[str, Any]] = []
    for alias in ctx.record.get("alias_names") or []:
        want: dict[str, dict[str, Any]] = {}
        for index, props in recorded[alias].items():
            target = final_target(ctx, index) if index in restored else None
            if target:
                want[target] = props
        keep = {i for i in recorded[alias] if i not in restored}
        now = view.aliases.get(alias, {})
        for holder, props in sorted(now.items()):
            if holder not in want and holder not in keep:
                actions.append(O.remove(holder, alias))
                undo.append(O.add(holder, alias, props))
        for index, props in sorted(want.items()):
            if index in now and O.alias_props(now[index]) == O.alias_props(props):
                continue
            actions.append(O.add(index, alias, props))
            undo.append(O.add(index, alias, now[index]) if index in now else O.remove(index, alias))
    if not actions:
        return
    with ctx.step(
        "alias_switch",
        {"alias": "*reconcile*", "actions": actions},
        {"actions": undo},
        f"reinstating the checkpoint's aliases: {', '.join(ctx.record.get('alias_names') or [])}",
    ):
        O.update_aliases(ctx.client, actions, "reinstate the checkpoint's aliases")


def _count_targets(ctx: Ctx) -> dict[str, int]:
    counts: dict[str, int] = {}
    wrong: list[str] = []
    for it in ctx.items:
        pairs = (
            [(b, e) for b, e in it["expected"].items()]
            if it["kind"] == "stream"
            else [(final_target(ctx, it["source"]) or it["target"], it["expected"])]
        )
        for name, want in pairs:
            counts[name] = O.refresh_count(ctx.client, [name])[name]
            if isinstance(want.get("docs"), int) and counts[name] != want["docs"]:
                wrong.append(f"{name}: {counts[name]} documents, expected {want['docs']}")
    if wrong:
        raise EngineError(
            f"search cluster {ctx.client.where}: after the cut-over: " + "; ".join(wrong),
            hint="is something writing to the indices during the restore?",
        )
    return counts
