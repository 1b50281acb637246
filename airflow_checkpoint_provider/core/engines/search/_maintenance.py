"""What restores and captures leave behind, and their lifecycle: leftovers, orphan snapshots, rollbacks.

Public API (``target`` is a :class:`~...targets.SearchTarget` or an open :class:`SearchClient`)::

    find_leftovers(target, *, protected=(), older_than=0.0) -> [copy]
    drop_leftovers(target, *, protected=(), older_than=0.0, dry_run=True) -> [copy]
    find_orphan_snapshots(target, repository, *, referenced, older_than) -> [snapshot]
    delete_orphan_snapshots(target, repository, *, referenced, older_than, dry_run=True) -> [snapshot]
    list_rollbacks(target, *, checkpoints=(), repository=None) -> [rollback]
    drop_rollback(target, name, *, repository=None) -> None
    prune_rollbacks(target, *, keep=1, max_age=None, protected=(), checkpoints=(), repository=None,
                    dry_run=True) -> [rollback]

**Leftovers** are ``<index>__restoring_<id>`` copies that no alias serves and that no live restore
claims: the caller passes the names the journals of live restores list (``protected``). **Orphan
snapshots** are snapshots the provider took (``metadata.taken_by``) that no sealed checkpoint
references (the caller passes the names its checkpoints reference) and that are older than
``older_than`` seconds (the longest capture: younger ones may belong to a capture still running);
rollback snapshots are not orphans, they are rollbacks. **Rollbacks** are the ``__rollback_``
indices a restore keeps of the indices it replaced, and the rollback snapshots of the data streams
it replaced. Every listing is a dry run; ``dry_run=False`` deletes, and each entry then says
``"dropped": true`` or why not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search import _names as N
from airflow_checkpoint_provider.core.engines.search import _ops as O
from airflow_checkpoint_provider.core.engines.search._client import SearchClient
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import EngineError, NotFoundError

_SUFFIX = re.compile(r"-\d+\Z")


@contextmanager
def _client(target: SearchTarget | SearchClient) -> Iterator[SearchClient]:
    if isinstance(target, SearchClient):
        yield target
        return
    with SearchClient(target) as client:
        yield client


def _int(value: Any) -> int | None:
    return int(value) if str(value or "").isdigit() else None


def _age(created_ms: int | None, now: float) -> float | None:
    return None if not created_ms else round(max(0.0, now - created_ms / 1000.0), 1)


def _checkpoint_of(short: str, checkpoints: Iterable[str]) -> str | None:
    base = _SUFFIX.sub("", short)
    return next((c for c in checkpoints if N.short_id(c) == base), None)


# --------------------------------------------------------------------------- leftovers


def find_leftovers(
    target: SearchTarget | SearchClient, *, protected: Iterable[str] = (), older_than: float = 0.0
) -> list[dict[str, Any]]:
    """``__restoring_`` copies of dead restores: not served by an alias, not in ``protected``, at least
    ``older_than`` seconds old. Each: ``index``, ``source``, ``short_id``, ``created_at``,
    ``age_seconds``, ``docs``, ``size_bytes``."""
    keep = set(protected)
    now = time.time()
    with _client(target) as client:
        view = O.cluster_view(client)
    out = []
    for name, row in sorted(view.indices.items()):
        m = N.STAGING_RE.match(name) or N.DRILL_RE.match(name)
        if not m or name in keep or view.serving(name):
            continue
        created = _int(row.get("creation.date"))
        age = _age(created, now)
        if age is not None and age < older_than:
            continue
        out.append(
            {
                "index": name,
                "source": m.group("source"),
                "short_id": m.group("short"),
                "created_at": L.ms_to_ts(created),
                "age_seconds": age,
                "docs": _int(row.get("docs.count")),
                "size_bytes": _int(row.get("store.size")),
            }
        )
    return out


def drop_leftovers(
    target: SearchTarget | SearchClient, *, protected: Iterable[str] = (), older_than: float = 0.0, dry_run: bool = True
) -> list[dict[str, Any]]:
    """:func:`find_leftovers`, and with ``dry_run=False`` delete them (``"dropped"`` says which went)."""
    with _client(target) as client:
        found = find_leftovers(client, protected=protected, older_than=older_than)
        for entry in found:
            entry["dropped"] = False
            if dry_run:
                continue
            try:
                O.delete_index(client, entry["index"])
                entry["dropped"] = True
            except EngineError as exc:
                entry["error"] = exc.message.splitlines()[0]
    return found


# --------------------------------------------------------------------------- orphan snapshots


def find_orphan_snapshots(
    target: SearchTarget | SearchClient, repository: str, *, referenced: Iterable[str], older_than: float
) -> list[dict[str, Any]]:
    """Snapshots the provider took that no sealed checkpoint references, older than ``older_than``
    seconds. Each: ``repository``, ``snapshot``, ``state``, ``started_at``, ``age_seconds``, ``indices``."""
    refs = set(referenced)
    now = time.time()
    with _client(target) as client:
        try:
            snaps = O.list_snapshots(client, repository)
        except NotFoundError:
            return []
    out = []
    for s in sorted(snaps, key=lambda x: x["start_time_in_millis"]):
        meta = s.get("metadata") or {}
        if meta.get("taken_by") != N.TAKEN_BY or meta.get("purpose") == "rollback" or s["snapshot"] in refs:
            continue
        age = _age(s["start_time_in_millis"], now)
        if age is None or age < older_than:
            continue
        out.append(
            {
                "repository": repository,
                "snapshot": s["snapshot"],
                "state": s["state"],
                "started_at": s["start_time"],
                "age_seconds": age,
                "indices": len(s["indices"]),
            }
        )
    return out


def delete_orphan_snapshots(
    target: SearchTarget | SearchClient,
    repository: str,
    *,
    referenced: Iterable[str],
    older_than: float,
    dry_run: bool = True,
) -> list[dict[str, Any]]:
    """:func:`find_orphan_snapshots`, and with ``dry_run=False`` delete them."""
    with _client(target) as client:
        found = find_orphan_snapshots(client, repository, referenced=referenced, older_than=older_than)
        for entry in found:
            entry["dropped"] = False
            if dry_run:
                continue
            try:
                client.delete_snapshot(repository, entry["snapshot"], missing_ok=True)
                entry["dropped"] = True
            except EngineError as exc:
                entry["error"] = exc.message.splitlines()[0]
    return found


# --------------------------------------------------------------------------- rollbacks


def list_rollbacks(
    target: SearchTarget | SearchClient, *, checkpoints: Iterable[str] = (), repository: str | None = None
) -> list[dict[str, Any]]:
    """The rollback copies restores kept, newest first.

    Each: ``kind`` (``index``, or ``snapshot`` for a data stream's rollback snapshot in
    ``repository``), ``index`` (its name), ``source`` (the index or data stream it is a copy of),
    ``short_id``, ``checkpoint`` (the restored checkpoint, found among ``checkpoints``, or None),
    ``created_at``, ``age_seconds``, ``docs``, ``size_bytes``, ``health``, ``status``, ``aliases``.
    """
    cids = list(checkpoints)
    now = time.time()
    out = []
    with _client(target) as client:
        view = O.cluster_view(client)
        for name, row in view.indices.items():
            m = N.ROLLBACK_RE.match(name)
            if not m:
                continue
            created = _int(row.get("creation.date"))
            out.append(
                {
                    "kind": "index",
                    "index": name,
                    "source": m.group("source"),
                    "short_id": m.group("short"),
                    "stamp": m.group("stamp"),
                    "checkpoint": _checkpoint_of(m.group("short"), cids),
                    "created_at": L.ms_to_ts(created),
                    "created": L.ms_to_ts(created),
                    "age_seconds": _age(created, now),
                    "docs": _int(row.get("docs.count")),
                    "size_bytes": _int(row.get("store.size")),
                    "health": row.get("health"),
                    "status": row.get("status"),
                    "aliases": sorted(view.aliases_of(name)),
                }
            )
        if repository:
            try:
                snaps = O.list_snapshots(client, repository)
            except NotFoundError:
                snaps = []
            for s in snaps:
                meta = s.get("metadata") or {}
                if meta.get("taken_by") != N.TAKEN_BY or meta.get("purpose") != "rollback":
                    continue
                short = str(meta.get("short_id") or "")
                out.append(
                    {
                        "kind": "snapshot",
                        "index": s["snapshot"],
                        "source": str(meta.get("source") or ""),
                        "short_id": short,
                        "stamp": "",
                        "repository": repository,
                        "checkpoint": meta.get("checkpoint") or _checkpoint_of(short, cids),
                        "created_at": s["start_time"],
                        "created": s["start_time"],
                        "age_seconds": _age(s["start_time_in_millis"], now),
                        "docs": meta.get("docs"),
                        "size_bytes": O.snapshot_size(client, repository, s["snapshot"]),
                        "health": None,
                        "status": s["state"],
                        "aliases": [],
                    }
                )
    return sorted(out, key=lambda x: (x["created_at"], x["index"]), reverse=True)


def drop_rollback(target: SearchTarget | SearchClient, name: str, *, repository: str | None = None) -> None:
    """Delete one rollback copy (an index, or with ``repository`` a rollback snapshot). Refuses anything
    not named like one, and a copy an alias points at."""
    with _client(target) as client:
        if repository and isinstance(name, str) and name.startswith(N.ROLLBACK_SNAPSHOT_PREFIX):
            state = next((s for s in O.list_snapshots(client, repository) if s["snapshot"] == name), None)
            if state is None or (state.get("metadata") or {}).get("purpose") != "rollback":
                raise NotFoundError(
                    f"search cluster {client.where}: no rollback snapshot {repository}:{name}",
                    hint="list the rollback copies with list_rollbacks(target, repository=...)",
                )
            client.delete_snapshot(repository, name)
            return
        if not isinstance(name, str) or not N.ROLLBACK_RE.match(name) or any(ch in name for ch in "*?,"):
            raise EngineError(
                f"refusing to drop {name!r}: it is not a rollback copy (<index>__rollback_<id>_<yyyymmddhhmmss>)",
                hint="list the rollback copies with list_rollbacks (airflow-checkpoint rollbacks list)",
            )
        if O.index_status(client, name) == "missing":
            raise NotFoundError(
                f"search cluster {client.where}: no rollback copy {name!r}",
                hint="list the rollback copies with list_rollbacks",
            )
        aliases = sorted(O.cluster_view(client).aliases_of(name))
        if aliases:
            raise EngineError(
                f"search cluster {client.where}: refusing to drop {name}: the aliases {', '.join(aliases)} point at "
                "it, so it is serving",
                hint=f"remove the aliases first (POST /_aliases) if {name} really is no longer needed",
            )
        O.delete_index(client, name, missing_ok=False)


def prune_rollbacks(
    target: SearchTarget | SearchClient,
    *,
    keep: int = 1,
    max_age: float | None = None,
    protected: Iterable[str] = (),
    checkpoints: Iterable[str] = (),
    repository: str | None = None,
    dry_run: bool = True,
) -> list[dict[str, Any]]:
    """Retention: per source, keep the ``keep`` newest rollback copies and none older than ``max_age``
    seconds. Returns the copies to drop (each with a ``reason``); with ``dry_run=False`` drops them,
    except those in ``protected`` (a running restore's) and those an alias serves."""
    if keep < 0:
        raise EngineError(f"keep must be 0 or more, got {keep}", hint="keep=1 keeps the newest copy per index")
    keep_names = set(protected)
    with _client(target) as client:
        rows = list_rollbacks(client, checkpoints=checkpoints, repository=repository)
        by_source: dict[str, list[dict[str, Any]]] = {}
        for r in rows:  # newest first
            by_source.setdefault(r["source"], []).append(r)
        out = []
        for source, copies in sorted(by_source.items()):
            for rank, r in enumerate(copies):
                if rank >= keep:
                    r["reason"] = f"more than the {keep} newest of {source}"
                elif max_age is not None and r["age_seconds"] is not None and r["age_seconds"] > max_age:
                    r["reason"] = f"older than {max_age:g}s"
                else:
                    continue
                r["dropped"] = False
                if r["index"] in keep_names or r["aliases"]:
                    r["reason"] += (
                        " (kept: a running restore uses it)"
                        if r["index"] in keep_names
                        else " (kept: an alias serves it)"
                    )
                elif not dry_run:
                    try:
                        drop_rollback(client, r["index"], repository=r.get("repository"))
                        r["dropped"] = True
                    except EngineError as exc:
                        r["error"] = exc.message.splitlines()[0]
                out.append(r)
    return out
