"""``airflow-checkpoint plan``: the restore plan of a checkpoint, drift included; changes nothing.

Kept apart from :mod:`.cli` (which registers it) so that each stays a readable size.
"""

from __future__ import annotations

import argparse
from typing import Any

from airflow_checkpoint_provider.cli import (
    EXIT_OK,
    EXIT_PROBLEMS,
    _component_arguments,
    _print_json,
    _safe,
    _targets,
)
from airflow_checkpoint_provider.core.store import Store


def cmd_plan(store: Store, args: argparse.Namespace) -> int:
    """A dry-run restore: what would be replaced, the conflicts, the drift since the checkpoint
    (``--allow-drift``: as accepted notes) and the problems that refuse it (exit 1)."""
    from airflow_checkpoint_provider import engines, settings
    from airflow_checkpoint_provider.core import recovery

    targets = _targets(args)
    request = recovery.RestoreRequest(
        checkpoint_id=args.checkpoint_id,
        components=tuple(targets),
        dry_run=True,
        allow_drift=args.allow_drift,
        deployment=settings.deployment(),
    )

    def build(store_: Store, manifest: Any, req: recovery.RestoreRequest) -> list[Any]:
        return engines.build_restores(store_, manifest, req, targets.__getitem__)

    try:
        report = recovery.restore(store, request, build)
    except recovery.RestoreRefusedError as exc:
        if args.json:
            _print_json({"ok": False, "error": exc.message, "plan": exc.plan.to_dict() if exc.plan else None})
        else:
            print(_safe(str(exc)))
        return EXIT_PROBLEMS
    if args.json:
        _print_json(report.plan.to_dict())
    else:
        for line in report.plan.describe().splitlines():
            print(_safe(line))
        if report.plan.drift and not report.plan.drift_accepted:
            print("the restore would undo the DRIFT lines; --allow-drift records them as accepted")
    return EXIT_OK


def add_plan_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan", help="the restore plan of a checkpoint against the live servers, drift included; changes nothing"
    )
    p.add_argument("checkpoint_id", help="a checkpoint id or last-known-good")
    p.add_argument("--allow-drift", action="store_true", help="list the drift as accepted notes, not warnings")
    p.add_argument("--json", action="store_true")
    _component_arguments(p)
    p.set_defaults(func=cmd_plan)
