"""Encryption at rest in the store: the data key of each checkpoint and its sealed fingerprints (core/envelope.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow_checkpoint_provider.core.envelope import (
    checkpoint_keys_rel,
    envelope_key_id,
    is_sealed,
    open_fingerprints,
    read_data_key,
    record_bytes,
    staging_keys_rel,
)
from airflow_checkpoint_provider.core.errors import CheckpointError, IntegrityError
from airflow_checkpoint_provider.core.manifest import Manifest, validate_checkpoint_id

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.crypt import Cipher, DataKey
    from airflow_checkpoint_provider.core.fs import StoreFS
    from airflow_checkpoint_provider.core.staging import Staging

log = logging.getLogger("airflow_checkpoint_provider.core.store")


class _KeysMixin:
    """The master key's side of the store: re-wrapping at seal, unwrapping, decrypting fingerprints. Mixed into :class:`Store`."""

    if TYPE_CHECKING:  # provided by Store
        fs: StoreFS
        cipher: Cipher | None
        _data_keys: dict[str, DataKey]

    def _seal_keys(self, staging: Staging, manifest: Manifest) -> bytes | None:
        """The key record of the checkpoint: the staging's data key, re-wrapped for its id (None: not encrypted)."""
        wanted = envelope_key_id(manifest)
        if wanted is None:
            return None
        if self.cipher is None:
            raise CheckpointError(
                f"the artifacts of {staging.rel} are encrypted (data key {wanted}) and no master key is configured",
                hint="configure the master key the captures used ([checkpoint] encryption_key_file, "
                "encryption_key_variable or encryption_key_conn_id) for the bundle task too",
            )
        data_key = read_data_key(self.fs, staging_keys_rel(staging.rel), f"staging:{staging.key}", self.cipher)
        strays = [a.name for a in manifest.artifacts if a.meta.get("encryption", {}).get("data_key_id") != wanted]
        if data_key.key_id != wanted or strays:
            raise CheckpointError(
                f"the artifacts of {staging.rel} are not all encrypted with its data key {data_key.key_id} "
                f"(e.g. {(strays or [manifest.artifacts[0].name])[0]})",
                hint="two runs wrote the same staging area; re-run the captures",
            )
        self._data_keys[manifest.checkpoint_id] = data_key
        return record_bytes(self.cipher, data_key, f"checkpoint:{manifest.checkpoint_id}")

    def data_key(self, checkpoint_id: str) -> DataKey:
        """The data key of an encrypted checkpoint, unwrapped with the master key (refused naming the id it needs)."""
        cid = validate_checkpoint_id(checkpoint_id)
        if cid not in self._data_keys:
            if self.cipher is None:
                raise IntegrityError(
                    f"checkpoint {cid} is encrypted and no master key is configured",
                    hint="configure the master key ([checkpoint] encryption_key_file, encryption_key_variable or "
                    f"encryption_key_conn_id); {checkpoint_keys_rel(cid)} names the id it needs",
                )
            self._data_keys[cid] = read_data_key(self.fs, checkpoint_keys_rel(cid), f"checkpoint:{cid}", self.cipher)
        return self._data_keys[cid]

    def opened(self, manifest: Manifest, *, required: bool = False) -> Manifest:
        """``manifest`` with its encrypted fingerprints decrypted (core/envelope.py), when the master key
        is configured; otherwise as it is (its fingerprints then read as empty), or, ``required``, an error
        naming the key id it needs."""
        if not any(is_sealed(a) for a in manifest.artifacts):
            return manifest
        try:
            return open_fingerprints(manifest, self.data_key(manifest.checkpoint_id))
        except CheckpointError as exc:
            if required:
                raise
            log.debug("Fingerprints of %s stay encrypted: %s", manifest.checkpoint_id, exc.message)
            return manifest
