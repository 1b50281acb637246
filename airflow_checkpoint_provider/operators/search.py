"""EsSnapshotOperator: a snapshot of Elasticsearch or OpenSearch indices, recorded in the checkpoint.

The snapshot data stays in the cluster's snapshot repository (incremental); the
checkpoint archive records the repository, snapshot name and uuid, the indices, and
their doc counts and mapping hashes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.configuration import conf
from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred

from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.operators.base import (
    CaptureOperator,
    artifacts_to_xcom,
    fail_fast,
    open_store,
    run_staging_key,
    writer,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


def _indices(value: Any) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] or None
    return [str(v) for v in value]


def _settings(value: Any) -> dict[str, Any] | None:
    if value in (None, "", {}):
        return None
    return json.loads(value) if isinstance(value, str) else dict(value)


class EsSnapshotOperator(CaptureOperator):
    """Snapshot indices through the snapshot REST API (Elasticsearch 7-9, OpenSearch 1-3).

    :param elasticsearch_conn_id: Airflow connection of the cluster (plain HTTP is used).
    :param repository: snapshot repository name.
    :param repository_settings: if given (``{"type": "fs", "settings": {"location": ...}}``), the
        repository is registered and verified first; otherwise it must exist.
    :param indices: indices or patterns (list or comma-separated); None for every non-hidden index.
    :param include_global_state: also snapshot the cluster's global state.
    :param deferrable: wait for the snapshot in the triggerer instead of a worker slot.
    :param poll_interval: seconds between snapshot status checks.
    :param timeout: seconds to wait for the snapshot before failing.
    """

    component = "search"
    task_name = "search_snapshot"  #: its task id in the checkpoint task group
    group_options = {
        "elasticsearch_conn_id": "elasticsearch_conn_id",
        "search_repository": "repository",
        "search_repository_settings": "repository_settings",
        "search_indices": "indices",
        "search_options": "*",
    }
    restore_kwargs = {"indices": "indices", "search_options": "*"}
    names_option = "indices"
    template_fields = (
        *CaptureOperator.template_fields,
        "repository",
        "repository_settings",
        "indices",
        "include_global_state",
        "elasticsearch_conn_id",
    )

    def __init__(
        self,
        *,
        elasticsearch_conn_id: str = "elasticsearch_default",
        repository: str = "checkpoints",
        repository_settings: dict[str, Any] | str | None = None,
        indices: str | list[str] | None = None,
        include_global_state: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 2.0,
        timeout: float = 3600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.elasticsearch_conn_id = elasticsearch_conn_id
        self.repository = repository
        self.repository_settings = repository_settings
        self.indices = indices
        self.include_global_state = include_global_state
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout

    def config(self) -> dict[str, Any]:
        return {
            "conn_id": self.elasticsearch_conn_id,
            "repository": self.repository,
            "indices": _indices(self.indices),
            "include_global_state": bool(self.include_global_state),
        }

    @classmethod
    def capture_params(cls) -> dict[str, Any]:
        from airflow_checkpoint_provider.dags.params import optional_text

        return {
            "search_indices": optional_text(
                "Search indices", "Comma-separated indices or patterns; empty for every non-hidden index."
            )
        }

    @classmethod
    def capture_kwargs(cls) -> dict[str, Any]:
        from airflow_checkpoint_provider import settings

        return {
            "indices": "{{ params.search_indices or None }}",
            "repository": settings.search_repository(),
            "repository_settings": settings.search_repository_settings(),
        }

    @classmethod
    def default_capture_options(cls) -> dict[str, Any]:
        from airflow_checkpoint_provider import settings

        return {
            "repository": settings.search_repository(),
            "repository_settings": settings.search_repository_settings(),
        }

    @classmethod
    def default_restore_options(cls) -> dict[str, Any]:
        from airflow_checkpoint_provider import settings

        return {"repository_settings": settings.search_repository_settings()}

    @classmethod
    def restore_params(cls, *, chosen: bool) -> dict[str, Any]:
        from airflow_checkpoint_provider import settings
        from airflow_checkpoint_provider.dags.params import optional_text

        fields = {
            "search_repository_location": optional_text(
                "Search repository location",
                "Filesystem location of the snapshot repository on the target cluster (listed in its path.repo), "
                "used to register the repository when the target does not have it yet, e.g. a new cluster. "
                "Default: [checkpoint] search_repository_location; empty: the repository must exist.",
                settings.search_repository_location(),
            )
        }
        if chosen:
            fields["indices"] = optional_text(
                "Search indices", "Comma-separated subset of the checkpoint's indices; empty for all."
            )
        return fields

    @classmethod
    def restore_options(cls, *, chosen: bool) -> dict[str, Any]:
        options = {
            "repository_settings": "{{ {'type': 'fs', 'settings': {'location': "
            "params.search_repository_location}} "
            "if params.search_repository_location else None }}"
        }
        if chosen:
            options["indices"] = "{{ params.indices }}"
        return options

    def leftover_options(self) -> dict[str, Any]:
        return {**self.default_leftover_options(), "repository": self.repository}

    @classmethod
    def default_leftover_options(cls) -> dict[str, Any]:
        from airflow_checkpoint_provider import settings

        return {"repository": settings.search_repository(), "snapshot_age": settings.orphan_snapshot_after()}

    def capture(self, staging: Staging, target: Any) -> list[Artifact]:
        from airflow_checkpoint_provider.core.engines import search

        self.log.info("Snapshot of %s into repository %s", target.label, self.repository)
        return search.capture(
            target,
            staging,
            repository=self.repository,
            repository_settings=_settings(self.repository_settings),
            indices=_indices(self.indices),
            include_global_state=bool(self.include_global_state),
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        if not self.deferrable:
            return super().execute(context)
        try:
            self._execute_deferred(context)
        except TaskDeferred:
            raise
        except Exception as exc:
            raise fail_fast(exc) from exc

    def _execute_deferred(self, context: Context) -> NoReturn:
        """Start the snapshot here; the trigger waits; :meth:`execute_complete` records it."""
        from airflow_checkpoint_provider.core.engines import search
        from airflow_checkpoint_provider.triggers.search import SearchSnapshotTrigger

        if str(self.enabled).lower() in ("false", "0", "no", "off", "none", ""):
            raise AirflowSkipException("search capture disabled for this run")
        store = open_store(self.storage_root)
        target = self.target()
        key = self.before_capture(context, store, target)
        staging = store.staging(run_staging_key(context, self.task_id, self.staging_key))
        staging.claim(writer(context, self.task_id))
        with search.SearchClient(target) as client:
            started = search.capture_begin(
                client,
                repository=self.repository,
                repository_settings=_settings(self.repository_settings),
                indices=_indices(self.indices),
                include_global_state=bool(self.include_global_state),
                key=staging.key,
            )
        self.log.info("Snapshot %s started in repository %s; deferring", started.snapshot, self.repository)
        self.defer(
            trigger=SearchSnapshotTrigger(
                elasticsearch_conn_id=self.elasticsearch_conn_id,
                repository=self.repository,
                snapshot=started.snapshot,
                poll_interval=self.poll_interval,
                timeout=self.timeout,
                payload={
                    "started": started.to_dict(),
                    "staging": staging.key,
                    "config": self.config(),
                    "target_key": key,
                },
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        from airflow_checkpoint_provider.core.engines import search
        from airflow_checkpoint_provider.core.errors import CaptureError

        payload = event["payload"]
        target = self.target()
        with search.SearchClient(target) as client:
            if event["status"] != "success":
                client.delete_snapshot(event["repository"], event["snapshot"], missing_ok=True)
                raise CaptureError(event["message"])
            store = open_store(self.storage_root)
            staging = store.staging(payload["staging"])
            art = search.capture_finish(
                client,
                staging,
                repository=event["repository"],
                snapshot=event["snapshot"],
                started=payload["started"],
                state=event["state"],
            )
        self.log.info("Captured %s: snapshot %s", art.name, event["snapshot"])
        return {
            "component": self.component,
            "staging": staging.key,
            "config": payload["config"],
            "target_key": payload.get("target_key"),
            "artifacts": artifacts_to_xcom([art]),
        }
