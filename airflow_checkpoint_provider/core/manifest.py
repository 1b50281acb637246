"""The checkpoint manifest, format version 1 (specified in docs/FORMAT.md).

A manifest is a JSON object. It lists every artifact of a checkpoint with its
size and sha256, the engine that produced it and fingerprints of the data, the
capture interval of each store, provenance, tags, and a sha256 of itself.

Readers check ``format`` and ``format_version`` before anything else and refuse
versions they do not know: a future version may change what the other fields
mean, including how the self-checksum is computed.

The self-checksum (``manifest_sha256``) is the sha256 of the *canonical* form of
the manifest without that field: UTF-8 JSON with sorted keys, no insignificant
whitespace and no floats (so that any language can reproduce the bytes).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow_checkpoint_provider.core.errors import ManifestError, UnsupportedFormatError

FORMAT_NAME = "airflow-checkpoint"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
MANIFEST_MEMBER = "manifest.json"
ARTIFACT_PREFIX = "artifacts/"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

#: Checkpoint ids are used in file names: keep them to a portable, traversal-free alphabet.
CHECKPOINT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Artifact names become archive member names below ``artifacts/``.
ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,3}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC timestamp with microseconds and a ``Z`` suffix."""
    if ts.tzinfo is None:
        raise ValueError("naive datetime; pass an aware UTC datetime")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def new_checkpoint_id(created_at: datetime | None = None) -> str:
    """``ckpt-20261122T130102Z-3fa9c1``: sortable by time, unique by its random suffix."""
    ts = (created_at or utcnow()).astimezone(UTC)
    return f"ckpt-{ts.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def validate_checkpoint_id(checkpoint_id: str) -> str:
    if not isinstance(checkpoint_id, str) or not CHECKPOINT_ID_RE.match(checkpoint_id):
        raise ManifestError(
            f"invalid checkpoint id {checkpoint_id!r}: ids use letters, digits, '.', '_' and '-' "
            "(at most 128 characters)",
            hint="copy the id from `airflow-checkpoint list`",
        )
    return checkpoint_id


def validate_artifact_name(name: str) -> str:
    if not isinstance(name, str) or not ARTIFACT_NAME_RE.match(name) or ".." in name.split("/"):
        raise ManifestError(
            f"invalid artifact name {name!r}: use up to four '/'-separated parts of letters, "
            "digits, '.', '_' and '-'",
            hint="name artifacts like 'postgres/appdb.dump'",
        )
    return name


