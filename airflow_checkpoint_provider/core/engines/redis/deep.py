"""Deep check of Redis artifacts: the full RDB walk with its CRC64, or the logical stream, against the counts.

An RDB is walked entry by entry (:class:`~.rdb.RdbParser`): magic, version, every record's
extent, the trailing CRC64; the keys and expiries per db must equal what the capture counted.
A logical capture is read record by record, each DUMP payload's own CRC64 is checked, and the
keys per db must equal the capture's counts. No server is needed.
"""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider.core.engines.contract import DeepCheck
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.manifest import Artifact

from .capture import RDB_KIND
from .encoding import RdbError, split_payload
from .logical import LogicalKey, read_logical
from .rdb import RdbParser


def _rdb(store: Any, checkpoint_id: str, art: Artifact) -> tuple[list[str], dict[str, Any]]:
    with store.open_artifact(checkpoint_id, art.name) as src:
        parser = RdbParser(src)
        found = parser.scan()
    problems = []
    for field in ("keys", "expires"):
        want = art.fingerprints.get(field)
        if isinstance(want, dict) and found[field] != want:
            problems.append(f"the RDB holds {field} per db {found[field]}, the capture counted {want}")
    if art.meta.get("checksum") == "crc64" and not parser.checksum_verified:
        problems.append("the RDB carries no CRC64, but it had one when it was captured")
    return problems, {
        "keys": sum(found["keys"].values()),
        "rdb_version": found["rdb_version"],
        "crc64": "verified" if parser.checksum_verified else "absent",
    }


def _logical(store: Any, checkpoint_id: str, art: Artifact) -> tuple[list[str], dict[str, Any]]:
    keys: dict[str, int] = {}
    with store.open_artifact(checkpoint_id, art.name) as src:
        for record in read_logical(src):
            if isinstance(record, LogicalKey):
                split_payload(record.payload)  # raises on a payload whose CRC64 does not match
                keys[str(record.db)] = keys.get(str(record.db), 0) + 1
    want = art.fingerprints.get("keys")
    problems = (
        []
        if not isinstance(want, dict) or keys == want
        else [f"the logical capture holds keys per db {keys}, the capture counted {want}"]
    )
    return problems, {"keys": sum(keys.values()), "payload_crc64": "verified"}


def deep_check(store: Any, checkpoint_id: str, artifacts: list[Artifact], target: Any = None) -> DeepCheck:
    """Walk every Redis artifact of the checkpoint (see the module docstring)."""
    result = DeepCheck()
    for art in artifacts:
        try:
            problems, evidence = (_rdb if art.kind == RDB_KIND else _logical)(store, checkpoint_id, art)
        except RdbError as exc:
            problems, evidence = [f"does not parse: {exc}"], {}
        except CheckpointError as exc:
            problems, evidence = [exc.message], {}
        result.problems += [(art.member, p) for p in problems]
        result.evidence[art.name] = evidence
    return result
