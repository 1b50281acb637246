"""Templated values as operators receive them: lists, dicts and booleans that may arrive as strings."""

from __future__ import annotations

import json
from typing import Any


def as_list(value: Any) -> list[str] | None:
    """A list of names, a comma-separated string, or None/""/[]/"all" (meaning: everything)."""
    if value in (None, "", [], "all"):
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] or None
    return [str(v) for v in value if str(v).strip()] or None


def split_list(value: Any) -> list[str]:
    """A templated list: a list, or a comma-separated string; empty items dropped."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


def as_dict(value: Any) -> dict[str, Any]:
    if value in (None, "", {}):
        return {}
    return json.loads(value) if isinstance(value, str) else dict(value)


def truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def flag(value: Any) -> bool:
    """A boolean that may arrive as one, or as a string ("True", "false", "0")."""
    return value if isinstance(value, bool) else truthy(value)
