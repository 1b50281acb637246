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

Reading is strict: every field is checked for its type and range, naming the field and
the value (``pinned`` must be a real boolean, ``raw_size`` an integer from 0 to
:data:`MAX_ARTIFACT_BYTES`, tags printable, timestamps exactly as the writer writes them),
and a manifest must re-serialise to the very object it was read from, so the derived
``stores`` and ``consistency`` sections must match the artifacts. Fields this reader does
not know are kept verbatim (``extra``): they count in the checksum and in comparisons.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from airflow_checkpoint_provider.core.errors import (
    ManifestError,
    UnsupportedFormatError,
)
from airflow_checkpoint_provider.core.safejson import describe, load_json

FORMAT_NAME = "airflow-checkpoint"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
MANIFEST_MEMBER = "manifest.json"
ARTIFACT_PREFIX = "artifacts/"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
#: largest ``size`` or ``raw_size`` accepted (1 PiB): anything larger is damage, not data
MAX_ARTIFACT_BYTES = 1 << 50
#: largest artifact read whole into memory (metadata such as ``search/snapshot.json``), decompressed
MAX_METADATA_BYTES = 64 * 1024 * 1024
MAX_TAG_CHARS = 200

# Patterns end in \Z, never $: "$" also matches before a trailing newline ("x\n").
#: Checkpoint ids are used in file names: keep them to a portable, traversal-free alphabet.
CHECKPOINT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
#: Artifact names become archive member names below ``artifacts/``.
ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,3}\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")

