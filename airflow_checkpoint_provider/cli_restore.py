"""``airflow-checkpoint restore ID|last-known-good``: the restore DAGs' side-by-side restore, from a shell.

The recipe:

1. resolve the id and find the servers of the stores it holds (or of ``--components``);
2. plan it (a dry run of :func:`core.recovery.restore`: the archive is verified, nothing changes);
3. unless ``--yes``, print the plan and ask for the checkpoint id to be typed on the terminal;
   with no terminal and no ``--yes`` it refuses, changing nothing;
4. finish or undo restores that were killed (as every restore task does first);
5. restore, as ``restore_checkpoint`` does: a safety checkpoint, each store loaded side by side and
   verified, then cut over keeping rollback copies, then the health check; an audit record of
   every outcome (refusals and failures too) goes into the store.

Airflow need not run: with the scheduler down nothing pauses the capture DAGs, so the restore
leases its servers (core/lease.py), which keeps any capture that overlaps it from becoming LKG.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from airflow_checkpoint_provider.cli import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, emit
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.store import Store


class NotConfirmedError(CheckpointError):
    """The restore was not confirmed (no terminal, or the typed id did not match): nothing changed."""


def confirm(cid: str, plan_text: str) -> None:
    """Print the plan and ask for ``cid`` to be typed; raise NotConfirmedError unless it is, exactly."""
    if not sys.stdin.isatty():
        raise NotConfirmedError(
            f"refusing to restore {cid} without confirmation: standard input is not a terminal",
            hint="run it on a terminal to type the id, or pass --yes to confirm on the command line; "
            "nothing was changed",
        )
    print(plan_text, file=sys.stderr)
    print(f"This replaces the live data with checkpoint {cid}.", file=sys.stderr)
    print(f"Type the checkpoint id ({cid}) to go on: ", end="", file=sys.stderr, flush=True)
    typed = sys.stdin.readline()  # the prompt and the plan are on stderr: stdout stays the output
    if typed.strip() != cid:
        raise NotConfirmedError(
            f"the typed id {typed.strip()!r} is not {cid!r}: restore cancelled",
            hint="nothing was changed; type the id exactly as shown to confirm",
        )


def cmd_restore(store: Store, args: argparse.Namespace) -> int:
    """Steps 1 to 5 of the module docstring."""
    import getpass
    import socket

    from airflow_checkpoint_provider import cli_conns, engines, settings
    from airflow_checkpoint_provider.core import recovery
    from airflow_checkpoint_provider.engines import build_restores
    from airflow_checkpoint_provider.operators.heal import heal
    from airflow_checkpoint_provider.operators.restore import restore_audited
    from airflow_checkpoint_provider.version import __version__

    # 1. the checkpoint and its servers
    cid = store.resolve(args.checkpoint_id)
    held = [name for name, e in engines.engines().items() if e.artifacts_of(store.get(cid).manifest.artifacts)]
    servers = cli_conns.resolve(args, held=held)
    options = engines.merge_options(
        {name: engines.operator_class(name).default_restore_options() for name in servers},
        cli_conns.name_options(args),
    )
    who = {"cli": "restore", "user": getpass.getuser(), "hostname": socket.gethostname()}

    def build(store: Store, manifest: Any, request: recovery.RestoreRequest) -> list[Any]:
        return build_restores(store, manifest, request, lambda name: servers[name].target, options)

    def request(dry_run: bool) -> recovery.RestoreRequest:
        return recovery.RestoreRequest(
            checkpoint_id=cid,
            components=tuple(servers),
            safety_checkpoint=not args.no_safety_checkpoint,
            dry_run=dry_run,
            provenance={**who, "provider_version": __version__},
            conn_ids={name: s.conn_id for name, s in servers.items() if s.conn_id},
            lease_ttl=settings.lease_ttl(),
            rollback_keep=settings.rollback_keep(),
            allow_drift=args.allow_drift,
            deployment=settings.deployment(),
        )

    audit = {
        "action": "restore-dry-run" if args.dry_run else "restore",
        "requested_checkpoint": args.checkpoint_id,
        "components": list(servers),
        "mode": "side_by_side",
        "allow_drift": args.allow_drift,
        **who,
        "targets": {name: s.source for name, s in servers.items()},
    }
    if args.dry_run:
        report = restore_audited(store, request(True), build, audit)
        emit(args, report.to_dict(), [report.plan.describe(), "dry run: nothing was changed"])
        return EXIT_OK
    # 2-3. the plan, confirmed by the typed id
    if not args.yes:
        confirm(cid, recovery.restore(store, request(True), build).plan.describe())
    # 4. heal what killed restores left, then 5. restore
    heal(store, None)
    report = restore_audited(store, request(False), build, audit)
    lines = [report.plan.describe()]
    lines += [f"{o.component}: restored {o.restored}; rollback copies: {o.rollback}" for o in report.outcomes]
    lines += [f"health: {h}" for h in report.health]
    if report.safety_checkpoint_id:
        lines.append(f"safety checkpoint of the state before: {report.safety_checkpoint_id}")
    lines.append(f"restored {cid}: {'healthy' if report.healthy else 'UNHEALTHY (see the health lines)'}")
    emit(args, report.to_dict(), lines)
    return EXIT_OK if report.healthy else EXIT_PROBLEMS


def add_parser(sub: Any) -> None:
    from airflow_checkpoint_provider import cli_conns

    p = sub.add_parser(
        "restore",
        help="restore a checkpoint side by side, verify, then cut over (works with Airflow down)",
    )
    p.add_argument("checkpoint_id", help="a checkpoint id, or last-known-good")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--yes", action="store_true", help="confirmed: do not ask for the id to be typed")
    p.add_argument(
        "--no-safety-checkpoint", action="store_true", help="do not checkpoint the current state before replacing it"
    )
    p.add_argument(
        "--allow-drift",
        action="store_true",
        help="record the plan's drift (schema, mappings, config) as accepted notes instead of warnings",
    )
    p.add_argument("--json", action="store_true")
    cli_conns.add_arguments(p)
    cli_conns.add_name_arguments(p, "restore")
    p.set_defaults(func=cmd_restore)


__all__ = ["EXIT_USAGE", "NotConfirmedError", "add_parser", "cmd_restore", "confirm"]
