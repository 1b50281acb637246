"""Trigger-form Params shared by the ready-made DAGs, and how they feed the tasks.

Every field a user may leave empty is nullable (``type=["null", ...]``, default None): the
Airflow 3 trigger form treats a non-nullable field whose value is empty as missing and
greys out the Trigger button. Every field has a title and a description.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from airflow_checkpoint_provider import engines, settings


def components_param(verb: str) -> Param:
    """A multi-select of the stores (the form renders an array with ``examples`` as one)."""
    names = list(engines.names())
    labels = {name: engine.title for name, engine in engines.engines().items()}
    return Param(
        names,
        type="array",
        items={"type": "string", "enum": names},
        examples=names,
        values_display=labels,
        minItems=1,
        uniqueItems=True,
        title="Components",
        description=f"Which stores to {verb}.",
    )


def optional_text(title: str, description: str, default: str | None = None) -> Param:
    return Param(default, type=["null", "string"], title=title, description=description)


def optional_list(title: str, description: str) -> Param:
    """A nullable list of strings (one per line in the form)."""
    return Param(None, type=["null", "array"], items={"type": "string"}, title=title, description=description)


def capture_params(*, mark_lkg: bool = True) -> dict[str, Param]:
    """The capture DAGs' form: the components, each engine's own fields, LKG, the connections."""
    out: dict[str, Param] = {"components": components_param("capture")}
    for name in engines.names():
        out.update(engines.operator_class(name).capture_params())
    out["mark_lkg"] = Param(
        mark_lkg,
        type="boolean",
        title="Mark last-known-good",
        description="Move the LKG pointer to this checkpoint once it verified.",
    )
    return {**out, **connection_params()}


def connection_params(prefix: str = "") -> dict[str, Param]:
    """One connection id per engine, defaulting to the ``[checkpoint]`` options."""
    where = "to restore into" if prefix else "to checkpoint"
    out = {}
    for engine in engines.engines().values():
        out[engine.conn_param] = Param(
            engines.default_conn_id(engine),
            type="string",
            minLength=1,
            title=f"{prefix}{engine.title} connection id",
            description=f"Airflow connection (type {' or '.join(engine.conn_types)}) of the {engine.title} server "
            f"{where}. Default: [checkpoint] {engine.conn_param}.",
        )
    return out


def restore_params(*, chosen: bool = False) -> dict[str, Param]:
    """Params of the restore DAGs (``chosen``: restore_checkpoint's, where subsets can be picked)."""
    out: dict[str, Param] = {
        "components": components_param("restore"),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Only print the plan: what would be replaced and the conflicts. Changes "
            "nothing, drains nothing; a plan with problems still fails the run.",
        ),
        "safety_checkpoint": Param(
            True,
            type="boolean",
            title="Safety checkpoint",
            description="Checkpoint the current state before replacing it.",
        ),
        "allow_drift": Param(
            False,
            type="boolean",
            title="Allow drift",
            description="Accept the changes since the checkpoint that the restore undoes (tables, columns, "
            "index mappings, config keys): the plan lists them as warnings, or as accepted notes recorded in "
            "the audit when this is on. Drift never blocks; this never overrides an engine version refusal.",
        ),
        "pause_capture_dags": Param(
            True,
            type="boolean",
            title="Pause the capture DAGs",
            description="Pause checkpoint_scheduled, checkpoint_pre_migration and checkpoint_pre_deploy during "
            "the restore, so no checkpoint of a half-restored state is taken, and unpause them "
            "afterwards (also when the restore fails). A DAG that was already paused stays paused.",
        ),
        "pause_dags": optional_list(
            "Other DAGs to pause", "More DAG ids (one per line) paused during the restore and unpaused after it."
        ),
    }
    for name in engines.names():
        out.update(engines.operator_class(name).restore_params(chosen=chosen))
    return {**out, **connection_params("Target ")}


def group_kwargs_from_params() -> dict[str, Any]:
    """Task-group arguments templated on the capture Params (the DAG renders native objects)."""
    return {
        "conn_ids": {e.name: "{{ params.%s }}" % e.conn_param for e in engines.engines().values()},
        "options": {name: engines.operator_class(name).capture_kwargs() for name in engines.names()},
        "mark_lkg": "{{ params.mark_lkg }}",
        "enabled": {c: "{{ '%s' in params.components }}" % c for c in engines.names()},
        "queues": settings.capture_queues(),
    }


def restore_kwargs_from_params(*, chosen: bool = False) -> dict[str, Any]:
    """RestoreOperator arguments templated on :func:`restore_params`."""
    return {
        "components": "{{ params.components }}",
        "conn_ids": {e.name: "{{ params.%s }}" % e.conn_param for e in engines.engines().values()},
        "options": {name: engines.operator_class(name).restore_options(chosen=chosen) for name in engines.names()},
        "dry_run": "{{ params.dry_run }}",
        "safety_checkpoint": "{{ params.safety_checkpoint }}",
        "allow_drift": "{{ params.allow_drift }}",
    }


def health_kwargs_from_params() -> dict[str, Any]:
    """HealthCheckSensor arguments templated on :func:`restore_params`."""
    return {
        "components": "{{ params.components }}",
        "conn_ids": {e.name: "{{ params.%s }}" % e.conn_param for e in engines.engines().values()},
    }
