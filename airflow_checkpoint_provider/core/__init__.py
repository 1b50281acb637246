"""Plain-Python core of the checkpoint provider: no Airflow import anywhere below here.

The lifecycle, top to bottom::

    store = Store.open(root, create=True)                  # store.py
    staging = store.staging(staging_key(dag_id, run_id))   # staging.py
    with staging.artifact("postgres/app.dump", store="postgres", kind="pg_dump/custom") as sink:
        sink.write(...)                                    # zstd + sha256 in one pass
    manifest = store.seal(staging, tags=["scheduled"])     # archive.py + manifest.py, atomic publish
    result = store.verify(manifest.checkpoint_id)          # verify.py: every problem, not just the first
    store.mark_lkg(manifest.checkpoint_id, result=result)  # only verified checkpoints become LKG

and afterwards, the records beside the immutable archives (states.py)::

    levels.sweep(store, "deep")                            # levels.py: verify, mark corrupt, LKG fallback
    drill.drill(store, "last-known-good", build, ...)      # drill.py: restore side by side, then drop
    expire.expire(store, Policy.parse(...), execute=True)  # retention.py plans, expire.py deletes as units
"""

from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.manifest import FORMAT_VERSION, Artifact, Manifest
from airflow_checkpoint_provider.core.staging import Staging, staging_key
from airflow_checkpoint_provider.core.store import (
    CheckpointInfo,
    LkgPointer,
    Store,
    default_root,
)
from airflow_checkpoint_provider.core.verify import Problem, ProblemKind, VerifyResult

__all__ = [
    "FORMAT_VERSION",
    "Artifact",
    "CheckpointError",
    "CheckpointInfo",
    "LkgPointer",
    "Manifest",
    "Problem",
    "ProblemKind",
    "Staging",
    "Store",
    "VerifyResult",
    "default_root",
    "staging_key",
]