_HINT = (
    "a manifest must follow docs/FORMAT.md; one read from the store that does not was damaged or "
    "edited: verify the checkpoint (`airflow-checkpoint verify <id>`) and use another one"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC timestamp with microseconds and a ``Z`` suffix."""
    if ts.tzinfo is None:
        raise ValueError("naive datetime; pass an aware UTC datetime")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: a timestamp exactly as :func:`format_ts` writes it (the fast path of :func:`parse_ts`)
_TS_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def parse_ts(value: str) -> datetime:
    if isinstance(value, str) and _TS_RE.fullmatch(value):
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)  # ~20x cheaper than strptime
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def is_timestamp(value: Any) -> bool:
    """True for a string exactly as :func:`format_ts` writes it (strptime alone accepts ``1:2:3.4``)."""
    if not isinstance(value, str) or not _TS_RE.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value[:-1])  # the ranges: no month 13, no February 30
    except ValueError:
        return False
    return True


def new_checkpoint_id(created_at: datetime | None = None) -> str:
    """``ckpt-20261122T130102Z-3fa9c1``: sortable by time, unique by its random suffix."""
    ts = (created_at or utcnow()).astimezone(UTC)
    return f"ckpt-{ts.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def validate_checkpoint_id(checkpoint_id: str) -> str:
    if not isinstance(checkpoint_id, str) or not CHECKPOINT_ID_RE.fullmatch(checkpoint_id):
        raise ManifestError(
            f"invalid checkpoint id {_shown(checkpoint_id)}: ids use letters, digits, '.', '_' and '-' "
            "(at most 128 characters)",
            hint="copy the id from `airflow-checkpoint list`",
        )
    return checkpoint_id


def validate_artifact_name(name: str) -> str:
    if not isinstance(name, str) or not ARTIFACT_NAME_RE.fullmatch(name) or ".." in name.split("/"):
        raise ManifestError(
            f"invalid artifact name {_shown(name)}: use up to four '/'-separated parts of letters, "
            "digits, '.', '_' and '-'",
            hint="name artifacts like 'postgres/appdb.dump'",
        )
    return name


def _shown(value: Any) -> str:
    """``repr`` of a short string or number; a bounded description of anything else."""
    if (
        (isinstance(value, str) and len(value) <= 200)
        or value is None
        or (isinstance(value, int) and value.bit_length() <= 200)
    ):
        return repr(value)
    return describe(value)


def _bad(where: str, value: Any, must: str) -> ManifestError:
    """The error for a field that breaks the format: names the field and the value."""
    return ManifestError(f"{where} is {describe(value)}; it must be {must}", hint=_HINT)


def _check_size(where: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ARTIFACT_BYTES:
        raise _bad(where, value, f"an integer from 0 to {MAX_ARTIFACT_BYTES}")


def _check_text(where: str, value: Any, *, empty: bool = True, limit: int = 1000) -> None:
    if not isinstance(value, str) or (not value and not empty) or len(value) > limit or not value.isprintable():
        raise _bad(
            where,
            value,
            f"a{'' if empty else ' non-empty'} string of at most {limit} printable characters "
            "(no newlines or other control characters)",
        )


def _check_timestamp(where: str, value: Any, *, empty: bool = False) -> None:
    if not (empty and value == "") and not is_timestamp(value):
        raise _bad(
            where, value, "an RFC 3339 UTC timestamp like 2026-11-22T12:30:42.300000Z" + (" or empty" if empty else "")
        )


def _check_object(where: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _bad(where, value, "an object")


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
    extra: dict[str, Any] = field(default_factory=dict)  #: fields this reader does not know, kept verbatim

    @property
    def member(self) -> str:
        """Archive member name: ``artifacts/<name>``, plus ``.zst`` for zstd-compressed bytes."""
        return ARTIFACT_PREFIX + self.name + (".zst" if self.compression == "zstd" else "")

    def to_dict(self) -> dict[str, Any]:
        """The artifact as the manifest stores it (unknown fields included)."""
        known = {name: copy.deepcopy(getattr(self, name)) for name in _ARTIFACT_FIELDS}
        return {**copy.deepcopy(self.extra), **known}

    def validate(self) -> None:
        """Check every field's type and range; the error names the field and its value."""
        validate_artifact_name(self.name)
        where = f"artifact {self.name!r}: field"
        _check_text(f"{where} 'store'", self.store, empty=False, limit=64)
        _check_text(f"{where} 'kind'", self.kind, empty=False, limit=200)
        _check_size(f"{where} 'size'", self.size)
        if not isinstance(self.sha256, str) or not SHA256_RE.fullmatch(self.sha256):
            raise _bad(f"{where} 'sha256'", self.sha256, "64 lowercase hex digits")
        if self.compression not in ("zstd", "none"):
            raise _bad(f"{where} 'compression'", self.compression, "'zstd' or 'none'")
        if self.compression == "zstd":
            # a reader bounds decompression by raw_size, so a zstd artifact must have one
            _check_size(f"{where} 'raw_size'", self.raw_size)
        elif self.raw_size is not None and self.raw_size != self.size:
            raise _bad(f"{where} 'raw_size'", self.raw_size, f"null or equal to size ({self.size}) when not compressed")
        _check_text(f"{where} 'engine'", self.engine, limit=64)
        _check_text(f"{where} 'engine_version'", self.engine_version, limit=200)
        for ts_field in ("capture_start", "capture_end"):
            _check_timestamp(f"{where} {ts_field!r}", getattr(self, ts_field), empty=True)
        for obj_field in ("fingerprints", "meta", "extra"):
            _check_object(f"{where} {obj_field!r}", getattr(self, obj_field))
        shadowed = sorted(set(self.extra) & set(_ARTIFACT_FIELDS))
        if shadowed:
            raise ManifestError(f"artifact {self.name!r}: extra fields {shadowed} shadow known ones")

    @classmethod
    def from_dict(cls, d: Any) -> Artifact:
        """Build and validate an artifact; keys this reader does not know go to ``extra``."""
        if not isinstance(d, dict):
            raise _bad("an artifact entry", d, "an object")
        missing = [k for k in ("name", "store", "kind", "size", "sha256") if k not in d]
        if missing:
            raise ManifestError(f"artifact entry {_shown(d.get('name'))} lacks field(s) {missing}", hint=_HINT)
        art = cls(
            **{k: v for k, v in d.items() if k in _ARTIFACT_FIELDS},
            extra={k: v for k, v in d.items() if k not in _ARTIFACT_FIELDS},
        )
        art.validate()
        return art


_ARTIFACT_FIELDS = tuple(f for f in Artifact.__dataclass_fields__ if f != "extra")


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
    #: one short sha256 per key of the hashed configuration (core/drift.py); written only when not empty
    config_keys: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  #: fields this reader does not know, kept verbatim

    # ---- derived sections --------------------------------------------------------------------

    def stores(self) -> dict[str, dict[str, Any]]:
        """Per store: engine, version and capture interval (earliest start, latest end)."""
        out: dict[str, dict[str, Any]] = {}
        for art in self.artifacts:
            s = out.setdefault(
                art.store,
                {
                    "engine": art.engine,
                    "engine_version": art.engine_version,
                    "capture_start": "",
                    "capture_end": "",
                    "artifacts": [],
                },
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

    def with_fingerprints(self, opened: dict[str, dict[str, Any]]) -> Manifest:
        """A view whose artifacts carry the fingerprints ``opened`` gives by artifact name (decrypted,
        core/envelope.py), but that serialises, and so hashes, exactly as this manifest does: the
        self-checksum and the LKG binding stay those of the bytes in the store."""
        arts = [replace(a, fingerprints=opened[a.name]) if a.name in opened else a for a in self.artifacts]
        view = replace(self, artifacts=arts)
        view.__dict__["_stored_body"] = self.body()
        view.__dict__["_checked_sha256"] = self.manifest_sha256
        return view

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
        """The manifest as a JSON object, without the self-checksum (of a view :meth:`with_fingerprints`
        made: the body of the manifest it was made from)."""
        stored = self.__dict__.get("_stored_body")
        if stored is not None:
            return copy.deepcopy(stored)
        return {
            **copy.deepcopy(self.extra),
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "checkpoint_id": self.checkpoint_id,
            "created_at": self.created_at,
            "tags": list(self.tags),
            "pinned": self.pinned,
            "config_hash": self.config_hash,
            "provenance": dict(self.provenance),
            **({"config_keys": dict(self.config_keys)} if self.config_keys else {}),
            "stores": self.stores(),
            "consistency": self.consistency(),
            "artifacts": [a.to_dict() for a in self.artifacts],
        }

    def to_dict(self) -> dict[str, Any]:
        body = self.body()
        body["manifest_sha256"] = sha256_hex(canonical_json(body))
        return body

    @property
    def manifest_sha256(self) -> str:
        """The self-checksum: what the LKG pointer binds to. (A manifest rebuilt from the listing
        cache, :mod:`.listing`, carries the one computed when it was read and checked.)"""
        checked = self.__dict__.get("_checked_sha256")
        return checked if isinstance(checked, str) else str(self.to_dict()["manifest_sha256"])

    def canonical(self) -> bytes:
        """Canonical bytes of the whole manifest; two manifests are the same iff these are."""
        return canonical_json(self.to_dict())

    def to_bytes(self) -> bytes:
        """Readable JSON (indented, sorted keys) carrying its own checksum."""
        return (json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def validate(self) -> None:
        """Check every field's type and range (at write and at read time)."""
        validate_checkpoint_id(self.checkpoint_id)
        _check_timestamp("field 'created_at'", self.created_at)
        if not isinstance(self.artifacts, list):
            raise _bad("field 'artifacts'", self.artifacts, "an array")
        names = set()
        for art in self.artifacts:
            if not isinstance(art, Artifact):
                raise _bad("an artifact entry", art, "an object")
            art.validate()
            if art.name in names:
                raise ManifestError(f"artifact {art.name!r} is listed twice")
            names.add(art.name)
        if not isinstance(self.tags, list):
            raise _bad("field 'tags'", self.tags, "an array of strings")
        for i, tag in enumerate(self.tags):
            _check_text(f"field 'tags'[{i}]", tag, empty=False, limit=MAX_TAG_CHARS)
        if not isinstance(self.pinned, bool):
            raise _bad("field 'pinned'", self.pinned, "true or false")
        _check_text("field 'config_hash'", self.config_hash, limit=200)
        _check_object("field 'provenance'", self.provenance)
        _check_object("field 'config_keys'", self.config_keys)
        for key, digest in self.config_keys.items():
            _check_text("a key of field 'config_keys'", key, empty=False)
            _check_text(f"field 'config_keys'[{key!r}]", digest, empty=False, limit=64)
        if (
            not isinstance(self.format_version, int)
            or isinstance(self.format_version, bool)
            or self.format_version not in SUPPORTED_FORMAT_VERSIONS
        ):
            raise _bad("field 'format_version'", self.format_version, f"one of {sorted(SUPPORTED_FORMAT_VERSIONS)}")
        _check_object("field 'extra'", self.extra)
        canonical_json(self.body())  # refuses floats and odd types early, at write time

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "manifest") -> Manifest:
        """Parse and check a manifest: format and version first, then the self-checksum, then every field."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{source} is {len(data)} bytes, larger than the {MAX_MANIFEST_BYTES} allowed")
        obj = load_json(
            data,
            source=source,
            error=ManifestError,
            hint="the manifest is damaged; verify the archive and use another checkpoint",
        )
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
                f"{source} checksum mismatch: manifest_sha256 says {_shown(claimed)}, content hashes to {actual!r}",
                hint="the manifest was altered or damaged; do not trust this checkpoint",
            )
        missing = [k for k in _MANIFEST_FIELDS if k not in obj]
        if missing:
            raise ManifestError(f"{source} lacks field(s) {missing}", hint=_HINT)
        try:
            if not isinstance(obj["artifacts"], list):
                raise _bad("field 'artifacts'", obj["artifacts"], "an array")
            man = cls(
                checkpoint_id=obj["checkpoint_id"],
                created_at=obj["created_at"],
                artifacts=[Artifact.from_dict(a) for a in obj["artifacts"]],
                tags=obj["tags"],
                pinned=obj["pinned"],
                config_hash=obj["config_hash"],
                provenance=obj["provenance"],
                format_version=obj["format_version"],
                config_keys=obj.get("config_keys", {}),
                extra={k: v for k, v in obj.items() if k not in _KNOWN_FIELDS},
            )
            man.validate()
        except ManifestError as exc:
            raise ManifestError(f"{source}: {exc.message}", hint=exc.hint or _HINT) from None
        # the derived sections and every artifact field must be exactly what the writer writes
        where, theirs, ours = first_difference(body, man.body())  # equal bodies: equal checksums
        if where:
            shown = [("absent" if v is _ABSENT else describe(v)) for v in (theirs, ours)]
            raise ManifestError(
                f"{source}: field {where} is {shown[0]}, but the rest of the manifest makes it {shown[1]}", hint=_HINT
            )
        return man


#: fields every version-1 manifest has; ``stores`` and ``consistency`` are derived from ``artifacts``
_MANIFEST_FIELDS = (
    "format",
    "format_version",
    "checkpoint_id",
    "created_at",
    "tags",
    "pinned",
    "config_hash",
    "provenance",
    "stores",
    "consistency",
    "artifacts",
    "manifest_sha256",
)
#: optional fields (absent from older manifests)
_KNOWN_FIELDS = frozenset(_MANIFEST_FIELDS) | {"config_keys"}
_ABSENT = object()


def first_difference(theirs: Any, ours: Any, where: str = "") -> tuple[str, Any, Any]:
    """The first place where two JSON values differ: (path, their value, our value); path '' if equal.

    A value missing on one side is the ``_ABSENT`` sentinel.
    """
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key in sorted(set(theirs) | set(ours)):
            a, b = theirs.get(key, _ABSENT), ours.get(key, _ABSENT)
            path = f"{where}.{key}" if where else key
            found = first_difference(a, b, path) if _ABSENT not in (a, b) else (path, a, b)
            if found[0]:
                return found
        return "", None, None
    if isinstance(theirs, list) and isinstance(ours, list) and len(theirs) == len(ours):
        for i, (a, b) in enumerate(zip(theirs, ours, strict=False)):
            found = first_difference(a, b, f"{where}[{i}]")
            if found[0]:
                return found
        return "", None, None
    same = type(theirs) is type(ours) and theirs == ours
    return ("", None, None) if same else (where, theirs, ours)


def check_format(obj: dict[str, Any], *, source: str = "manifest") -> None:
    """Refuse anything that is not a manifest of a version this reader understands."""
    if obj.get("format") != FORMAT_NAME:
        raise UnsupportedFormatError(
            f"{source} has format {_shown(obj.get('format'))}, expected {FORMAT_NAME!r}",
            hint="this file is not a checkpoint manifest",
        )
    version = obj.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        raise UnsupportedFormatError(
            f"{source} has format_version {_shown(version)}; this reader understands version(s) "
            f"{sorted(SUPPORTED_FORMAT_VERSIONS)}",
            hint="upgrade airflow-checkpoint-provider to read checkpoints written by a newer version",
        )


def config_hash(config: Any) -> str:
    """Stable hash of the capture configuration (connection ids, options; never secrets)."""
    return "sha256:" + sha256_hex(canonical_json(config))
