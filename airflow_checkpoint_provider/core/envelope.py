"""Envelope keys: each checkpoint's random data key, wrapped by the master key, kept beside its archive.

A key record is a small JSON file (docs/FORMAT.md, "Encryption at rest")::

    {"format": "airflow-checkpoint-keys", "format_version": 1, "scope": "checkpoint:<id>",
     "master_key_id": "...", "data_key_id": "...", "nonce": "<base64>", "wrapped_key": "<base64>"}

* ``staging/<run-key>/keys.json`` (scope ``staging:<run-key>``): made by the first artifact
  writer of a run with a create-only write (a hard link locally, ``If-None-Match: *`` on S3);
  every other writer, on any machine, reads the winner's.
* ``checkpoints/<id>.keys.json`` (scope ``checkpoint:<id>``): written by the seal, after the
  archive and before the manifest, re-wrapped for the checkpoint's id. It is not in the
  archive, so :func:`rekey` changes only these small files and never an archive.

The scope and the data key's id are the associated data of the wrapping: a record copied to
another checkpoint does not unwrap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.crypt import Cipher, DataKey
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    ConcurrentUpdateError,
    FormatError,
    IntegrityError,
)
from airflow_checkpoint_provider.core.fs import StoreFS
from airflow_checkpoint_provider.core.manifest import CHECKPOINT_ID_RE, Artifact, Manifest
from airflow_checkpoint_provider.core.safejson import load_json

log = logging.getLogger(__name__)

KEYS_FORMAT = "airflow-checkpoint-keys"
KEYS_VERSION = 1
KEYS_SUFFIX = ".keys.json"


def checkpoint_keys_rel(cid: str) -> str:
    return f"checkpoints/{cid}{KEYS_SUFFIX}"


def staging_keys_rel(staging_rel: str) -> str:
    return f"{staging_rel}/keys.json"


def record_bytes(cipher: Cipher, data_key: DataKey, scope: str) -> bytes:
    body = {"format": KEYS_FORMAT, "format_version": KEYS_VERSION, "scope": scope, **cipher.wrap(data_key, scope)}
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


def parse_record(data: bytes, rel: str, scope: str) -> dict[str, Any]:
    """A key record's fields, checked for format, version and scope."""
    obj = load_json(data, source=rel, hint="the key record is damaged; restore it from a copy")
    if not isinstance(obj, dict) or obj.get("format") != KEYS_FORMAT or obj.get("format_version") != KEYS_VERSION:
        raise FormatError(
            f"{rel} is not a key record of version {KEYS_VERSION}",
            hint="upgrade airflow-checkpoint-provider, or restore the key record from a copy",
        )
    if obj.get("scope") != scope:
        raise IntegrityError(
            f"{rel} is the key record of {obj.get('scope')!r}, not of {scope!r}",
            hint="the key record was copied from elsewhere; restore the right one from a copy",
        )
    return obj


def read_data_key(fs: StoreFS, rel: str, scope: str, cipher: Cipher) -> DataKey:
    """Unwrap the data key of the record at ``rel``."""
    got = fs.read_tagged(rel)
    if got is None:
        raise IntegrityError(
            f"{fs.root}/{rel} is missing: the data key of {scope} is gone",
            hint="restore the key record from a copy; without it the encrypted artifacts cannot be read",
        )
    return cipher.unwrap(parse_record(got[0], rel, scope), scope, source=rel)


def staging_data_key(fs: StoreFS, staging_rel: str, staging_key: str, cipher: Cipher) -> DataKey:
    """The run's data key: created by the first writer (create-only), read by every other one."""
    rel, scope = staging_keys_rel(staging_rel), f"staging:{staging_key}"
    if fs.read_tagged(rel) is None:
        fresh = DataKey.generate()
        try:
            fs.create_bytes(rel, record_bytes(cipher, fresh, scope))
            log.info("Created data key %s of staging area %s", fresh.key_id, staging_key)
            return fresh
        except ConcurrentUpdateError:
            pass  # another writer made it first: use theirs
    return read_data_key(fs, rel, scope, cipher)


@dataclass
class RekeyReport:
    """What :func:`rekey` did (or, as a dry run, would do), per key record."""

    old_key_id: str
    new_key_id: str
    dry_run: bool
    rewrapped: list[str] = field(default_factory=list)  #: records wrapped by the new key now (or that would be)
    skipped: list[str] = field(default_factory=list)  #: records wrapped by the new key already

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_key_id": self.old_key_id,
            "new_key_id": self.new_key_id,
            "dry_run": self.dry_run,
            "rewrapped": list(self.rewrapped),
            "skipped": list(self.skipped),
        }


