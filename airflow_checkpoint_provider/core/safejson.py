"""Parse JSON read from the store, which anybody with write access could have crafted.

``json.loads`` alone lets one file break every reader: an integer of 5000 digits raises
``ValueError`` (Python's int-from-string limit), nesting 100 000 arrays deep raises
``RecursionError``, ``NaN`` parses as a float, and of two equal keys the last one silently
wins. :func:`load_json` turns each of these into a :class:`FormatError` that names the file
and what is wrong with it, so that one poisoned file is reported as damaged while the others
are still read. :func:`describe` shows an untrusted value in an error message, bounded.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_checkpoint_provider.core.errors import FormatError

#: longest integer literal accepted: 2**63 has 19 digits, anything much longer is not a count
MAX_INT_DIGITS = 30
#: deepest nesting accepted; manifests, pointers and descriptors nest about 6 levels deep
MAX_DEPTH = 64

_HINT = "the file is damaged or was not written by airflow-checkpoint-provider; verify the checkpoint"


class _Refused(Exception):
    """Raised inside the decoder hooks; carries what was refused."""


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"holds an integer of {digits} digits (at most {MAX_INT_DIGITS} are allowed)")
    return int(text)


def _parse_constant(name: str) -> Any:
    raise _Refused(f"holds {name}, which is not JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"holds the key {describe(key)} twice in one object")
        out[key] = value
    return out


def load_json(data: bytes, *, source: str, error: type[FormatError] = FormatError, hint: str = _HINT) -> Any:
    """Parse UTF-8 JSON with bounded integers and nesting and without duplicate keys.

    Raises ``error`` (a :class:`FormatError`) naming ``source`` for anything else.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{source} is not UTF-8 ({exc})", hint=hint) from None
    try:
        obj = json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant, object_pairs_hook=_pairs)
    except _Refused as exc:
        raise error(f"{source} {exc}", hint=hint) from None
    except RecursionError:
        raise error(f"{source} is nested too deeply (at most {MAX_DEPTH} levels are allowed)", hint=hint) from None
    except ValueError as exc:  # json.JSONDecodeError among others
        raise error(f"{source} is not valid JSON ({exc})", hint=hint) from None
    if _depth(obj) > MAX_DEPTH:
        raise error(f"{source} is nested more than {MAX_DEPTH} levels deep", hint=hint)
    return obj


def _depth(obj: Any) -> int:
    """Nesting depth of a parsed value (counted up to ``MAX_DEPTH + 1``), without recursion."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                stack.extend((v, depth + 1) for v in value)
    return deepest


def describe(value: Any) -> str:
    """A short, printable description of an untrusted JSON value for an error message."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        if value.bit_length() > 200:
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        text = repr(value)
        return f"the string {text if len(text) <= 80 else text[:76] + '...' + text[0]}"
    if isinstance(value, list):
        return f"an array of {len(value)} item(s)"
    if isinstance(value, dict):
        return f"an object of {len(value)} key(s)"
    return f"a {type(value).__name__}"
