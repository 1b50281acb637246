"""BundleOperator: seal the run's captured artifacts into one verified checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator

from airflow_checkpoint_provider import metrics, settings
from airflow_checkpoint_provider.core import drift
from airflow_checkpoint_provider.core.create import seal_and_verify
from airflow_checkpoint_provider.core.errors import CheckpointError, VerificationFailedError
from airflow_checkpoint_provider.core.values import as_dict
from airflow_checkpoint_provider.operators.base import (
    artifacts_from_xcom,
    open_store,
    provenance,
    run_staging_key,
    split_list,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Every sealed checkpoint updates this asset; the event's extra carries the id and tags.
CHECKPOINT_ASSET = Asset(name="checkpoint", uri="checkpoint://sealed")


def tag_asset(tag: str) -> Asset:
    """An asset updated by checkpoints carrying ``tag``: schedule a DAG on fresh pre-migration checkpoints."""
    return Asset(name=f"checkpoint/{tag}", uri=f"checkpoint://tag/{tag}")


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


class BundleOperator(BaseOperator):
    """Seal the artifacts of the capture tasks into one checkpoint, verify it, maybe mark it LKG.

    1. pull the capture tasks' XComs (skipped captures contribute nothing);
    2. seal exactly those artifacts (each must still be staged with the reported sha256);
    3. verify the sealed archive (every size and checksum);
    4. with ``mark_lkg``, move the last-known-good pointer (only after step 3 passed);
    steps 2 to 4 are :func:`core.create.seal_and_verify`;
    5. emit the ``checkpoint`` asset event (and one per tag) with the checkpoint id.

    :param capture_task_ids: tasks whose XComs hold the artifacts; default: every upstream task.
    :param tags: tags of the checkpoint (templated; list or comma-separated).
    :param pinned: protect the checkpoint from retention.
    :param mark_lkg: move the LKG pointer to this checkpoint once it verified.
    :param storage_root: store root URI; default ``[checkpoint] storage_root``.
    :param staging_key: as for the capture operators.
    :param deployment: ``{"config_files": [...], "env": [...], "packages": [...] or {name: spec}}``, added to
        ``[checkpoint] deployment_*``: the config files (by content), required environment variable
        names (set or not, never values) and dependency versions the config hash covers, one digest per
        key in the manifest's ``config_keys`` so a restore plan can list what changed (core/drift.py).
    """

    template_fields = ("tags", "pinned", "mark_lkg", "storage_root", "staging_key", "deployment")

    def __init__(
        self,
        *,
        capture_task_ids: list[str] | None = None,
        tags: list[str] | tuple[str, ...] | str = (),
        pinned: bool | str = False,
        mark_lkg: bool | str = False,
        storage_root: str | None = None,
        staging_key: str | None = None,
        deployment: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("outlets", [CHECKPOINT_ASSET, *(tag_asset(t) for t in split_list(tags) if "{" not in t)])
        super().__init__(**kwargs)
        self.capture_task_ids = capture_task_ids
        self.tags = tags
        self.pinned = pinned
        self.mark_lkg = mark_lkg
        self.storage_root = storage_root
        self.staging_key = staging_key
        self.deployment = deployment

    def execute(self, context: Context) -> dict[str, Any]:
        # 1. what the captures reported
        task_ids = self.capture_task_ids or sorted(self.upstream_task_ids)
        results = context["ti"].xcom_pull(task_ids=task_ids) or []
        if isinstance(results, dict):
            results = [results]
        captures = [r for r in results if r]
        expected = [a for r in captures for a in artifacts_from_xcom(r["artifacts"])]
        if not expected:
            raise CheckpointError(
                f"none of the capture tasks {task_ids} produced an artifact",
                hint="enable at least one component, and check the capture tasks' logs",
            )
        config: dict[str, Any] = {r["component"]: r["config"] for r in captures}
        wanted = drift.merge(settings.deployment(), as_dict(self.deployment))  # a dict, or JSON when not native
        if any(wanted.values()):
            config[drift.DEPLOYMENT] = drift.deployment_config(
                wanted["config_files"], wanted["env"], wanted["packages"]
            )
        # 2-4. seal, verify, maybe mark LKG (core/create.py, shared with `airflow-checkpoint create`)
        store = open_store(self.storage_root)
        staging = store.staging(run_staging_key(context, self.task_id, self.staging_key))
        tags = sorted(set(split_list(self.tags)))
        by = {k: v for k, v in provenance(context, self.task_id).items() if k in ("dag_id", "run_id", "task_id")}
        try:
            sealed = seal_and_verify(
                store,
                staging,
                expected=expected,
                config=config,
                tags=tags,
                pinned=_truthy(self.pinned),
                provenance={
                    **provenance(context, self.task_id),
                    "captured_on": {r["component"]: r["captured_on"] for r in captures if r.get("captured_on")},
                },
                by=by,
                mark_lkg=_truthy(self.mark_lkg),
                requires=settings.lkg_requires(),
                reason=f"verified by {context['dag'].dag_id} run {context['run_id']}",
                target_keys=[c["target_key"] for c in captures if c.get("target_key")],
            )
        except VerificationFailedError:
            metrics.verify_failures(1)
            raise
        manifest, cid, lkg = sealed.manifest, sealed.manifest.checkpoint_id, sealed.lkg
        metrics.sealed(store.get(cid).size, manifest.consistency()["skew_ms"])
        metrics.lkg_age(store)
        # 5. asset events
        extra: dict[str, Any] = {"checkpoint_id": cid, "tags": tags, "lkg": lkg}
        outlet_events = context.get("outlet_events")
        if outlet_events is not None:
            for outlet in self.outlets:
                if isinstance(outlet, Asset):
                    outlet_events[outlet].extra = extra
        return {
            "checkpoint_id": cid,
            "tags": tags,
            "pinned": manifest.pinned,
            "lkg": lkg,
            "lkg_refused": sealed.lkg_refused,
            "size": store.get(cid).size,
            "artifacts": [a.name for a in manifest.artifacts],
            "consistency": manifest.consistency(),
        }


class DiscardStagingOperator(BaseOperator):
    """Remove the run's staging area whatever happened upstream (``trigger_rule=all_done``).

    After a successful bundle it is already gone; after a failed capture it holds the
    artifacts of the captures that did succeed, which are useless without the others.
    """

    template_fields = ("storage_root", "staging_key")

    def __init__(self, *, storage_root: str | None = None, staging_key: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.storage_root = storage_root
        self.staging_key = staging_key

    def execute(self, context: Context) -> None:
        from airflow_checkpoint_provider import settings
        from airflow_checkpoint_provider.operators.heal import run_ended

        store = open_store(self.storage_root)
        key = run_staging_key(context, self.task_id, self.staging_key)
        if store.fs.exists(f"staging/{key}"):
            store.staging(key).discard()
            self.log.info("Discarded staging area %s", key)
        # housekeeping: the leftovers of runs that died (killed workers, cleared runs)
        for rel in store.cleanup(stale_after=settings.stale_staging_after(), is_dead=run_ended(context)):
            self.log.info("Removed %s, left by a run that ended without sealing", rel)
