"""The backward pass (undo a cut-over, whole or in part) and the replay of an interrupted restore.

**Backward pass**, newest first, each step journaled and skipped when the live cluster shows it is
not needed: the reinstated aliases are switched back (``rollback_alias``); per index an index this
restore restored is deleted (``rollback_delete``) and the rollback copy cloned back into its place
(``rollback_clone``), or a closed original is opened again, and the write block the cut-over put on
the original is lifted (``unblock``); an alias switch is switched back (``rollback_alias``); a data
stream this restore restored is deleted and the rollback snapshot's restored in its place
(``rollback_stream``); templates it created are deleted, overwritten ones put back
(``drop_template``). Then the side-by-side copies and the rollback copies, which are no longer
needed, are dropped. A clone back gains ``index.resize.source.*`` settings: the documents and
mappings are exactly the original's.

**Replay** (:func:`recover`): a restore killed part-way left a journal entry. Its phase decides:
``verified`` or later (the replacement was proven) rolls forward, by running the forward pass
(:func:`._cutover.forward`) again; anything earlier, or a rollback that had begun, rolls back. Both
passes look at the live cluster, so a step whose intent was written but not marked done is taken
again only if it did not take effect. The replay is idempotent and leaves every target present,
open and writable, and no copy behind.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search import _ops as O
from airflow_checkpoint_provider.core.engines.search._client import SearchClient
from airflow_checkpoint_provider.core.engines.search._cutover import (
    _clone_settings,
    drop_copies,
    forward,
    stream_restored,
)
from airflow_checkpoint_provider.core.engines.search._plan_checks import holders_text
from airflow_checkpoint_provider.core.engines.search._steps import Ctx, EntryJournal
from airflow_checkpoint_provider.core.engines.search._templates import (
    delete_template,
    get_template,
    put_template,
)
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    CheckpointError,
    ConnectionFailedError,
    EngineError,
)
from airflow_checkpoint_provider.core.journal import ComponentEntry

_log = logging.getLogger(__name__)


def backward(ctx: Ctx) -> None:
    """Undo whatever the forward pass did (idempotent); see the module docstring."""
    ctx.journal.note(rolling_back=True)
    ctx.journal.phase("rolling_back")
    for s in reversed(ctx.journal.entry.steps):
        if s.name == "alias_switch" and s.intent.get("alias") == "*reconcile*":
            _undo_actions(ctx, s.undo.get("actions") or [], "switching the checkpoint's aliases back")
            break
    for it in reversed(ctx.items):
        ctx.current = it["target"]
        if it["kind"] == "stream":
            _stream(ctx, it)
        else:
            _index(ctx, it)
    for t in reversed(ctx.record.get("templates") or []):
        _template(ctx, t)
    copies = [it["staging"] for it in ctx.items if it["staging"]] + [
        c for it in ctx.items for c in it["staging_backing"].values()
    ]
    kept = drop_copies(ctx.client, copies, ctx.say)
    if kept:
        raise EngineError(
            f"search cluster {ctx.client.where}: could not delete the side-by-side copies {', '.join(kept)}",
            hint="delete them by hand (DELETE /<index>) once the cluster answers",
        )


def _undo_actions(ctx: Ctx, actions: list[dict[str, Any]], doing: str) -> None:
    view = O.cluster_view(ctx.client)
    todo = []
    for a in actions:
        ((kind, body),) = a.items()
        index, alias = body["index"], body["alias"]
        if index not in view.indices:
            continue
        has = alias in view.aliases and index in view.aliases[alias]
        if (
            (kind == "add" and not has)
            or (kind == "remove" and has)
            or (kind == "add" and O.alias_props(view.aliases[alias][index]) != O.alias_props(body))
        ):
            todo.append(a)
    if todo:
        with ctx.step("rollback_alias", {"actions": todo}, {"actions": actions}, doing):
            O.update_aliases(ctx.client, todo, doing)


def _index(ctx: Ctx, it: dict[str, Any]) -> None:
    c, x, action = ctx.client, it["target"], it["action"]
    if action in ("switch-alias", "create-alias"):
        now = O.cluster_view(c).aliases.get(x, {})
        if it["staging"] in now:
            existing = O.cluster_view(c).indices
            actions = [O.remove(it["staging"], x)] + [
                O.add(h, x, p) for h, p in sorted(it["holders"].items()) if h in existing
            ]
            with ctx.step(
                "rollback_alias",
                {"alias": x, "actions": actions},
                {"alias": x, "index": it["staging"]},
                f"{x}: switching the alias back to {holders_text(it['holders'])}",
            ):
                O.update_aliases(c, actions, f"switch the alias {x!r} back")
            ctx.state[x] = (
                f"alias switched back to {holders_text(it['holders'])}" if it["holders"] else "alias removed again"
            )
        else:
            ctx.state.setdefault(x, "untouched")
        return
    status = ctx.status(x)
    ours = status == "open" and ctx.started("restore_index", index=x) and ctx.ours(x)
    foreign = (
        status == "open" and not ours and ctx.started("delete", index=x) and not ctx.started("rollback_clone", index=x)
    )
    if ours or foreign:
        if ours:
            try:
                ctx.wait([x], f"restore of {x}")
            except EngineError as exc:  # a failed restore: delete it all the same
                ctx.say(f"{x}: the restore did not finish ({exc.message.splitlines()[0]})")
        with ctx.step(
            "rollback_delete",
            {"index": x},
            {"restore_from": ctx.snapshot},
            f"{x}: deleting the index this restore restored",
        ):
            O.delete_index(c, x)
        status = "missing"
    if action == "create":
        ctx.state[x] = "absent again" if ours else "untouched"
        return
    if action == "replace-alias":
        if not O.cluster_view(c).aliases.get(x) and it["holders"]:
            actions = [O.add(h, x, p) for h, p in sorted(it["holders"].items())]
            with ctx.step(
                "rollback_alias",
                {"alias": x, "actions": actions},
                {"alias": x},
                f"{x}: putting the alias back on {holders_text(it['holders'])}",
            ):
                O.update_aliases(c, actions, f"re-add the alias {x!r}")
            ctx.state[x] = f"alias restored on {holders_text(it['holders'])}"
        else:
            ctx.state.setdefault(x, "untouched")
        return
    # replace
    rb = it["rollback"]
    orig_block = it.get("orig_block")
    if status == "missing":
        if rb not in ctx.noted("rollbacks_verified") or ctx.status(rb) == "missing":
            raise CheckpointError(
                f"search cluster {c.where}: {x} is missing and its rollback copy {rb} is "
                + ("missing" if ctx.status(rb) == "missing" else "not verified"),
                hint=f"if {rb} holds the data, clone it back (POST /{rb}/_clone/{x}); otherwise restore {x} from "
                "the safety checkpoint taken before this restore",
            )
        settings = O.settings_flat(c, rb)
        with ctx.step(
            "rollback_clone",
            {"source": rb, "index": x},
            {"delete": x},
            f"{x}: recreating it from the rollback copy {rb}",
        ):
            O.clone(c, rb, x, _clone_settings(settings, True))
        ctx.wait([x], f"clone of {rb} back to {x}")
        got, want = O.refresh_count(c, [x])[x], O.refresh_count(c, [rb])[rb]
        if got != want:
            raise EngineError(
                f"search cluster {c.where}: {x} recreated from {rb} holds {got} documents, {rb} {want}",
                hint=f"keep {rb}; check the cluster and clone it again",
            )
        ctx.state[x] = f"recreated from the rollback copy {rb}"
        status = "recreated"
    elif status == "open" and ctx.started("rollback_clone", index=x):
        ctx.wait([x], f"clone of {rb} back to {x}")
        ctx.state[x] = f"recreated from the rollback copy {rb}"
        status = "recreated"
    if status == "recreated":
        old = it.get("old_aliases") or {}
        missing = {a: p for a, p in old.items() if a not in O.cluster_view(c).aliases_of(x)}
        if missing:
            actions = [O.add(x, a, p) for a, p in sorted(missing.items())]
            with ctx.step(
                "rollback_alias",
                {"index": x, "actions": actions},
                {"index": x},
                f"{x}: re-adding its aliases {', '.join(sorted(missing))}",
            ):
                O.update_aliases(c, actions, f"re-add the aliases of {x!r}")
    block_now = O.settings_flat(c, x).get("index.blocks.write") if status != "close" else None
    blocked = str(block_now).lower() != str(orig_block).lower()
    if status == "close" or (blocked and (status == "recreated" or ctx.started("block_writes", index=x))):
        with ctx.step(
            "unblock",
            {"index": x, "open": status == "close", "index.blocks.write": orig_block},
            {"index": x},
            f"{x}: {'opening it and ' if status == 'close' else ''}lifting the write block",
        ):
            if status == "close":
                O.open_index(c, x)
                ctx.wait([x], f"opening {x}")
            O.put_settings(c, x, {"index.blocks.write": orig_block})
        if status != "recreated":
            ctx.state[x] = (
                "untouched (opened, write block lifted)" if status == "close" else "untouched (write block lifted)"
            )
    ctx.state.setdefault(x, "untouched")
    if rb and ctx.status(rb) != "missing":
        O.delete_index(c, rb)  # the original serves again: its copy is not needed


def _stream(ctx: Ctx, it: dict[str, Any]) -> None:
    c, d, snap = ctx.client, it["target"], it["rollback"]
    live = d in O.data_streams(c, d)
    restored = live and ctx.started("restore_stream", stream=d) and stream_restored(ctx, it)
    if it["action"] == "create-stream":
        if restored:
            with ctx.step(
                "rollback_stream",
                {"stream": d, "delete": True},
                {"restore_from": ctx.snapshot},
                f"{d}: deleting the data stream this restore restored",
            ):
                O.delete_data_stream(c, d)
            ctx.state[d] = "absent again"
        else:
            ctx.state.setdefault(d, "untouched")
        return
    back = live and snap and stream_restored(ctx, it, snap)
    foreign = live and not restored and not back and ctx.started("delete_stream", stream=d)
    if (restored or foreign or not live) and not back:
        if snap not in ctx.noted("rollbacks_verified"):
            raise CheckpointError(
                f"search cluster {c.where}: data stream {d} was replaced but its rollback snapshot "
                f"{ctx.repository}:{snap} is not complete",
                hint=f"restore {d} from the safety checkpoint taken before this restore",
            )
        with ctx.step(
            "rollback_stream",
            {"stream": d, "snapshot": snap},
            {"stream": d},
            f"{d}: restoring the data stream from its rollback snapshot {ctx.repository}:{snap}",
        ):
            if d in O.data_streams(c, d):
                O.delete_data_stream(c, d)
            O.restore_snapshot(c, ctx.repository, snap, [d])
        ctx.state[d] = f"restored from the rollback snapshot {snap}"
    backing = O.data_streams(c, d).get(d) or []
    ctx.wait(backing, f"restore of data stream {d}")
    blocks = it.get("orig_blocks") or {}
    wrong = [
        b for b in backing if str(O.settings_flat(c, b).get("index.blocks.write")).lower() != str(blocks.get(b)).lower()
    ]
    if wrong:
        with ctx.step(
            "unblock",
            {"stream": d, "indices": wrong},
            {"stream": d},
            f"{d}: lifting the write block of its backing indices",
        ):
            for b in wrong:
                O.put_settings(c, b, {"index.blocks.write": blocks.get(b)})
        ctx.state.setdefault(d, "untouched (write block lifted)")
    ctx.state.setdefault(d, "untouched")
    if snap and O.snapshot_state(c, ctx.repository, snap) is not None:
        c.delete_snapshot(ctx.repository, snap, missing_ok=True)


def _template(ctx: Ctx, t: dict[str, Any]) -> None:
    if not ctx.started("put_template", name=t["name"], kind=t["kind"]):
        return
    have = get_template(ctx.client, t["kind"], t["name"])
    if have is None or L.canonical_json_any(have) != L.canonical_json_any(t["body"]):
        return  # not (or no longer) what this restore put there
    label = t["kind"][:-1].replace("_", " ")
    with ctx.step(
        "drop_template",
        {"kind": t["kind"], "name": t["name"]},
        {"body": t["body"]},
        f"{label} {t['name']}: "
        + ("deleting it again" if t["previous"] is None else "putting back the previous version"),
    ):
        if t["previous"] is None:
            delete_template(ctx.client, t["kind"], t["name"])
        else:
            put_template(ctx.client, t["kind"], t["name"], t["previous"])


# --------------------------------------------------------------------------- the replay


def recover(
    target: SearchTarget | SearchClient, entry: ComponentEntry, *, timeout: float = 3600.0, poll_interval: float = 0.5
) -> list[str]:
    """Finish (roll forward) or undo (roll back) an interrupted search restore from its journal entry.

    Rolls forward when the entry's phase is ``verified`` or later and no rollback had begun,
    otherwise back; see the module docstring. Idempotent. Returns what it did, one line per step.
    Raises :class:`CheckpointError` (with a HINT) only when it cannot put a target back: a replaced
    index or data stream whose rollback copy is gone.
    """
    lines: list[str] = []
    own = isinstance(target, SearchTarget)
    client = SearchClient(target) if isinstance(target, SearchTarget) else target
    try:
        record = entry.data.get("plan")
        if not record:  # killed before the plan was recorded: at most copies exist
            copies = [str(c) for c in (entry.copies.get("staging") or [])]
            kept = drop_copies(client, copies, lines.append)
            lines.append(
                f"nothing was cut over; side-by-side copies removed: {', '.join(sorted(set(copies) - set(kept)))}"
                if copies
                else "nothing was cut over and no copy was made"
            )
            return lines
        ctx = Ctx(
            client,
            record,
            EntryJournal(entry),
            say=lines.append,
            timeout=timeout,
            poll_interval=poll_interval,
            checkpoint_id=str(record.get("checkpoint_id") or ""),
        )
        forward_policy = entry.roll_forward and not entry.data.get("rolling_back")
        if forward_policy:
            lines.append(
                f"search restore of {record['repository']}:{record['snapshot']} had verified "
                f"(phase {entry.phase}): finishing the cut-over"
            )
            try:
                forward(ctx)
            except (ConnectionFailedError, AuthenticationError):
                raise  # the cluster is not reachable now: the replay is retried later, with the same policy
            except CheckpointError as exc:
                lines.append(f"finishing failed ({exc.message.splitlines()[0]}): rolling back instead")
                backward(ctx)
                lines.append("rolled back: " + "; ".join(f"{k}: {v}" for k, v in sorted(ctx.state.items())))
                return lines
            for it in ctx.items:
                if it["rollback"]:
                    lines.append(f"{it['target']}: rollback copy kept as {it['rollback']}")
            lines.append("cut-over finished: " + ", ".join(it["target"] for it in ctx.items))
        else:
            why = "a rollback had begun" if entry.data.get("rolling_back") else f"phase {entry.phase}"
            lines.append(
                f"search restore of {record['repository']}:{record['snapshot']} had not verified or was "
                f"being undone ({why}): rolling back"
            )
            backward(ctx)
            lines.append("rolled back: " + "; ".join(f"{k}: {v}" for k, v in sorted(ctx.state.items())))
        return lines
    finally:
        if own:
            client.close()  # ours: opened above
