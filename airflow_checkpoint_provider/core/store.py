"""The checkpoint store: staging, sealing, listing, the LKG pointer, deletion.

Layout below the store root (docs/FORMAT.md has the full specification)::

    store.json                          marks the directory as a store (format, version)
    checkpoints/<id>.tar                sealed archive: manifest.json + artifacts/...
    checkpoints/<id>.manifest.json      copy of the manifest: the commit marker, written last
    checkpoints/<id>.keys.json          the wrapped data key of an encrypted checkpoint (core/envelope.py)
    staging/<run-key>/data/...          artifacts being captured for a run
    staging/<run-key>/desc/...          their descriptors (an artifact's commit marker)
    refs/lkg.json                       the last-known-good pointer, replaced atomically
    refs/lkg-history/<ts>-<id>.json     one record per LKG move (written after the move), never rewritten
    audit/<ts>-<random>.json            one record per restore (and dry run), never rewritten
    locks/store.lock                    writers' lock

Sealing (``seal``) in order:
  1. collect the staged artifacts (only those with a descriptor);
  2. build and validate the manifest;
  3. stream manifest + artifacts into ``checkpoints/.tmp-<id>.tar-<rand>``, re-hashing every
     artifact as it is copied; fsync;
  4. under the store lock: refuse an existing id, rename the archive into place;
  5. write ``<id>.manifest.json`` atomically: from this moment the checkpoint exists;
  6. discard the staging area.
A crash before step 5 leaves at most a temporary file or an archive without a
manifest: neither is ever listed, and :meth:`Store.cleanup` removes them.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from airflow_checkpoint_provider.core.archive import ArchiveWriter
from airflow_checkpoint_provider.core.envelope import checkpoint_keys_rel
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConcurrentUpdateError,
    FormatError,
    LkgBindingError,
    StoreError,
    StoreNotFoundError,
)
from airflow_checkpoint_provider.core.fs import TMP_MARK, LocalFS, StoreFS
from airflow_checkpoint_provider.core.listing import ListingCache, stat_key
from airflow_checkpoint_provider.core.lkg import LKG_ALIASES as LKG_ALIASES
from airflow_checkpoint_provider.core.lkg import LKG_FORMAT as LKG_FORMAT
from airflow_checkpoint_provider.core.lkg import LkgPointer as LkgPointer
from airflow_checkpoint_provider.core.manifest import (
    MANIFEST_MEMBER,
    MAX_MANIFEST_BYTES,
    Artifact,
    Manifest,
    format_ts,
    new_checkpoint_id,
    utcnow,
    validate_checkpoint_id,
)
from airflow_checkpoint_provider.core.safejson import load_json
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.core.states import STATE_DIR
from airflow_checkpoint_provider.core.store_keys import _KeysMixin
from airflow_checkpoint_provider.core.store_lkg import _LkgMixin
from airflow_checkpoint_provider.core.store_reading import _ReadingMixin
from airflow_checkpoint_provider.core.store_states import _StatesMixin
from airflow_checkpoint_provider.core.store_upkeep import _UpkeepMixin

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.crypt import Cipher, DataKey
    from airflow_checkpoint_provider.core.fs_s3 import S3Options

log = logging.getLogger(__name__)

STORE_MARKER = "store.json"
STORE_FORMAT = "airflow-checkpoint-store"
STORE_VERSION = 1
DEFAULT_LOCK_TIMEOUT = 300.0


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete (sealed) checkpoint as the store lists it."""

    checkpoint_id: str
    created_at: str
    tags: tuple[str, ...]
    pinned: bool
    size: int  #: archive size in bytes
    manifest: Manifest
    archive: str  #: archive path relative to the store root

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "created_at": self.created_at,
            "tags": list(self.tags),
            "pinned": self.pinned,
            "size": self.size,
            "artifacts": [a.name for a in self.manifest.artifacts],
            "stores": sorted(self.manifest.stores()),
        }


@dataclass(frozen=True)
class DamagedCheckpoint:
    """A listed entry that cannot be read: reported by name, never allowed to hide the others."""

    checkpoint_id: str  #: as the file name says (may itself be the problem; escape it before printing)
    path: str  #: the store copy of the manifest, relative to the store root
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint_id": self.checkpoint_id, "path": self.path, "problem": self.problem}


