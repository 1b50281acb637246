"""``airflow-checkpoint create``: take a checkpoint now, sealed and verified as the checkpoint DAGs do.

The recipe, each step the same code the DAG's tasks run:

1. find the servers (:mod:`.cli_conns`: Airflow connections, ``AIRFLOW_CONN_*`` or connection files);
2. per server, as each capture task does first: heal interrupted restores, wait while a restore
   holds it, drop leftovers (``CaptureOperator.before_capture``);
3. capture every store in parallel into one staging area (each engine's capture operator);
4. seal, verify, and mark it last-known-good (:func:`core.create.seal_and_verify`, as the bundle task);
   on any failure the staging area is removed: no half checkpoint remains.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from airflow_checkpoint_provider.cli import EXIT_OK, emit
from airflow_checkpoint_provider.core.store import Store

#: checkpoint types: the ready-made DAG each one stands for, and whether it is pinned
TYPES = {"scheduled": False, "pre-migration": True, "pre-deploy": False}


def capture_operator(component: str, conn_id: str | None, options: dict[str, Any] | None = None) -> Any:
    """The component's capture operator, configured as the ready-made DAGs configure it."""
    from airflow_checkpoint_provider import engines

    engine, cls = engines.engines()[component], engines.operator_class(component)
    return cls(
        task_id=f"cli_{cls.task_name}",
        **{engine.conn_param: conn_id or engines.default_conn_id(engine)},
        **{**cls.default_capture_options(), **(options or {})},
    )


def provenance(kind: str) -> dict[str, Any]:
    """Who took it: the command, its type, the user and host (no dag or run: Airflow took no part)."""
    from airflow_checkpoint_provider.version import __version__

    return {
        "cli": "create",
        "type": kind,
        "user": getpass.getuser(),
        "hostname": socket.gethostname(),
        "provider_version": __version__,
    }


def cmd_create(store: Store, args: argparse.Namespace) -> int:
    """Steps 1 to 4 of the module docstring."""
    from airflow_checkpoint_provider import cli_conns, settings
    from airflow_checkpoint_provider.core.create import seal_and_verify
    from airflow_checkpoint_provider.core.lease import this_process
    from airflow_checkpoint_provider.core.manifest import format_ts, utcnow
    from airflow_checkpoint_provider.core.staging import staging_key

    # 1. the servers
    servers = cli_conns.resolve(args)
    prov = provenance(args.type)
    staging = store.staging(staging_key("cli-create", format_ts(utcnow()), uuid.uuid4().hex[:8]))
    staging.claim({**prov, **this_process()})
    try:
        # 2. heal, wait for restores, drop leftovers
        options = cli_conns.name_options(args)
        ops = {name: capture_operator(name, s.conn_id, options.get(name)) for name, s in servers.items()}
        keys = [ops[name].before_capture(None, store, s.target) for name, s in servers.items()]
        # 3. capture in parallel (the smaller the window between stores, the more consistent)
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            futures = {name: pool.submit(ops[name].capture, staging, s.target) for name, s in servers.items()}
            artifacts = {name: f.result() for name, f in futures.items()}
        # 4. seal, verify, LKG
        sealed = seal_and_verify(
            store,
            staging,
            expected=[a for arts in artifacts.values() for a in arts],
            config={name: op.config() for name, op in ops.items()},
            tags=sorted({args.type, *(args.tag or [])}),
            pinned=TYPES[args.type] or args.pin,
            provenance=prov,
            by={"cli": "create"},
            mark_lkg=not args.no_lkg,
            requires=settings.lkg_requires(),
            reason=f"verified by airflow-checkpoint create ({args.type})",
            target_keys=keys,
        )
    except BaseException:
        staging.discard()
        raise
    manifest = sealed.manifest
    summary = {
        "checkpoint_id": manifest.checkpoint_id,
        "type": args.type,
        "tags": manifest.tags,
        "pinned": manifest.pinned,
        "components": {name: s.source for name, s in servers.items()},
        "artifacts": [a.name for a in manifest.artifacts],
        "size": manifest.total_size,
        "verified": sealed.result.ok,
        "lkg": sealed.lkg,
        "lkg_refused": sealed.lkg_refused,
        "consistency": manifest.consistency(),
    }
    lines = [
        f"created {manifest.checkpoint_id}: {len(manifest.artifacts)} artifact(s) of "
        f"{', '.join(servers)}, verified; skew between stores {summary['consistency']['skew_ms']} ms",
        "last-known-good: this checkpoint"
        if sealed.lkg
        else f"last-known-good: unchanged ({sealed.lkg_refused or 'not asked (--no-lkg)'})",
    ]
    emit(args, summary, lines)
    return EXIT_OK


def add_parser(sub: Any) -> None:
    from airflow_checkpoint_provider import cli_conns

    p = sub.add_parser(
        "create",
        help="take a checkpoint now (works with Airflow down), sealed, verified and marked LKG as the DAGs do",
    )
    p.add_argument("--type", choices=list(TYPES), default="scheduled", help="pre-migration ones are pinned")
    p.add_argument("--tag", action="append", help="a tag (repeat for more)")
    p.add_argument("--pin", action="store_true", help="protect it from retention")
    p.add_argument("--no-lkg", action="store_true", help="do not move the last-known-good pointer to it")
    p.add_argument("--json", action="store_true")
    cli_conns.add_arguments(p)
    cli_conns.add_name_arguments(p, "capture")
    p.set_defaults(func=cmd_create)
