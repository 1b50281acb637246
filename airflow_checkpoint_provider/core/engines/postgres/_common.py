"""Shared pieces of the PostgreSQL restore: constants, the per-database item, small helpers."""

from __future__ import annotations

import fcntl
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres._cutover import Switch
from airflow_checkpoint_provider.core.errors import (
    EngineError,
)
from airflow_checkpoint_provider.core.manifest import Artifact

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.engines.postgres._dump import DumpInfo

log = logging.getLogger("airflow_checkpoint_provider.core.engines.postgres.restore")

COMPONENT = "postgres"

MODES = ("side_by_side", "in_place")

#: ``application_name`` of the pg_restore sessions (visible in pg_stat_activity).
PG_RESTORE_APPLICATION_NAME = "airflow-checkpoint-pg_restore"

#: session settings of the side-by-side pg_restore sessions. Safe: the cut-over's own (synchronous)
#: commit flushes the WAL of everything restored before it. ``maintenance_work_mem``: the memory an
#: index or primary key build may use before its sort spills to disk (PostgreSQL's default, 64MB,
#: spills for tables of more than about a million rows); a limit, not an allocation.
DEFAULT_SESSION_OPTIONS = {"synchronous_commit": "off", "maintenance_work_mem": "512MB"}

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class RestoreVerificationError(EngineError):
    """The restored database does not match the checkpoint's fingerprints."""


def _human(n: int | None) -> str:
    if n is None:
        return "size unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@dataclass
class _Item:
    artifact: Artifact
    source: str  #: the database in the checkpoint
    target_db: str  #: where it lands
    staging: str  #: ``<target>__restoring``
    fmt: str  #: ``custom`` / ``directory``
    info: DumpInfo | None = None
    prepared: bool = False
    cut_over: bool = False
    existed: bool = False
    rollback: str | None = None
    switch: Switch | None = None  #: what the cut-over did (journaled)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def filters(self) -> dict[str, tuple[str, ...]]:
        raw = self.artifact.meta.get("filters") or {}
        return {k: tuple(raw.get(k) or ()) for k in ("schemas", "exclude_schemas", "tables", "exclude_tables")}

    @property
    def exact_counts(self) -> bool:
        return bool(self.artifact.meta.get("exact_counts", self.artifact.fingerprints.get("row_counts") != "estimate"))


def _major(version: str | None) -> int | None:
    parsed = C.parse_tool_version(version or "") if version else None
    return C.major_of(parsed[1]) if parsed else None
