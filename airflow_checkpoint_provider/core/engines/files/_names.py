"""Names of the files engine's own copies, siblings of the directory they belong to.

``<dir>.__restoring`` is the side-by-side copy a restore extracts and verifies;
``<dir>.__rollback_<short checkpoint id>_<UTC yyyymmddhhmmss>`` the rollback copy it keeps of the
directory it replaced; ``<dir>.__drill_<...>`` a drill's copy. Captures leave every such
directory out (:func:`is_own_copy`), at any depth of the tree.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime

from airflow_checkpoint_provider.core.manifest import utcnow

RESTORING_SUFFIX = ".__restoring"
ROLLBACK_INFIX = ".__rollback_"
DRILL_INFIX = ".__drill_"
#: the longest file name most filesystems allow (NAME_MAX)
MAX_NAME_BYTES = 255
#: the longest rollback suffix: ``.__rollback_`` + 12 characters + ``_`` + 14 digits
ROLLBACK_SUFFIX_BYTES = len(ROLLBACK_INFIX) + 12 + 1 + 14

ROLLBACK_RE = re.compile(r"\A(?P<base>.+)\.__rollback_(?P<short>[0-9a-z]{1,12})_(?P<stamp>\d{14})\Z")
_SHORT_RE = re.compile(r"-([0-9a-f]{6,12})\Z")


def short_id(checkpoint_id: str) -> str:
    """``ckpt-20261122T123042Z-7c4e1a`` -> ``7c4e1a``; any other id -> 8 hex digits of its sha256."""
    m = _SHORT_RE.search(checkpoint_id)
    return m.group(1) if m else hashlib.sha256(checkpoint_id.encode()).hexdigest()[:8]


def restoring_path(path: str) -> str:
    return path + RESTORING_SUFFIX


def rollback_path(path: str, checkpoint_id: str, when: datetime | None = None) -> str:
    """``<dir>.__rollback_<short checkpoint id>_<UTC yyyymmddhhmmss>``."""
    stamp = (when or utcnow()).astimezone(UTC).strftime("%Y%m%d%H%M%S")
    return f"{path}{ROLLBACK_INFIX}{short_id(checkpoint_id)}_{stamp}"


def rollback_of(path: str, name: str) -> re.Match[str] | None:
    """The parts of ``name`` if it is a rollback copy of the directory ``path`` (a sibling of it)."""
    m = ROLLBACK_RE.match(name)
    return m if m and m.group("base") == os.path.basename(path) else None


def is_own_copy(name: str) -> bool:
    """A directory name this engine made: a side-by-side, rollback or drill copy."""
    return name.endswith(RESTORING_SUFFIX) or bool(ROLLBACK_RE.match(name)) or DRILL_INFIX in name