def canonical_json(obj: Any) -> bytes:
    """Canonical bytes of a JSON value: sorted keys, compact, UTF-8, floats refused."""
    _refuse_floats(obj, "$")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _refuse_floats(obj: Any, where: str) -> None:
    if isinstance(obj, float):
        raise ManifestError(
            f"manifest value at {where} is a float ({obj!r}); the format allows integers only",
            hint="store milliseconds or counts as integers, or the value as a string",
        )
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ManifestError(f"manifest key {k!r} at {where} is not a string")
            _refuse_floats(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _refuse_floats(v, f"{where}[{i}]")
    elif not (obj is None or isinstance(obj, (str, int, bool))):
        raise ManifestError(f"manifest value at {where} has unsupported type {type(obj).__name__}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """One file inside the archive, as the manifest describes it."""

    name: str  #: logical name, e.g. ``postgres/appdb.dump``; the member is ``artifacts/<name>``
    store: str  #: component it belongs to: ``postgres``, ``redis``, ``search``, ...
    kind: str  #: what the bytes are, e.g. ``pg_dump/custom``, ``redis/rdb``
    size: int  #: bytes stored in the archive (after compression)
    sha256: str  #: sha256 of the stored bytes
    compression: str = "zstd"  #: ``zstd`` or ``none``
    raw_size: int | None = None  #: bytes before compression, when known
    engine: str = ""  #: e.g. ``postgresql``, ``redis``, ``opensearch``
    engine_version: str = ""
    capture_start: str = ""  #: RFC 3339 UTC
    capture_end: str = ""
    fingerprints: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  #: engine-specific details (database name, ...)

    @property
    def member(self) -> str:
        """Archive member name: ``artifacts/<name>``, plus ``.zst`` for zstd-compressed bytes."""
        return ARTIFACT_PREFIX + self.name + (".zst" if self.compression == "zstd" else "")

    def validate(self) -> None:
        validate_artifact_name(self.name)
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise ManifestError(f"artifact {self.name!r}: size {self.size!r} is not a non-negative integer")
        if not isinstance(self.sha256, str) or not SHA256_RE.match(self.sha256):
            raise ManifestError(f"artifact {self.name!r}: sha256 {self.sha256!r} is not 64 lowercase hex digits")
        if self.compression not in ("zstd", "none"):
            raise ManifestError(f"artifact {self.name!r}: unknown compression {self.compression!r}")
        for ts_field in ("capture_start", "capture_end"):
            value = getattr(self, ts_field)
            if value:
                try:
                    parse_ts(value)
                except (TypeError, ValueError):
                    raise ManifestError(f"artifact {self.name!r}: {ts_field} {value!r} is not RFC 3339 UTC") from None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        known = {f for f in cls.__dataclass_fields__}
        try:
            art = cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as exc:
            raise ManifestError(f"artifact entry {d.get('name')!r} is missing a field: {exc}") from None
        art.validate()
        return art


@dataclass
class Manifest:
    """Everything a reader needs to know about one checkpoint."""

    checkpoint_id: str
    created_at: str
    artifacts: list[Artifact]
    tags: list[str] = field(default_factory=list)
    pinned: bool = False
    config_hash: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    # ---- derived sections --------------------------------------------------------------------

    def stores(self) -> dict[str, dict[str, Any]]:
        """Per store: engine, version and capture interval (earliest start, latest end)."""
        out: dict[str, dict[str, Any]] = {}
        for art in self.artifacts:
            s = out.setdefault(
                art.store,
                {"engine": art.engine, "engine_version": art.engine_version, "capture_start": "", "capture_end": "",
                 "artifacts": []},
            )
            s["artifacts"].append(art.name)
            if art.capture_start and (not s["capture_start"] or art.capture_start < s["capture_start"]):
                s["capture_start"] = art.capture_start
            if art.capture_end and art.capture_end > s["capture_end"]:
                s["capture_end"] = art.capture_end
        return out

    def consistency(self) -> dict[str, Any]:
        """The capture window over all stores and the skew between their points in time.

        A store's point in time is its capture start (pg_dump's snapshot, the Redis fork, the
        search snapshot all happen at the start). ``skew_ms`` is the spread of those points.
        """
        stores = self.stores()
        starts = [parse_ts(s["capture_start"]) for s in stores.values() if s["capture_start"]]
        ends = [parse_ts(s["capture_end"]) for s in stores.values() if s["capture_end"]]
        if not starts:
            return {"window_start": "", "window_end": "", "skew_ms": 0}
        return {
            "window_start": format_ts(min(starts)),
            "window_end": format_ts(max(ends)) if ends else "",
            "skew_ms": int((max(starts) - min(starts)).total_seconds() * 1000),
        }

    def artifact(self, name: str) -> Artifact:
        for art in self.artifacts:
            if art.name == name:
                return art
        raise KeyError(name)

    @property
    def total_size(self) -> int:
        return sum(a.size for a in self.artifacts)

    # ---- (de)serialisation -------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        """The manifest as a JSON object, without the self-checksum."""
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "checkpoint_id": self.checkpoint_id,
            "created_at": self.created_at,
            "tags": list(self.tags),
            "pinned": self.pinned,
            "config_hash": self.config_hash,
            "provenance": dict(self.provenance),
            "stores": self.stores(),
            "consistency": self.consistency(),
            "artifacts": [asdict(a) for a in self.artifacts],
        }

    def to_dict(self) -> dict[str, Any]:
        body = self.body()
        body["manifest_sha256"] = sha256_hex(canonical_json(body))
        return body

    def to_bytes(self) -> bytes:
        """Readable JSON (indented, sorted keys) carrying its own checksum."""
        return (json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def validate(self) -> None:
        validate_checkpoint_id(self.checkpoint_id)
        try:
            parse_ts(self.created_at)
        except (TypeError, ValueError):
            raise ManifestError(f"created_at {self.created_at!r} is not RFC 3339 UTC") from None
        names = set()
        for art in self.artifacts:
            art.validate()
            if art.name in names:
                raise ManifestError(f"artifact {art.name!r} is listed twice")
            names.add(art.name)
        if not all(isinstance(t, str) and t for t in self.tags):
            raise ManifestError(f"tags must be non-empty strings, got {self.tags!r}")
        canonical_json(self.body())  # refuses floats and odd types early, at write time

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "manifest") -> Manifest:
        """Parse and check a manifest: format and version first, then the self-checksum."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{source} is {len(data)} bytes, larger than the {MAX_MANIFEST_BYTES} allowed")
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(
                f"{source} is not valid JSON ({exc})",
                hint="the manifest is damaged; verify the archive and use another checkpoint",
            ) from None
        return cls.from_dict(obj, source=source)

    @classmethod
    def from_dict(cls, obj: Any, *, source: str = "manifest") -> Manifest:
        if not isinstance(obj, dict):
            raise ManifestError(f"{source} is not a JSON object")
        check_format(obj, source=source)
        claimed = obj.get("manifest_sha256")
        body = {k: v for k, v in obj.items() if k != "manifest_sha256"}
        try:
            actual = sha256_hex(canonical_json(body))
        except ManifestError as exc:
            raise ManifestError(f"{source}: {exc.message}") from None
        if claimed != actual:
            raise ManifestError(
                f"{source} checksum mismatch: manifest_sha256 says {claimed!r}, content hashes to {actual!r}",
                hint="the manifest was altered or damaged; do not trust this checkpoint",
            )
        try:
            man = cls(
                checkpoint_id=obj["checkpoint_id"],
                created_at=obj["created_at"],
                artifacts=[Artifact.from_dict(a) for a in obj["artifacts"]],
                tags=list(obj.get("tags", [])),
                pinned=bool(obj.get("pinned", False)),
                config_hash=obj.get("config_hash", ""),
                provenance=dict(obj.get("provenance", {})),
                format_version=obj["format_version"],
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"{source} lacks a required field or has a wrong type: {exc!r}") from None
        man.validate()
        return man


def check_format(obj: dict[str, Any], *, source: str = "manifest") -> None:
    """Refuse anything that is not a manifest of a version this reader understands."""
    if obj.get("format") != FORMAT_NAME:
        raise UnsupportedFormatError(
            f"{source} has format {obj.get('format')!r}, expected {FORMAT_NAME!r}",
            hint="this file is not a checkpoint manifest",
        )
    version = obj.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS or isinstance(version, bool):
        raise UnsupportedFormatError(
            f"{source} has format_version {version!r}; this reader understands version(s) "
            f"{sorted(SUPPORTED_FORMAT_VERSIONS)}",
            hint="upgrade airflow-checkpoint-provider to read checkpoints written by a newer version",
        )


def config_hash(config: Any) -> str:
    """Stable hash of the capture configuration (connection ids, options; never secrets)."""
    return "sha256:" + sha256_hex(canonical_json(config))
