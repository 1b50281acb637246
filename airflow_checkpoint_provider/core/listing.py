"""A listing cache: the parsed manifests of a local store, so that listing 2,000 checkpoints is fast.

Parsing and checking a manifest (its self-checksum, every field, the derived sections) is what
a listing spends its time on. :class:`ListingCache` keeps, per checkpoint, the manifest object
as it was read and checked, keyed by the ``stat`` of its store copy (file name, size,
``mtime_ns``, inode) and of the archive (name, size, ``mtime_ns``, inode): any change to either
file, however made, misses the cache and the files are read again.

What the cache is and is not trusted with:

- the derived lifecycle state (core/states.py) is kept too, keyed by the ``stat`` of the
  checkpoint's records folder (which changes whenever a record is added or removed) and by the
  manifest's checksum;
- it only speeds up *listings* (``Store.scan(cached=True)``, the default, used by ``list``,
  ``status`` and the Checkpoints page). Verification, restores, retention, the LKG fallback and
  ``Store.get`` always read the real files (they call ``scan(cached=False)`` or ``get``);
- which checkpoints exist always comes from the directory itself: an entry of the cache for
  a file that is not there is never shown, and one that does not match the file's stat is ignored;
- the file (``listing-cache.json`` at the store root) is written atomically (temporary name,
  then rename), owner-only (0600); it is read only if it is a regular file owned by this user
  and not writable by others, within a size cap, whose first line names a known format and
  version and the sha256 of the rest (the entries). Anything else (damaged, hostile, from another version) is ignored and rebuilt;
- entries whose files changed less than :data:`RACY_S` seconds before the cache was written
  are not kept (a file rewritten within the same timestamp tick could not be told apart);
- it is an optimisation only: a store without it (or on a filesystem where it cannot be
  written) lists the same checkpoints, more slowly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from typing import Any

from airflow_checkpoint_provider.core.fs import TMP_MARK
from airflow_checkpoint_provider.core.manifest import Artifact, Manifest

log = logging.getLogger(__name__)

CACHE_FILE = "listing-cache.json"
FORMAT = "airflow-checkpoint-listing-cache"
VERSION = 1
#: a cache file larger than this is not read (about 50 KiB per checkpoint for 2,000 is plenty)
MAX_CACHE_BYTES = 256 * 1024 * 1024
#: files changed this recently when the cache is written are not cached (see the module docstring)
RACY_S = 2.0


def stat_key(name: str, st: os.stat_result) -> list[Any]:
    return [name, st.st_size, st.st_mtime_ns, st.st_ino]


def dir_key(path: str) -> list[Any] | None:
    """The stat key of a checkpoint's records folder (it changes when a record is added or removed);
    ``["absent"]`` when there is none; None when it changed too recently to be told apart."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ["absent"]
    except OSError:
        return None
    if time.time_ns() - st.st_mtime_ns < RACY_S * 1e9:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink]


def trusted_manifest(obj: dict[str, Any]) -> Manifest:
    """A manifest rebuilt from a cache entry of one that was read and fully checked before.

    No check runs again here (that is the point); the self-checksum recorded when it was checked
    is kept, so that its state records can be matched without recomputing it."""
    artifacts = [
        Artifact(**{k: v for k, v in a.items() if k != "extra"}, extra=dict(a.get("extra") or {}))
        for a in obj["artifacts"]
    ]
    man = Manifest(
        checkpoint_id=obj["checkpoint_id"],
        created_at=obj["created_at"],
        artifacts=artifacts,
        tags=list(obj["tags"]),
        pinned=bool(obj["pinned"]),
        config_hash=obj["config_hash"],
        config_keys=dict(obj.get("config_keys") or {}),
        provenance=dict(obj["provenance"]),
        format_version=obj["format_version"],
        extra=dict(obj["extra"]),
    )
    man.__dict__["_checked_sha256"] = obj["manifest_sha256"]
    return man


def entry_of(man: Manifest) -> dict[str, Any]:
    """What the cache keeps of a checked manifest (its fields, and its self-checksum)."""
    return {
        "checkpoint_id": man.checkpoint_id,
        "created_at": man.created_at,
        "artifacts": [
            {**{k: getattr(a, k) for k in Artifact.__dataclass_fields__ if k != "extra"}, "extra": a.extra}
            for a in man.artifacts
        ],
        "tags": list(man.tags),
        "pinned": man.pinned,
        "config_hash": man.config_hash,
        "config_keys": man.config_keys,
        "provenance": man.provenance,
        "format_version": man.format_version,
        "extra": man.extra,
        "manifest_sha256": man.manifest_sha256,
    }


