"""SearchSnapshotTrigger: wait for a search snapshot in the triggerer, not in a worker slot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class SearchSnapshotTrigger(BaseTrigger):
    """Poll ``GET /_snapshot/<repository>/<snapshot>`` until the snapshot ends.

    The event carries everything ``execute_complete`` needs (``payload`` is passed through
    untouched), and no credentials: the connection is read inside :meth:`run`.

    :param elasticsearch_conn_id: Airflow connection of the cluster.
    :param repository: snapshot repository.
    :param snapshot: snapshot name.
    :param payload: JSON-safe data handed back in the event.
    """

    def __init__(
        self,
        *,
        elasticsearch_conn_id: str,
        repository: str,
        snapshot: str,
        payload: dict[str, Any],
        poll_interval: float = 2.0,
        timeout: float = 3600.0,
    ) -> None:
        super().__init__()
        self.elasticsearch_conn_id = elasticsearch_conn_id
        self.repository = repository
        self.snapshot = snapshot
        self.payload = payload
        self.poll_interval = poll_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "elasticsearch_conn_id": self.elasticsearch_conn_id,
                "repository": self.repository,
                "snapshot": self.snapshot,
                "payload": self.payload,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from airflow_checkpoint_provider.core.engines import search
        from airflow_checkpoint_provider.core.errors import CheckpointError
        from airflow_checkpoint_provider.hooks.search import SearchCheckpointHook

        event = {"repository": self.repository, "snapshot": self.snapshot, "payload": self.payload}
        try:
            target = await sync_to_async(
                SearchCheckpointHook(elasticsearch_conn_id=self.elasticsearch_conn_id).target
            )()
            state = await search.async_wait_for_snapshot(
                target, self.repository, self.snapshot, poll_interval=self.poll_interval, timeout=self.timeout
            )
        except CheckpointError as exc:
            yield TriggerEvent({**event, "status": "error", "message": str(exc)})
            return
        yield TriggerEvent({**event, "status": "success", "state": state})