def parse_root(root: str | os.PathLike[str], *, s3: S3Options | None = None) -> StoreFS:
    """Pick the filesystem for a store root URI: a path or ``file://`` URI (local), or ``s3://bucket/prefix``."""
    text = os.fspath(root)
    if not text:
        raise StoreNotFoundError("the store root is empty", hint="set [checkpoint] storage_root")
    parsed = urlparse(text)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else text
        return LocalFS(path)
    if parsed.scheme == "s3":
        from airflow_checkpoint_provider.core.fs_s3 import S3FS

        return S3FS(text, s3)
    raise StoreError(
        f"store root {text!r} uses scheme {parsed.scheme!r}, which this version cannot write to",
        hint="use a local or mounted directory (a path or file:// URI) or s3://<bucket>/<prefix> for "
        "[checkpoint] storage_root",
    )


#: the entries of a store's root that :meth:`Store.open` creates
_INIT_ENTRIES = frozenset({"checkpoints", "staging", "refs", "audit", "locks"})


class Store(_UpkeepMixin, _LkgMixin, _StatesMixin, _KeysMixin, _ReadingMixin):
    """A checkpoint store over a :class:`StoreFS`. Create one with :meth:`Store.open`."""

    def __init__(
        self, fs: StoreFS, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT, cipher: Cipher | None = None
    ) -> None:
        self.fs = fs
        self.lock_timeout = lock_timeout
        self.cipher = cipher  #: the master key: encryption at rest (core/crypt.py, core/envelope.py); None: off
        self._data_keys: dict[str, DataKey] = {}

    # ---- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        *,
        create: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        s3: S3Options | None = None,
        cipher: Cipher | None = None,
    ) -> Store:
        """Open the store at ``root``. With ``create=True`` a missing root is initialised.

        ``s3``: endpoint and credentials for an ``s3://`` root (boto3's own defaults without it).
        ``cipher``: the master key: encrypt new artifacts at rest (a data key per checkpoint, wrapped
        by it), and decrypt encrypted ones."""
        fs = parse_root(root, s3=s3)
        store = cls(fs, lock_timeout=lock_timeout, cipher=cipher)
        if fs.exists(STORE_MARKER):
            store._check_marker()
            return store
        if not create:
            raise StoreNotFoundError(
                f"no checkpoint store at {fs.root}",
                hint="check [checkpoint] storage_root, or take a checkpoint first (that creates the store)",
            )
        local = fs.local_path("")
        if local is not None and local.exists() and not local.is_dir():
            raise StoreNotFoundError(
                f"store root {fs.root} exists and is not a directory",
                hint="point [checkpoint] storage_root at a directory",
            )
        # what another process creating the store at the same moment may have made already
        if (
            local is not None
            and local.is_dir()
            and any(p.name not in _INIT_ENTRIES and not p.name.startswith(TMP_MARK) for p in local.iterdir())
        ):
            raise StoreNotFoundError(
                f"{fs.root} is not empty and is not a checkpoint store (it has no {STORE_MARKER})",
                hint="point [checkpoint] storage_root at an empty or new directory",
            )
        fs.makedirs("")
        for d in ("checkpoints", "staging", "refs/lkg-history", "audit", "locks"):
            fs.makedirs(d)
        if fs.exists(STORE_MARKER):  # the other creator finished first
            store._check_marker()
            return store
        marker = {"format": STORE_FORMAT, "format_version": STORE_VERSION, "created_at": format_ts(utcnow())}
        try:
            fs.create_bytes(STORE_MARKER, (json.dumps(marker, indent=2) + "\n").encode())
        except ConcurrentUpdateError:  # the other creator finished first
            store._check_marker()
            return store
        log.info("Initialised checkpoint store at %s", fs.root)
        return store

    def _check_marker(self) -> None:
        try:
            obj = load_json(self.fs.read_bytes(STORE_MARKER), source=f"{self.fs.root}/{STORE_MARKER}")
            if not isinstance(obj, dict):
                raise FormatError(f"{self.fs.root}/{STORE_MARKER} is not a JSON object")
        except FormatError as exc:
            raise StoreError(
                f"{self.fs.root}/{STORE_MARKER} is damaged: {exc.message}",
                hint="restore it from a copy; it only holds the format version",
            ) from None
        if obj.get("format") != STORE_FORMAT or obj.get("format_version") != STORE_VERSION:
            raise FormatError(
                f"store at {self.fs.root} has format {obj.get('format')!r} version {obj.get('format_version')!r}; "
                f"this reader understands {STORE_FORMAT!r} version {STORE_VERSION}",
                hint="upgrade airflow-checkpoint-provider",
            )

    @property
    def root(self) -> str:
        return self.fs.root

    def lock(self) -> AbstractContextManager[None]:
        """Exclusive writer lock for publishing, deleting and moving the LKG."""
        return self.fs.lock("locks/store.lock", self.lock_timeout)

    # ---- staging and sealing -----------------------------------------------------------------------

    def staging(self, key: str) -> Staging:
        return Staging(self.fs, key, cipher=self.cipher)

    def seal(
        self,
        staging: Staging,
        *,
        checkpoint_id: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        pinned: bool = False,
        config_hash: str = "",
        config_keys: dict[str, str] | None = None,
        provenance: dict[str, Any] | None = None,
        keep_staging: bool = False,
        expected: list[Artifact] | None = None,
    ) -> Manifest:
        """Publish the staged artifacts as one sealed checkpoint (see the module docstring).

        ``expected``: the artifacts the capture tasks reported. Then exactly those are sealed,
        and each must be staged with the same size and sha256 (a stale or replaced staged
        file is refused).
        """
        # 1. collect what the captures committed
        artifacts = staging.artifacts()
        if expected is not None:
            artifacts = _match_expected(staging, artifacts, expected)
        if not artifacts:
            raise CheckpointError(
                f"staging area {staging.rel} holds no captured artifact",
                hint="run at least one capture task before sealing",
            )
        # 2. the manifest
        created = utcnow()
        manifest = Manifest(
            checkpoint_id=validate_checkpoint_id(checkpoint_id or new_checkpoint_id(created)),
            created_at=format_ts(created),
            artifacts=artifacts,
            tags=sorted(set(tags)),
            pinned=pinned,
            config_hash=config_hash,
            config_keys=dict(config_keys or {}),
            provenance=dict(provenance or {}),
        )
        manifest.validate()
        manifest_bytes = manifest.to_bytes()
        cid = manifest.checkpoint_id
        if self.exists(cid):
            raise StoreError(f"checkpoint {cid} already exists", hint="choose another checkpoint id")
        keys = self._seal_keys(staging, manifest)
        # 3. the archive, under a temporary name
        with self.fs.atomic_writer(self._archive_rel(cid)) as out:
            writer = ArchiveWriter(out, mtime=int(created.timestamp()))
            writer.add_bytes(MANIFEST_MEMBER, manifest_bytes)
            for art in artifacts:
                with staging.open_data(art.name) as src:
                    writer.add_stream(art.member, src, art.size, expect_sha256=art.sha256)
            writer.close()
            # 4. + 5. publish: archive into place, then the manifest copy as the commit marker
            with self.lock():
                if self.exists(cid):
                    raise StoreError(f"checkpoint {cid} already exists", hint="choose another checkpoint id")
                out.commit(create_only=True)
                try:
                    if keys is not None:  # the data key, re-wrapped for the checkpoint: before its commit marker
                        self.fs.write_bytes(checkpoint_keys_rel(cid), keys)
                    self.fs.create_bytes(self._manifest_rel(cid), manifest_bytes)
                except BaseException:
                    self.fs.remove(self._archive_rel(cid))  # never leave an archive without its marker
                    if keys is not None:
                        self.fs.remove(checkpoint_keys_rel(cid))
                    raise
        log.info(
            "Sealed checkpoint %s: %d artifacts, archive of %d bytes (artifacts plus manifest and tar headers)",
            cid,
            len(artifacts),
            writer.bytes_written,
        )
        # 6. staging is no longer needed
        if not keep_staging:
            staging.discard()
        return manifest

    # ---- reading ---------------------------------------------------------------------------------

    @staticmethod
    def _archive_rel(cid: str) -> str:
        return f"checkpoints/{cid}.tar"

    @staticmethod
    def _manifest_rel(cid: str) -> str:
        return f"checkpoints/{cid}.manifest.json"

    def exists(self, checkpoint_id: str) -> bool:
        return self.fs.exists(self._manifest_rel(checkpoint_id)) and self.fs.exists(self._archive_rel(checkpoint_id))

    def _read_manifest(self, cid: str) -> Manifest:
        """Parse the store copy of a checkpoint's manifest (size-capped before it is read)."""
        rel = self._manifest_rel(cid)
        size = self.fs.size(rel)
        if size > MAX_MANIFEST_BYTES:
            raise FormatError(
                f"{rel} is {size} bytes, larger than the {MAX_MANIFEST_BYTES} a manifest may have",
                hint="the store copy of the manifest is damaged; verify the checkpoint",
            )
        return Manifest.from_bytes(self.fs.read_bytes(rel), source=rel)

    def _info(self, cid: str) -> CheckpointInfo:
        manifest = self._read_manifest(cid)
        if manifest.checkpoint_id != cid:
            raise FormatError(
                f"{self._manifest_rel(cid)} describes checkpoint {manifest.checkpoint_id!r}",
                hint="the file was renamed or copied from another checkpoint; do not trust it",
            )
        return CheckpointInfo(
            checkpoint_id=cid,
            created_at=manifest.created_at,
            tags=tuple(manifest.tags),
            pinned=manifest.pinned,
            size=self.fs.size(self._archive_rel(cid)),
            manifest=manifest,
            archive=self._archive_rel(cid),
        )

    def scan(
        self, *, tag: str | None = None, cached: bool = True
    ) -> tuple[list[CheckpointInfo], list[DamagedCheckpoint]]:
        """Complete checkpoints (newest first, only those tagged ``tag`` if given) and the damaged ones.

        A damaged entry (unreadable or invalid manifest, a file name that is not an id) is
        returned with its problem; it never stops the others from being listed. ``cached``: take
        the manifests of unchanged files from the listing cache of a local store (core/listing.py);
        whatever decides something (retention, the LKG fallback, verification) passes False.
        """
        out, damaged = [], []
        suffix = ".manifest.json"
        local = str(self.fs.local_path("")) if cached and isinstance(self.fs, LocalFS) else None
        cache = ListingCache(local) if local is not None else None
        folder = os.path.join(local, "checkpoints") if local is not None else ""
        for entry in self.fs.listdir("checkpoints"):
            if not entry.endswith(suffix) or entry.startswith(TMP_MARK):
                continue
            cid = entry[: -len(suffix)]
            info, keys = None, None
            if cache is not None and local is not None:
                try:  # stat first: a file changed after this point misses the cache next time
                    st_m, st_a = os.stat(os.path.join(folder, entry)), os.stat(os.path.join(folder, f"{cid}.tar"))
                except OSError:
                    continue  # no archive (yet): not complete
                keys = [stat_key(entry, st_m), stat_key(f"{cid}.tar", st_a)]
                man = cache.get(cid, keys)
                if man is not None:
                    info = CheckpointInfo(
                        cid, man.created_at, tuple(man.tags), man.pinned, st_a.st_size, man, self._archive_rel(cid)
                    )
            elif not self.fs.exists(self._archive_rel(cid)):
                continue
            if info is None:
                try:
                    validate_checkpoint_id(cid)
                    info = self._info(cid)
                except CheckpointError as exc:
                    log.warning("Checkpoint %r is damaged: %s", cid, exc.message)
                    damaged.append(DamagedCheckpoint(cid, f"checkpoints/{entry}", exc.message))
                    continue
                if cache is not None and keys is not None:
                    cache.put(cid, keys, info.manifest, [keys[0][2], keys[1][2]])
            if cache is not None and local is not None:
                self.remember_state(info, cache, os.path.join(local, STATE_DIR, cid))
            if tag is None or tag in info.tags:
                out.append(info)
        if cache is not None:
            cache.save()
        out.sort(key=lambda i: (i.created_at, i.checkpoint_id), reverse=True)
        damaged.sort(key=lambda d: d.checkpoint_id, reverse=True)
        return out, damaged

    def list(self, *, tag: str | None = None, cached: bool = True) -> builtins.list[CheckpointInfo]:
        """Complete checkpoints, newest first; only those carrying ``tag`` if given (see :meth:`scan`)."""
        return self.scan(tag=tag, cached=cached)[0]

    def resolve(self, checkpoint_id: str) -> str:
        """Map ``last-known-good`` to the LKG's id, checking its binding; check that other ids are well-formed."""
        if checkpoint_id in LKG_ALIASES:
            pointer = self._current_lkg()
            problem = self._binding_problem(pointer)
            if problem:
                missing = not self.exists(pointer.checkpoint_id)
                raise (CheckpointNotFoundError if missing else LkgBindingError)(
                    problem, hint=self._lkg_fallback_hint(pointer)
                )
            problem = self.lkg_problem(pointer)
            if problem:
                raise LkgBindingError(
                    problem,
                    hint="the checkpoint_verify DAG (or `airflow-checkpoint verify "
                    "--level standard --all`) moves the LKG to a good checkpoint; " + self._lkg_fallback_hint(pointer),
                )
            return pointer.checkpoint_id
        try:
            return validate_checkpoint_id(checkpoint_id)
        except FormatError:
            raise CheckpointNotFoundError(
                f"{checkpoint_id!r} is not a valid checkpoint id", hint="copy an id from `airflow-checkpoint list`"
            ) from None

    def get(self, checkpoint_id: str) -> CheckpointInfo:
        """The complete checkpoint with this id (or ``last-known-good``)."""
        cid = self.resolve(checkpoint_id)
        if not self.exists(cid):
            recent = [i.checkpoint_id for i in self.list()[:3]]
            raise CheckpointNotFoundError(
                f"no checkpoint {cid!r} in {self.root}",
                hint=("recent checkpoints: " + ", ".join(recent)) if recent else "the store holds no checkpoint yet",
            )
        info = self._info(cid)
        manifest = self.opened(info.manifest)
        return info if manifest is info.manifest else replace(info, manifest=manifest)

    # ---- deleting --------------------------------------------------------------------------------

    def delete(
        self, checkpoint_id: str, *, force: bool = False, targets: dict[str, Any] | None = None
    ) -> builtins.list[str]:
        """Delete a checkpoint as one unit (core/expire.py). The LKG and pinned checkpoints need ``force=True``.

        Returns what is left for a later run (the search snapshot without a ``targets`` entry or with
        a cluster that does not answer): its tombstone stays until a run finishes it."""
        from airflow_checkpoint_provider.core import expire

        outcome = expire.delete(self, checkpoint_id, targets=targets, force=force, reason="deleted by request")
        log.info(
            "Deleted checkpoint %s%s",
            outcome.checkpoint_id,
            f"; left for a later run: {'; '.join(outcome.pending)}" if outcome.pending else "",
        )
        return outcome.pending


def _match_expected(
    staging: Staging, staged: builtins.list[Artifact], expected: builtins.list[Artifact]
) -> builtins.list[Artifact]:
    by_name = {a.name: a for a in staged}
    out = []
    for art in expected:
        have = by_name.get(art.name)
        if have is None:
            raise CheckpointError(
                f"artifact {art.name!r} was reported by its capture task but is not in {staging.rel}",
                hint="the staging area was cleaned or the capture ran against another store; re-run the captures",
            )
        if (have.size, have.sha256) != (art.size, art.sha256):
            raise CheckpointError(
                f"staged artifact {art.name!r} differs from what its capture task reported "
                f"(size {have.size} vs {art.size}, sha256 {have.sha256[:12]} vs {art.sha256[:12]})",
                hint="two runs wrote the same staging area; re-run the captures",
            )
        out.append(have)
    return sorted(out, key=lambda a: a.name)


def default_root(airflow_home: str | None = None) -> str:
    """``$AIRFLOW_HOME/checkpoints_data`` (``~/airflow`` when AIRFLOW_HOME is unset)."""
    home = airflow_home or os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
    return str(Path(home) / "checkpoints_data")