#: the last cache file read per path in this process, with its stat: a long-lived process (the
#: Checkpoints page in the api-server) re-reads the file only when it changed
_READ: dict[str, tuple[list[Any], dict[str, Any]]] = {}
_READ_MAX = 8


class ListingCache:
    """The cache of one local store root (see the module docstring). Not thread-safe; one per scan."""

    def __init__(self, root: str) -> None:
        self.path = os.path.join(root, CACHE_FILE)
        self.root = root
        self._old: dict[str, Any] = self._load()
        self._new: dict[str, Any] = {}
        self._changed = False

    def _load(self) -> dict[str, Any]:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return {}
        try:
            st = os.fstat(fd)
            if (
                not stat.S_ISREG(st.st_mode)
                or st.st_uid != os.geteuid()
                or st.st_mode & 0o022
                or st.st_size > MAX_CACHE_BYTES
            ):
                log.warning("Ignoring the listing cache %s: not a private regular file of this user", self.path)
                return {}
            seen = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns]
            memo = _READ.get(self.path)
            if memo is not None and memo[0] == seen:
                return memo[1]  # the same file, checked when it was read
            with os.fdopen(fd, "rb", closefd=False) as f:
                header, _, body_bytes = f.read(MAX_CACHE_BYTES + 1).partition(b"\n")
        except OSError:
            return {}
        finally:
            os.close(fd)
        try:  # the first line says what the rest is and its sha256; the rest is the entries
            doc = json.loads(header)
            ok = (
                isinstance(doc, dict)
                and doc.get("format") == FORMAT
                and doc.get("version") == VERSION
                and doc.get("sha256") == hashlib.sha256(body_bytes).hexdigest()
            )
            body = json.loads(body_bytes) if ok else None
        except ValueError:
            ok, body = False, None
        if not ok or not isinstance(body, dict):
            log.warning("Ignoring the listing cache %s: damaged or of another version; it is rebuilt", self.path)
            return {}
        if len(_READ) >= _READ_MAX:
            _READ.pop(next(iter(_READ)))
        _READ[self.path] = (seen, body)
        return body

    def get(self, cid: str, keys: list[Any]) -> Manifest | None:
        """The cached manifest of ``cid`` if its files' stats are still ``keys``; else None."""
        entry = self._old.get(cid)
        if not isinstance(entry, dict) or entry.get("stat") != keys:
            return None
        try:
            man = trusted_manifest(entry["manifest"])
            if man.checkpoint_id != cid:
                return None
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        self._new[cid] = dict(entry)  # a copy: the read file's entries stay as read (see _READ)
        return man

    def put(self, cid: str, keys: list[Any], man: Manifest, mtimes_ns: list[int]) -> None:
        """Remember a manifest that was just read and checked (unless its files changed just now)."""
        self._changed = True
        if time.time_ns() - max(mtimes_ns) < RACY_S * 1e9:
            return
        self._new[cid] = {"stat": keys, "manifest": entry_of(man)}

    def state(self, cid: str, manifest_sha256: str, key: list[Any] | None, compute: Callable[[], Any]) -> Any:
        """The derived state of ``cid``'s records (a :class:`~.states.CheckpointState`), from the cache
        when its records folder is unchanged (``key``, see :func:`dir_key`) and it is of this manifest."""
        from airflow_checkpoint_provider.core.states import CheckpointState

        cached = (self._old.get(cid) or {}).get("state") if isinstance(self._old.get(cid), dict) else None
        if key is not None and isinstance(cached, dict) and cached.get("key") == key:
            if cached.get("manifest_sha256") == manifest_sha256:
                try:
                    state = CheckpointState(**cached["state"])
                except (TypeError, KeyError):
                    state = None
                if state is not None and isinstance(state.state, str):
                    if cid in self._new:
                        self._new[cid]["state"] = cached
                    return state
        state = compute()
        if key is not None and cid in self._new:
            self._changed = True
            fields = ("state", "level", "last_verified_at", "drilled_at", "reason", "snapshot_bytes")
            self._new[cid] = {
                **self._new[cid],
                "state": {
                    "key": key,
                    "manifest_sha256": manifest_sha256,
                    "state": {f: getattr(state, f) for f in fields},
                },
            }
        return state

    def save(self) -> None:
        """Write the entries seen by this scan (atomically, owner-only); failures are only logged."""
        if not self._changed and set(self._new) == set(self._old):
            return
        body = json.dumps(self._new, separators=(",", ":")).encode()
        header = json.dumps({"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(body).hexdigest()})
        tmp = os.path.join(self.root, f"{TMP_MARK}{CACHE_FILE}.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(header.encode() + b"\n" + body)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.info("Could not write the listing cache %s: %s", self.path, exc)
            try:
                os.unlink(tmp)
            except OSError:
                pass
