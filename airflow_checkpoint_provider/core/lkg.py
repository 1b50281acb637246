"""The last-known-good pointer: a small, self-checksummed document bound to one exact manifest.

``refs/lkg.json`` (and each ``refs/lkg-history/*.json`` record) names a checkpoint and the
``manifest_sha256`` of the manifest that was verified when the pointer moved. A reader
resolving ``last-known-good`` compares that binding with the checkpoint's manifest as it is
now (:meth:`~airflow_checkpoint_provider.core.store.Store.resolve`): a checkpoint replaced
under the same id, however consistent the forgery, no longer matches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from airflow_checkpoint_provider.core.errors import FormatError
from airflow_checkpoint_provider.core.manifest import (
    SHA256_RE,
    canonical_json,
    is_timestamp,
    sha256_hex,
    validate_checkpoint_id,
)
from airflow_checkpoint_provider.core.safejson import describe, load_json

LKG_FORMAT = "airflow-checkpoint-lkg"
LKG_ALIASES = frozenset({"last-known-good", "lkg", "LKG"})
MAX_POINTER_BYTES = 64 * 1024


@dataclass(frozen=True)
class LkgPointer:
    """Where the last-known-good pointer points, and why."""

    checkpoint_id: str
    manifest_sha256: str
    set_at: str
    previous: str | None
    reason: str
    verified_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LKG_FORMAT,
            "format_version": 1,
            "checkpoint_id": self.checkpoint_id,
            "manifest_sha256": self.manifest_sha256,
            "set_at": self.set_at,
            "previous": self.previous,
            "reason": self.reason,
            "verified_at": self.verified_at,
        }

    def to_bytes(self) -> bytes:
        body = self.to_dict()
        body["pointer_sha256"] = sha256_hex(canonical_json(body))
        return (json.dumps(body, sort_keys=True, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> LkgPointer:
        """Parse and check a pointer: format, checksum, then every field's type."""
        if len(data) > MAX_POINTER_BYTES:
            raise FormatError(f"{source} is {len(data)} bytes, more than the {MAX_POINTER_BYTES} a pointer may have")
        obj = load_json(data, source=source)
        if (
            not isinstance(obj, dict)
            or obj.get("format") != LKG_FORMAT
            or obj.get("format_version") != 1
            or isinstance(obj.get("format_version"), bool)
        ):
            raise FormatError(f"{source} is not an LKG pointer of version 1")
        body = {k: v for k, v in obj.items() if k != "pointer_sha256"}
        if sha256_hex(canonical_json(body)) != obj.get("pointer_sha256"):
            raise FormatError(f"{source} fails its checksum")
        missing = [k for k in cls.__dataclass_fields__ if k not in obj]
        if missing:
            raise FormatError(f"{source} lacks field(s) {missing}")
        pointer = cls(**{k: obj[k] for k in cls.__dataclass_fields__})
        pointer._validate(source)
        return pointer

    def _validate(self, source: str) -> None:
        def bad(name: str, must: str) -> FormatError:
            return FormatError(f"{source}: field {name!r} is {describe(getattr(self, name))}; it must be {must}")

        try:
            validate_checkpoint_id(self.checkpoint_id)
            if self.previous is not None:
                validate_checkpoint_id(self.previous)
        except FormatError as exc:
            raise FormatError(f"{source}: {exc.message}") from None
        if not isinstance(self.manifest_sha256, str) or not SHA256_RE.fullmatch(self.manifest_sha256):
            raise bad("manifest_sha256", "64 lowercase hex digits")
        for name in ("set_at", "verified_at"):
            if not is_timestamp(getattr(self, name)):
                raise bad(name, "an RFC 3339 UTC timestamp like 2026-11-22T12:30:42.300000Z")
        if not isinstance(self.reason, str):
            raise bad("reason", "a string")
