"""How a workflow state becomes stored bytes and back, and what identifies steps and configs.

A state is either a JSON value (dict, list, str, int, float, bool, None) or ``bytes`` (any
binary the task serialises itself, e.g. an array's buffer). Pickle is never used: loading a
state must not run code. The payload is the compact JSON (or the bytes), zstd-compressed when
it is at least :data:`COMPRESS_THRESHOLD` bytes (multi-threaded above
:data:`THREADED_THRESHOLD`), with the frame's own content checksum; the sha256 is taken over
the stored payload, so a reader checks it before decompressing anything.

A value JSON cannot carry (a set, a datetime, NaN, a key that is not a string) is refused
with its path (``state['model']['weights'] is a set``) before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import zstandard

from airflow_checkpoint_provider.core.errors import FormatError
from airflow_checkpoint_provider.core.safejson import load_json
from airflow_checkpoint_provider.core.workflow.errors import (
    StateDamagedError,
    StateNotSerializableError,
)

#: payloads at least this large are zstd-compressed
COMPRESS_THRESHOLD = 4096
#: payloads at least this large are compressed with every core
THREADED_THRESHOLD = 8 * 1024 * 1024
DEFAULT_LEVEL = 3
ENCODINGS = ("json", "bytes")
COMPRESSIONS = ("none", "zstd")
#: the longest string step
MAX_STEP_CHARS = 200


@dataclass(frozen=True)
class Encoded:
    """A state ready to be stored: what the header records, and the payload bytes."""

    encoding: str
    compression: str
    payload: bytes
    raw_size: int
    sha256: str

    @property
    def size(self) -> int:
        return len(self.payload)


def canonical(value: Any) -> bytes:
    """Compact JSON with sorted keys: equal values give equal bytes (floats as Python repr)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode_state(
    state: Any, *, what: str = "state", level: int = DEFAULT_LEVEL, threshold: int = COMPRESS_THRESHOLD
) -> Encoded:
    """Serialise, maybe compress, and checksum ``state``; raises before returning anything partial."""
    return encode_raw(*raw_state(state, what=what), level=level, threshold=threshold)


def raw_state(state: Any, *, what: str) -> tuple[bytes | memoryview, str]:
    """The bytes to store for ``state`` and their encoding (``bytes`` as they are, anything else as JSON)."""
    if isinstance(state, (bytes, bytearray, memoryview)):
        return (state if isinstance(state, bytes) else memoryview(state).cast("B")), "bytes"
    return encode_json(state, what=what), "json"


def encode_raw(
    raw: bytes | memoryview, encoding: str, *, level: int = DEFAULT_LEVEL, threshold: int = COMPRESS_THRESHOLD
) -> Encoded:
    """Maybe compress, and checksum, the raw bytes of a state."""
    if len(raw) >= threshold:
        threads = -1 if len(raw) >= THREADED_THRESHOLD else 0
        payload = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True).compress(raw)
        compression = "zstd"
    else:
        payload, compression = bytes(raw), "none"
    return Encoded(encoding, compression, payload, len(raw), hashlib.sha256(payload).hexdigest())


def encode_json(value: Any, *, what: str) -> bytes:
    """Compact UTF-8 JSON of ``value``; :class:`StateNotSerializableError` names the first bad path.

    ``json.dumps`` alone would silently turn a tuple into a list (fine) but also the key 2025
    into "2025" (not fine: the resumed state would differ from the saved one), so the value's
    types are checked first, container by container at C speed.
    """
    if not _plain(value):
        raise not_serializable(value, what)
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise not_serializable(value, what, exc) from None


_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = (dict, list, tuple)


def _plain(value: Any) -> bool:
    """Whether every dict key is a str and every value a JSON scalar or container (no cycle check:
    ``json.dumps`` reports cycles)."""
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if id(item) in seen:
                continue  # shared or cyclic: json.dumps reports a cycle
            seen.add(id(item))
        if isinstance(item, dict):
            if item and set(map(type, item)) != {str}:
                return False
            values: Iterable[Any] = item.values()
        elif isinstance(item, (list, tuple)):
            values = item
        else:
            return type(item) in _SCALARS
        kinds = set(map(type, values))
        if not kinds <= _SCALARS:
            if not all(issubclass(k, _CONTAINERS) or k in _SCALARS for k in kinds):
                return False
            stack.extend(v for v in values if isinstance(v, _CONTAINERS))
    return True


def not_serializable(value: Any, what: str, exc: BaseException | None = None) -> StateNotSerializableError:
    path, problem = find_unserializable(value, what)
    if path is None:  # the walk found nothing: report what json said
        path, problem = what, f"cannot be written as JSON ({exc})"
    return StateNotSerializableError(
        f"{path} {problem}; nothing was saved",
        hint="keep states to dict, list, str, int, float, bool and None (convert sets to lists, datetimes to "
        "ISO strings, arrays with .tolist()), or save the state as bytes you serialise yourself",
    )


