"""Health of a restored tree: the live directory against the checkpoint's fingerprints."""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider.core.engines.files._target import FilesTarget
from airflow_checkpoint_provider.core.engines.files.capture import STORE, check_directory
from airflow_checkpoint_provider.core.engines.files.fingerprint import tally_tree
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.restore import HealthCheck, within

COUNTS = ("files", "dirs", "symlinks", "bytes")


def health(target: FilesTarget, expected: dict[str, Any], tolerance: float = 0.0) -> list[HealthCheck]:
    """The directory exists and holds only what a tree may; its counts are within ``tolerance`` of
    ``expected``; with no tolerance its Merkle root is the expected one (with some, it is not compared)."""
    where = f"directory {target.path}"
    try:
        check_directory(target.path, action="checking health")
    except CheckpointError as exc:
        return [HealthCheck(STORE, where, False, detail=exc.message)]
    problems: list[str] = []
    fp = tally_tree(target.path, problems).fingerprints()
    checks = [HealthCheck(STORE, where, not problems, detail="; ".join(problems[:10]))]
    for key in COUNTS:
        if key in expected:
            checks.append(
                HealthCheck(
                    STORE, key, within(int(expected[key]), fp[key], tolerance), expected=expected[key], actual=fp[key]
                )
            )
    if "merkle_root" in expected and tolerance == 0:
        checks.append(
            HealthCheck(
                STORE,
                "merkle root",
                fp["merkle_root"] == expected["merkle_root"],
                expected=expected["merkle_root"],
                actual=fp["merkle_root"],
                detail=""
                if fp["merkle_root"] == expected["merkle_root"]
                else "the files' contents, names or links differ from the checkpoint's",
            )
        )
    return checks
