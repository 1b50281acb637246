"""FilesSnapshotOperator: a directory tree on the worker, as a streamed tar with a sha256 per file."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.core.values import truthy
from airflow_checkpoint_provider.operators.base import CaptureOperator

#: the ``[checkpoint]`` option naming the default quiesce hook (read at run time, never templated)
HOOK_OPTION = "files_quiesce_hook"


class FilesSnapshotOperator(CaptureOperator):
    """Checkpoint a directory (an uploads volume, a config directory) into the run's staging area.

    The directory comes from a connection of type ``fs`` whose extra names it,
    ``{"path": "/srv/app/uploads"}`` (as Airflow's FSHook reads ``fs_default``). The worker that
    runs this task, and the one that runs a restore, must both see the directory at that path.

    :param files_conn_id: the connection naming the directory.
    :param consistency: ``detect`` re-reads files that change while they are read (and fails after
        ``change_retries``); ``quiesce`` calls ``quiesce_hook`` around the capture; ``auto`` (default):
        ``quiesce`` when a hook is configured, else ``detect``.
    :param quiesce_hook: ``"package.module:function"``, called with ``action="quiesce"`` before and
        ``action="resume"`` after the capture, and ``path=``; default ``[checkpoint] files_quiesce_hook``.
        Not a template field: it never comes from a run's conf.
    :param change_retries: how often a file that changed mid-read is read again.
    :param spool_dir: where files larger than 8 MiB wait while they are checked for changes
        (default: the system's temporary directory); it needs room for the largest file.
    :param optional: when the connection is not defined at all, skip instead of failing (the
        ready-made DAGs set this for the default connection id, so that deployments without a
        directory to checkpoint are not affected).
    """

    component = "files"
    task_name = "files_snapshot"  #: its task id in the checkpoint task group
    group_options = {"files_conn_id": "files_conn_id", "files_consistency": "consistency", "files_options": "*"}
    restore_kwargs = {"files_source": "source", "files_options": "*"}
    template_fields = (*CaptureOperator.template_fields, "files_conn_id", "consistency", "optional")

    def __init__(
        self,
        *,
        files_conn_id: str = "files_default",
        consistency: str = "auto",
        quiesce_hook: str | None = None,
        change_retries: int = 3,
        spool_dir: str | None = None,
        optional: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.files_conn_id = files_conn_id
        self.consistency = consistency
        self.quiesce_hook = quiesce_hook
        self.change_retries = change_retries
        self.spool_dir = spool_dir
        self.optional = optional

    def _hook(self) -> str | None:
        return self.quiesce_hook or settings.option(HOOK_OPTION, "") or None

    def config(self) -> dict[str, Any]:
        return {
            "conn_id": self.files_conn_id,
            "consistency": self.consistency,
            "quiesce_hook": self._hook(),
            "change_retries": int(self.change_retries),
        }

    def target(self) -> Any:
        """The directory; a connection that is not defined skips the task when ``optional``."""
        try:
            return super().target()
        except Exception as exc:
            if type(exc).__name__ == "AirflowNotFoundException" and truthy(self.optional):
                raise AirflowSkipException(
                    f"no connection {self.files_conn_id!r} names a directory to checkpoint, so the files capture is "
                    'skipped; define it (type fs, extra {"path": "/srv/app/uploads"}) to checkpoint one'
                ) from exc
            raise

    @classmethod
    def capture_params(cls) -> dict[str, Any]:
        from airflow.sdk import Param

        from airflow_checkpoint_provider.core.engines.files import CONSISTENCY

        return {
            "files_consistency": Param(
                "auto",
                type="string",
                enum=list(CONSISTENCY),
                title="Files consistency",
                description="detect: re-read files that change while they are read (size, mtime, inode), failing "
                "after a few tries; quiesce: call the configured quiesce hook ([checkpoint] "
                "files_quiesce_hook) around the capture; auto: quiesce when a hook is configured. "
                "Without a files connection the files capture is skipped.",
            )
        }

    @classmethod
    def capture_kwargs(cls) -> dict[str, Any]:
        from airflow_checkpoint_provider import engines
        from airflow_checkpoint_provider.core.engines import registry

        engine = registry.get(cls.component)
        # the default connection may be missing (no directory to checkpoint): skip then; any other must exist
        return {
            "consistency": "{{ params.files_consistency }}",
            "optional": f"{{{{ params.{engine.conn_param} == {engines.default_conn_id(engine)!r} }}}}",
        }

    @classmethod
    def restore_params(cls, *, chosen: bool) -> dict[str, Any]:
        from airflow_checkpoint_provider.dags.params import optional_text

        if not chosen:
            return {}
        return {
            "files_source": optional_text(
                "Files: captured directory",
                "When the checkpoint holds several directories, the path (as captured) of the one to restore; "
                "empty: the one captured from the target directory, or the only one.",
            )
        }

    @classmethod
    def restore_options(cls, *, chosen: bool) -> dict[str, Any]:
        return {"source": "{{ params.files_source }}"} if chosen else {}

    def capture(self, staging: Staging, target: Any) -> list[Artifact]:
        from airflow_checkpoint_provider.core.engines import files

        self.log.info("Checkpoint of the directory %s (consistency %s)", target.path, self.consistency)
        return files.capture(
            target,
            staging,
            consistency=self.consistency,
            quiesce_hook=self._hook(),
            retries=int(self.change_retries),
            spool_dir=self.spool_dir,
            compression_level=settings.compression_level(),
        )