def find_unserializable(value: Any, what: str) -> tuple[str | None, str]:
    """The path of the first value strict JSON cannot carry, and why (iterative: no recursion limit;
    a container shared by two parents is fine, one that contains itself is a cycle)."""
    stack: list[tuple[Any, str, int]] = [(value, what, 0)]
    on_path: set[int] = set()
    done: set[int] = set()
    while stack:
        item, path, depth = stack.pop()
        if path is _EXIT:
            on_path.discard(item)
            done.add(item)
            continue
        if depth > 10_000:
            return path, "is nested more than 10000 levels deep"
        if type(item) in (str, bool, int, type(None)):
            continue
        if type(item) is float:
            if not math.isfinite(item):
                return path, f"is {item!r}, which JSON cannot carry"
            continue
        if isinstance(item, (dict, list, tuple)):
            if id(item) in on_path:
                return path, "refers back to itself (a reference cycle)"
            if id(item) in done:
                continue
            on_path.add(id(item))
            stack.append((id(item), _EXIT, depth))
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return path, f"has the key {key!r} of type {type(key).__name__}; JSON keys are strings"
                stack.append((sub, f"{path}[{key!r}]", depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item))
        elif isinstance(item, (bytes, bytearray, memoryview)):
            return path, "is bytes inside a JSON state (only a whole state may be bytes)"
        else:
            return path, f"is a {type(item).__module__}.{type(item).__qualname__}, not a JSON value"
    return None, ""


_EXIT: Any = object()  # marks the end of a container's subtree on the walk's stack


def decode_state(encoding: str, compression: str, payload: bytes, *, raw_size: int, source: str) -> Any:
    """The state back from a verified payload; :class:`StateDamagedError` if it does not decode."""
    return decode_raw(encoding, decompress(compression, payload, raw_size=raw_size, source=source), source=source)


def decompress(compression: str, payload: bytes, *, raw_size: int, source: str) -> bytes:
    """The raw bytes of a verified payload."""
    if compression == "zstd":
        try:
            raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            raise StateDamagedError(f"{source}: the payload does not decompress ({exc})", hint=DAMAGED_HINT) from None
    else:
        raw = payload
    if len(raw) != raw_size:
        raise StateDamagedError(
            f"{source}: the payload is {len(raw)} bytes decompressed, the header says {raw_size}", hint=DAMAGED_HINT
        )
    return raw


def decode_raw(encoding: str, raw: bytes, *, source: str) -> Any:
    """The state from its raw bytes (JSON parsed; bytes as they are)."""
    if encoding == "bytes":
        return raw
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise StateDamagedError(f"{source}: the payload is not valid JSON ({exc})", hint=DAMAGED_HINT) from None


DAMAGED_HINT = (
    "the resume falls back to the previous intact state; `airflow-checkpoint workflow history <id>` "
    "shows every saved state"
)


def verify_payload(payload: bytes, *, size: int, sha256: str, source: str) -> None:
    check_payload(len(payload), hashlib.sha256(payload).hexdigest(), size=size, sha256=sha256, source=source)


def check_payload(actual_size: int, actual: str, *, size: int, sha256: str, source: str) -> None:
    """:class:`StateDamagedError` unless the payload read has the header's size and sha256."""
    if actual_size != size:
        raise StateDamagedError(
            f"{source}: the payload is {actual_size} bytes, the header says {size}", hint=DAMAGED_HINT
        )
    if actual != sha256:
        raise StateDamagedError(
            f"{source}: the payload's sha256 is {actual}, the header says {sha256}", hint=DAMAGED_HINT
        )


# ---- steps -----------------------------------------------------------------------------------


def validate_step(step: Any) -> int | str:
    """A step is an int (a year, an index) or a short printable string (a document id)."""
    if isinstance(step, bool) or not isinstance(step, (int, str)):
        raise StateNotSerializableError(
            f"step {step!r} is a {type(step).__name__}; a step is an int or a string",
            hint="name steps by an int (e.g. the year) or a short string (e.g. the document id)",
        )
    if isinstance(step, str) and (not step or len(step) > MAX_STEP_CHARS or not step.isprintable()):
        raise StateNotSerializableError(
            f"step {step[:80]!r} must be 1 to {MAX_STEP_CHARS} printable characters",
            hint="use a short id without newlines or control characters",
        )
    if isinstance(step, int) and abs(step) >= 2**63:
        raise StateNotSerializableError(f"step {step} does not fit in 64 bits", hint="use a smaller number or a string")
    return step


def step_key(step: int | str) -> str:
    """Steps compare by their JSON form: the int 5 and the string "5" are different steps."""
    return json.dumps(step)


# ---- configs ---------------------------------------------------------------------------------


def config_digest(config: Any) -> dict[str, str]:
    """One short sha256 per leaf of the config, by dotted path: what drift reports compare.

    Values are never stored, only their hashes (a config may hold something secret).
    """
    if config is None:
        return {}
    out: dict[str, str] = {}
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                if not isinstance(key, str):
                    raise not_serializable(config, "config")
                stack.append((f"{path}.{key}" if path else key, sub))
            continue
        try:
            out[path or "(config)"] = hashlib.sha256(canonical(value)).hexdigest()[:16]
        except (TypeError, ValueError, RecursionError):
            raise not_serializable(config, "config") from None
    return dict(sorted(out.items()))


def config_hash(digest: dict[str, str]) -> str:
    return "sha256:" + hashlib.sha256(canonical(digest)).hexdigest()


def changed_keys(saved: dict[str, str], current: dict[str, str]) -> list[str]:
    """Dotted paths whose value changed, appeared or disappeared, sorted."""
    keys = set(saved) | set(current)
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def parse_header(data: bytes, source: str) -> dict[str, Any]:
    """A header line parsed with the store's hostile-input rules; :class:`StateDamagedError` if it fails."""
    try:
        obj = load_json(data, source=source)
    except FormatError as exc:
        raise StateDamagedError(exc.message, hint=DAMAGED_HINT) from None
    if not isinstance(obj, dict):
        raise StateDamagedError(f"{source}: the header is not a JSON object", hint=DAMAGED_HINT)
    return obj
