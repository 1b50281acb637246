"""Names of the PostgreSQL engine's own copies: side-by-side, rollback and drill databases.

Captures leave them out (:func:`is_own_copy`) so that a checkpoint taken after a restore holds
only application data, and the restore refuses to restore onto them.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from airflow_checkpoint_provider.core.manifest import utcnow

RESTORING_SUFFIX = "__restoring"
ROLLBACK_INFIX = "__rollback_"
DRILL_INFIX = "__drill_"
MAX_NAME_BYTES = 63  #: PostgreSQL's NAMEDATALEN - 1: longer names are silently truncated by the server

_ROLLBACK_RE = re.compile(r"^(?P<base>.+)__rollback_(?P<ckpt>[0-9a-z]{1,12})_(?P<ts>\d{14})\Z")
_ROLLBACK_SQL_RE = r"^.+__rollback_[0-9a-z]{1,12}_[0-9]{14}$"  #: the same, for the server's regex engine
_DRILL_RE = re.compile(r"^.+__drill_[0-9a-z]{1,12}\Z")
_CKPT_SUFFIX_RE = re.compile(r"^ckpt-\d{8}T\d{6}Z-([0-9a-f]{1,12})\Z")


def fit_name(base: str, suffix: str) -> str:
    """``base + suffix``, shortened to 63 bytes with 8 hex digits of sha256(base) if needed."""
    name = base + suffix
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    room = MAX_NAME_BYTES - len(suffix.encode()) - len(digest) - 1
    prefix = base.encode()[: max(room, 0)].decode("utf-8", "ignore")
    return f"{prefix}_{digest}{suffix}"


def restoring_name(dbname: str) -> str:
    """The side-by-side name of ``dbname``: ``<db>__restoring`` (shortened if needed)."""
    return fit_name(dbname, RESTORING_SUFFIX)


def drill_name(dbname: str, checkpoint_id: str) -> str:
    """A drill's copy of ``dbname``: ``<db>__drill_<short checkpoint id>`` (shortened to 63 bytes if needed:
    a long ``<db>`` keeps its first bytes and 8 hex digits of its sha256, so the name stays deterministic)."""
    return fit_name(dbname, f"{DRILL_INFIX}{short_checkpoint_id(checkpoint_id)}")


def is_side_copy(name: str) -> bool:
    """A side-by-side copy: a restore's ``<db>__restoring`` or a drill's ``<db>__drill_<id>``."""
    return name.endswith(RESTORING_SUFFIX) or bool(_DRILL_RE.match(name))


def short_checkpoint_id(checkpoint_id: str) -> str:
    """``ckpt-20261122T123042Z-7c4e1a`` -> ``7c4e1a``; other ids: 8 hex digits of their sha256."""
    m = _CKPT_SUFFIX_RE.match(checkpoint_id)
    return m.group(1) if m else hashlib.sha256(checkpoint_id.encode()).hexdigest()[:8]


def rollback_name(dbname: str, checkpoint_id: str, when: datetime | None = None) -> str:
    """``<db>__rollback_<short checkpoint id>_<UTC yyyymmddhhmmss>`` (shortened to 63 bytes if needed)."""
    stamp = (when or utcnow()).astimezone(UTC).strftime("%Y%m%d%H%M%S")
    return fit_name(dbname, f"{ROLLBACK_INFIX}{short_checkpoint_id(checkpoint_id)}_{stamp}")


def is_rollback_name(name: str) -> bool:
    return bool(_ROLLBACK_RE.match(name))


def is_own_copy(name: str) -> bool:
    """A database this provider made: a side-by-side copy, a rollback copy or a drill copy."""
    return name.endswith(RESTORING_SUFFIX) or is_rollback_name(name) or DRILL_INFIX in name
