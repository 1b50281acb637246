"""Names of the provider's own copies of search indices, and how to recognise them.

``X__restoring_<short id>`` is the side-by-side copy a restore makes of index ``X``;
``X__rollback_<short id>_<UTC yyyymmddhhmmss>`` the rollback copy it keeps of the index it
replaced; ``X__drill_<...>`` a drill's copy. None of them is application data: captures leave
them out unless asked (:func:`is_own_copy`), except a ``__restoring_`` copy that an alias serves
(an alias-mode restore keeps serving it under that name).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC

from airflow_checkpoint_provider.core.manifest import utcnow

STAGING_MARK = "__restoring_"
ROLLBACK_MARK = "__rollback_"
DRILL_MARK = "__drill_"
OWN_MARKS = (STAGING_MARK, ROLLBACK_MARK, DRILL_MARK)
#: Index names are limited to 255 bytes by both products.
MAX_INDEX_NAME_BYTES = 255
#: The snapshot name prefix of rollback snapshots (data streams cannot be cloned back into a stream).
ROLLBACK_SNAPSHOT_PREFIX = "ckpt-rollback-"
#: ``metadata.taken_by`` of every snapshot the provider takes.
TAKEN_BY = "airflow-checkpoint-provider"

_SHORT_ID_RE = re.compile(r"-([0-9a-f]{6,12})\Z")
#: ``<index>__rollback_<short>_<14 digits>``
ROLLBACK_RE = re.compile(r"\A(?P<source>.+)__rollback_(?P<short>[a-z0-9][a-z0-9-]*)_(?P<stamp>\d{14})\Z")
#: ``<index>__restoring_<short>``
STAGING_RE = re.compile(r"\A(?P<source>.+)__restoring_(?P<short>[a-z0-9][a-z0-9-]*)\Z")
#: ``<index>__drill_<short>``: a drill's side-by-side copy
DRILL_RE = re.compile(r"\A(?P<source>.+)__drill_(?P<short>[a-z0-9][a-z0-9-]*)\Z")


def short_id(checkpoint_id: str) -> str:
    """The lowercase short id used in staging and rollback names.

    ``ckpt-20261122T123042Z-7c4e1a`` -> ``7c4e1a`` (the random suffix of generated ids); any other
    id -> the first 8 hex digits of its sha256.
    """
    m = _SHORT_ID_RE.search(checkpoint_id.lower())
    if m:
        return m.group(1)
    return hashlib.sha256(checkpoint_id.encode("utf-8")).hexdigest()[:8]


def staging_name(index: str, short: str, mark: str = STAGING_MARK) -> str:
    """``<index>__restoring_<short id>``; a drill's copy (``mark`` = :data:`DRILL_MARK`): ``<index>__drill_<short id>``."""
    return f"{index}{mark}{short}"


def rollback_name(index: str, short: str, stamp: str) -> str:
    """``<index>__rollback_<short id>_<UTC yyyymmddhhmmss>``."""
    return f"{index}{ROLLBACK_MARK}{short}_{stamp}"


def rollback_snapshot_name(short: str, stamp: str) -> str:
    """``ckpt-rollback-<short id>-<UTC yyyymmddhhmmss>``: the data streams a restore replaced."""
    return f"{ROLLBACK_SNAPSHOT_PREFIX}{short}-{stamp}"


def is_own_copy(name: str) -> bool:
    """Whether ``name`` is one of the provider's copies (side-by-side, rollback, drill)."""
    return any(mark in name for mark in OWN_MARKS)


def stamp() -> str:
    return utcnow().astimezone(UTC).strftime("%Y%m%d%H%M%S")


def name_too_long(name: str) -> bool:
    return len(name.encode("utf-8")) > MAX_INDEX_NAME_BYTES
