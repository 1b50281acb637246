"""``CheckpointStateBackend``: large ``task_state_store`` values go to the checkpoint store.

Configure it as the worker-side backend::

    [workers]
    state_store_backend = airflow_checkpoint_provider.workflow.CheckpointStateBackend

``task_state_store.set(key, value)`` then calls :meth:`serialize_task_state_store_to_ref`: a value
whose JSON is at least ``[checkpoint] task_state_offload_bytes`` long is written to
``task-state/`` in the store (zstd, sha256, atomic; see ``core/workflow/blobs.py``) and Airflow's
database keeps only the reference ``checkpoint-store:task-state/...``; a smaller one stays in
the database as it is. Reads check the checksums, so a damaged value is an error, never a wrong
value. The reference depends only on the task instance and the key, as Airflow requires, and
``delete``/``clear`` remove the files. The server-side methods (``get``/``set``/...) work too,
so the class can also serve as ``[state_store] backend`` where the API server reaches the store.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from airflow.sdk.state import AssetScope, BaseStoreBackend, TaskScope

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.workflow.blobs import (
    TaskStateBlobs,
    asset_rel,
    rel_of,
    task_rel,
)


def _rel(scope: Any, key: str | None = None, *, all_map_indices: bool = False) -> str:
    match scope:
        case TaskScope():
            rel = task_rel(scope.dag_id, scope.run_id, scope.task_id, scope.map_index, key)
            return rel.rpartition("/")[0] if all_map_indices and key is None else rel
        case AssetScope():
            return asset_rel(scope.name or scope.uri or str(scope.asset_id), key)
    raise TypeError(f"unknown state scope {type(scope).__name__}")


def _about(scope: Any, key: str) -> dict[str, str]:
    if isinstance(scope, TaskScope):
        return {
            "dag_id": scope.dag_id,
            "run_id": scope.run_id,
            "task_id": scope.task_id,
            "map_index": str(scope.map_index),
            "key": key,
        }
    return {"asset": str(scope.name or scope.uri or scope.asset_id), "key": key}


class CheckpointStateBackend(BaseStoreBackend):
    """Task and asset state in the checkpoint store (``[checkpoint] storage_root``)."""

    def __init__(self, storage_root: str | None = None, threshold: int | None = None) -> None:
        self._root = storage_root
        self._threshold = threshold
        self._blobs: TaskStateBlobs | None = None

    @property
    def blobs(self) -> TaskStateBlobs:
        if self._blobs is None:
            from airflow_checkpoint_provider.operators.base import open_store

            self._blobs = TaskStateBlobs(open_store(self._root))  # local or s3:// (its connection's options)
        return self._blobs

    @property
    def threshold(self) -> int:
        return settings.task_state_offload_bytes() if self._threshold is None else self._threshold

    # ---- the worker side: references in Airflow's database --------------------------------------

    def serialize_task_state_store_to_ref(self, *, value: Any, key: str, scope: TaskScope) -> str:
        return self._to_ref(value, key, scope)

    def deserialize_task_state_store_from_ref(self, stored: str) -> Any:
        return self._from_ref(stored)

    def serialize_asset_state_store_to_ref(self, *, value: Any, key: str, scope: AssetScope) -> str:
        return self._to_ref(value, key, scope)

    def deserialize_asset_state_store_from_ref(self, stored: str) -> Any:
        return self._from_ref(stored)

    def _to_ref(self, value: Any, key: str, scope: Any) -> str:
        text = json.dumps(value)
        if len(text.encode()) < self.threshold:
            self.blobs.delete(_rel(scope, key))  # a smaller value replaces an offloaded one
            return text
        return self.blobs.put(_rel(scope, key), text, about=_about(scope, key))

    def _from_ref(self, stored: str) -> Any:
        if not stored:
            return None
        rel = rel_of(stored)
        if rel is None:
            return json.loads(stored)
        text = self.blobs.get(rel)
        return None if text is None else json.loads(text)

    # ---- the server side: values kept in the store ------------------------------------------------

    def get(self, scope: Any, key: str, *, session: Any = None) -> str | None:
        return self.blobs.get(_rel(scope, key))

    def set(self, scope: Any, key: str, value: str, *, expires_at: datetime | None = None, session: Any = None) -> None:
        self.blobs.put(_rel(scope, key), value, about=_about(scope, key))

    def delete(self, scope: Any, key: str, *, session: Any = None) -> None:
        self.blobs.delete(_rel(scope, key))

    def clear(self, scope: Any, *, all_map_indices: bool = False, session: Any = None) -> None:
        self.blobs.clear(_rel(scope, all_map_indices=all_map_indices))

    async def aget(self, scope: Any, key: str, *, session: Any = None) -> str | None:
        return await asyncio.to_thread(self.get, scope, key)

    async def aset(
        self, scope: Any, key: str, value: str, *, expires_at: datetime | None = None, session: Any = None
    ) -> None:
        await asyncio.to_thread(self.set, scope, key, value)

    async def adelete(self, scope: Any, key: str, *, session: Any = None) -> None:
        await asyncio.to_thread(self.delete, scope, key)

    async def aclear(self, scope: Any, *, all_map_indices: bool = False, session: Any = None) -> None:
        await asyncio.to_thread(self.clear, scope, all_map_indices=all_map_indices)

    def cleanup(self) -> None:
        """Remove values not written for ``[state_store] default_retention_days`` (0: keep)."""
        from airflow.configuration import conf

        days = conf.getint("state_store", "default_retention_days", fallback=30)
        if days > 0:
            self.blobs.expire(days * 86400.0)
