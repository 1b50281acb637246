"""RedisSnapshotOperator: a point-in-time RDB over the replication protocol, or a logical dump."""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.operators.base import CaptureOperator

MODES = ("rdb", "logical", "auto")
#: the longest Redis write fence a run of the ready-made DAGs may ask for, in seconds
MAX_FORM_FENCE_S = 300


class RedisSnapshotOperator(CaptureOperator):
    """Snapshot a Redis server into the run's staging area.

    :param redis_conn_id: Airflow connection of the server.
    :param mode: ``rdb`` pulls an RDB like ``redis-cli --rdb`` (point in time, remote);
        ``logical`` streams SCAN + DUMP + PTTL of every db (for managed services that refuse
        SYNC); ``auto`` (default) tries ``rdb`` and falls back to ``logical`` when SYNC is refused.
    :param pause_writes: fence writers with ``CLIENT PAUSE WRITE`` during the capture window
        (True, or the maximum seconds to pause).
    """

    component = "redis"
    task_name = "redis_snapshot"  #: its task id in the checkpoint task group
    group_options = {"redis_conn_id": "redis_conn_id", "redis_mode": "mode", "redis_options": "*"}
    restore_kwargs = {"redis_options": "*"}
    template_fields = (*CaptureOperator.template_fields, "mode", "redis_conn_id", "pause_writes")

    def __init__(
        self,
        *,
        redis_conn_id: str = "redis_default",
        mode: str = "auto",
        pause_writes: bool | float = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.redis_conn_id = redis_conn_id
        self.mode = mode
        self.pause_writes = pause_writes

    def config(self) -> dict[str, Any]:
        return {"conn_id": self.redis_conn_id, "mode": self.mode, "pause_writes": str(self.pause_writes)}

    @classmethod
    def capture_params(cls) -> dict[str, Any]:
        from airflow.sdk import Param

        from airflow_checkpoint_provider.core.engines.redis.fence import MAX_PAUSE_S

        bound = int(min(MAX_PAUSE_S, MAX_FORM_FENCE_S))
        return {
            "redis_mode": Param(
                "auto",
                type="string",
                enum=["auto", "rdb", "logical"],
                title="Redis capture mode",
                description="rdb: point-in-time RDB over replication; logical: SCAN+DUMP (managed "
                "services); auto: rdb, falling back to logical when SYNC is refused.",
            ),
            "redis_fence": Param(
                None,
                type=["null", "number"],
                minimum=0,
                maximum=bound,
                title="Redis write fence (seconds)",
                description="Hold Redis writes with CLIENT PAUSE WRITE while the capture takes its point in time "
                "(rdb: until the server forked its snapshot; logical: the whole SCAN). Reads go on. "
                f"The value is the bound: writers wait at most this long (up to {bound}), even if the "
                "capture dies mid-fence. Empty or 0: no fence.",
            ),
        }

    @classmethod
    def capture_kwargs(cls) -> dict[str, Any]:
        return {"mode": "{{ params.redis_mode }}", "pause_writes": "{{ params.redis_fence or False }}"}

    def capture(self, staging: Staging, target: Any) -> list[Artifact]:
        from airflow_checkpoint_provider.core.engines import redis
        from airflow_checkpoint_provider.core.errors import CheckpointError

        if self.mode not in MODES:
            raise CheckpointError(f"unknown Redis capture mode {self.mode!r}", hint=f"use one of {', '.join(MODES)}")
        self.log.info("Redis snapshot of %s (mode %s)", target.label, self.mode)
        return redis.capture(
            target,
            staging,
            mode=self.mode,
            pause_writes=self.pause_writes,
            compression_level=settings.compression_level(),
        )
