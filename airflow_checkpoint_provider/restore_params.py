"""Trigger-form Params shared by the restore DAGs."""

from __future__ import annotations

from airflow.sdk import Param

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.dag_params import connection_params
from airflow_checkpoint_provider.task_groups import COMPONENTS


def restore_params() -> dict[str, Param]:
    return {
        "components": Param(list(COMPONENTS), type="array", items={"type": "string", "enum": list(COMPONENTS)},
                            title="Components", description="Which stores to restore."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Only print the plan: what would be replaced and the conflicts. Changes nothing."),
        "safety_checkpoint": Param(True, type="boolean", title="Safety checkpoint",
                                   description="Checkpoint the current state before replacing it."),
        **connection_params("Target "),
    }


def recent_checkpoint_ids(limit: int = 50) -> list[str]:
    """Newest checkpoint ids for the trigger form's suggestions: file names only, cheap at parse time."""
    try:
        from airflow_checkpoint_provider.core.store import Store

        store = Store.open(settings.storage_root())
        names = store.fs.listdir("checkpoints")
    except Exception:  # noqa: BLE001 - no store yet: no suggestions, the field stays free text
        return []
    ids = sorted((n[: -len(".manifest.json")] for n in names if n.endswith(".manifest.json")), reverse=True)
    return ids[:limit]