def key_records(fs: StoreFS) -> list[tuple[str, str]]:
    """Every key record of the store: ``(rel, scope)`` of the sealed checkpoints' and the staging areas'."""
    out = []
    for entry in fs.listdir("checkpoints"):
        cid = entry[: -len(KEYS_SUFFIX)]
        if entry.endswith(KEYS_SUFFIX) and CHECKPOINT_ID_RE.fullmatch(cid):  # not a .tmp- or .lock- file
            out.append((f"checkpoints/{entry}", f"checkpoint:{cid}"))
    for entry in fs.listdir("staging"):
        rel = staging_keys_rel(f"staging/{entry}")
        if fs.exists(rel):
            out.append((rel, f"staging:{entry}"))
    return out


def rekey(
    fs: StoreFS,
    old: Cipher,
    new: Cipher,
    *,
    dry_run: bool = False,
    after_each: Callable[[str], None] | None = None,
) -> RekeyReport:
    """Re-wrap every data key of the store from ``old`` to ``new``; the archives are not touched.

    Every record is checked first: one wrapped by a third key stops the run before anything
    changed, naming the key id it needs. Each record is then replaced on its own, atomically
    and only if it is still the one read (compare-and-swap), so a run killed midway leaves
    every record wrapped by one key or the other, and a rerun finishes the job (records wrapped
    by ``new`` already are skipped). ``after_each(rel)`` runs after each replaced record."""
    report = RekeyReport(old.key_id, new.key_id, dry_run)
    todo: list[tuple[str, str, DataKey, str]] = []
    for rel, scope in key_records(fs):
        got = fs.read_tagged(rel)
        if got is None:  # deleted meanwhile
            continue
        record = parse_record(got[0], rel, scope)
        wrapped_by = record.get("master_key_id")
        if wrapped_by == new.key_id:
            report.skipped.append(rel)
        elif wrapped_by != old.key_id:
            raise CheckpointError(
                f"{fs.root}/{rel} is wrapped by master key {wrapped_by}, but the old key given has id "
                f"{old.key_id} (and the new one {new.key_id})",
                hint=f"pass the master key whose id is {wrapped_by} as the old key; nothing was changed",
            )
        else:  # unwrapped before anything is written: a damaged record stops the run here
            todo.append((rel, scope, old.unwrap(record, scope, source=rel), got[1]))
    for rel, scope, data_key, tag in todo:
        if dry_run:
            report.rewrapped.append(rel)
            continue
        fs.replace_if(rel, record_bytes(new, data_key, scope), tag)
        report.rewrapped.append(rel)
        log.info("Re-wrapped %s from master key %s to %s", rel, old.key_id, new.key_id)
        if after_each is not None:
            after_each(rel)
    return report


# ---- fingerprints, sealed with the data key ---------------------------------------------------------


def _fingerprints_context(art_name: str) -> str:
    return f"fingerprints:{art_name}"


def seal_fingerprints(data_key: DataKey, art_name: str, fingerprints: dict[str, Any]) -> str:
    """The fingerprints of an artifact, encrypted and bound to its name (``meta.encryption.fingerprints``)."""
    return data_key.seal_json(_fingerprints_context(art_name), fingerprints)


def is_sealed(art: Artifact) -> bool:
    """Whether the artifact's fingerprints are encrypted in the manifest (the envelope scheme)."""
    enc = art.meta.get("encryption")
    return isinstance(enc, dict) and "fingerprints" in enc


def envelope_key_id(manifest: Manifest) -> str | None:
    """The data key id of a manifest's envelope-encrypted artifacts (None when it has none)."""
    for art in manifest.artifacts:
        enc = art.meta.get("encryption")
        if isinstance(enc, dict) and enc.get("data_key_id"):
            return str(enc["data_key_id"])
    return None


def open_fingerprints(manifest: Manifest, data_key: DataKey) -> Manifest:
    """The manifest with its sealed fingerprints decrypted (a view that still hashes as the stored one)."""
    opened = {}
    for art in manifest.artifacts:
        if is_sealed(art):
            value = data_key.open_json(
                _fingerprints_context(art.name),
                art.meta["encryption"]["fingerprints"],
                source=f"the fingerprints of artifact {art.name} of {manifest.checkpoint_id}",
            )
            if not isinstance(value, dict):
                raise IntegrityError(
                    f"the fingerprints of artifact {art.name} of {manifest.checkpoint_id} are not an object"
                )
            opened[art.name] = value
    return manifest.with_fingerprints(opened) if opened else manifest


#: what a reader shows for fingerprints that stay encrypted (no master key, or another one)
UNAVAILABLE = {"encrypted": "unavailable without the master key"}


def shown_fingerprints(manifest: Manifest, art: Artifact) -> dict[str, Any]:
    """The fingerprints to display: the artifact's own, or :data:`UNAVAILABLE` while they are sealed."""
    opened = "_stored_body" in manifest.__dict__  # a view open_fingerprints made
    return dict(UNAVAILABLE) if is_sealed(art) and not opened else art.fingerprints
