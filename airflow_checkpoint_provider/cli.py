"""``airflow-checkpoint``: break-glass commands over the store. Works when Airflow is down.

Commands::

    airflow-checkpoint create [--type scheduled|pre-migration|pre-deploy] [--tag T] [--components C ...]
    airflow-checkpoint restore ID|last-known-good [--components C ...] [--dry-run] [--yes]
    airflow-checkpoint status
    airflow-checkpoint list [--tag T] [--json]
    airflow-checkpoint show ID|last-known-good [--manifest|--json]
    airflow-checkpoint verify ID|last-known-good|--all [--level basic|standard|deep] [--json]
    airflow-checkpoint lkg [show|history|set ID]
    airflow-checkpoint delete ID [--force]
    airflow-checkpoint expire [--execute] [--policy JSON] [--json]
    airflow-checkpoint cleanup [--dry-run]
    airflow-checkpoint recover-interrupted [--dry-run]
    airflow-checkpoint plan ID|last-known-good [--allow-drift] [--json]
    airflow-checkpoint rollbacks list|drop [NAME...] [--keep-last N] [--older-than S] [--execute]
    airflow-checkpoint audit [--json]
    airflow-checkpoint rekey [--old-key-file P] --new-key-file P [--dry-run] [--json]
    airflow-checkpoint workflow list|show|history|reset|expire ...

``--root`` (or ``AIRFLOW__CHECKPOINT__STORAGE_ROOT``) selects the store.

Exit codes: 0 success; 1 verification found problems (or ``list`` found damaged
entries, or a restore ended unhealthy); 2 bad usage, unknown checkpoint, or a restore not
confirmed; 3 the store cannot be used (missing, unwritable, full, locked); 4 a capture or
restore failed or was refused (the message says what state things are in). With ``--json``
an error is one JSON document on stdout: ``{"error": {"type", "message", "hint"}, "exit_code"}``. Text read from the store is printed escaped: a tag or a
reason holding a newline or another control character cannot forge an output line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
)
from airflow_checkpoint_provider.core.store import Store

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_STORE, EXIT_FAILED = 0, 1, 2, 3, 4


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def emit(args: argparse.Namespace, document: Any, lines: list[str]) -> None:
    """Print ``document`` as the one JSON document of ``--json``, else ``lines`` (escaped)."""
    if getattr(args, "json", False):
        _print_json(document)
        return
    for line in lines:
        print(_safe(line))


def _safe(value: Any) -> str:
    """``value`` as text with every non-printable character escaped (``\\n``, ``\\x1b``, ...)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def cmd_list(store: Store, args: argparse.Namespace) -> int:
    infos, damaged = store.scan(tag=args.tag)
    lkg = store.lkg()
    lkg_id = lkg.checkpoint_id if lkg else None
    for d in damaged:
        print(f"warning: checkpoint {_safe(d.checkpoint_id)} is damaged: {_safe(d.problem)}", file=sys.stderr)
    code = EXIT_PROBLEMS if damaged else EXIT_OK
    states = {i.checkpoint_id: store.state_of(i) for i in infos}
    if args.json:
        _print_json(
            [
                dict(
                    i.to_dict(),
                    lkg=i.checkpoint_id == lkg_id,
                    state=states[i.checkpoint_id].to_dict(),
                    total_size=i.size + (states[i.checkpoint_id].snapshot_bytes or 0),
                )
                for i in infos
            ]
        )
        return code
    if not infos and not damaged:
        print(f"no checkpoints in {store.root}" + (f" tagged {_safe(args.tag)!r}" if args.tag else ""))
        return EXIT_OK
    print(f"{'CHECKPOINT':<32} {'CREATED (UTC)':<20} {'SIZE':>10}  {'STATE':<18} {'STORES':<24} TAGS")
    for i in infos:
        mark = " [LKG]" if i.checkpoint_id == lkg_id else ""
        pin = " [pinned]" if i.pinned else ""
        state = states[i.checkpoint_id]
        print(
            f"{i.checkpoint_id:<32} {i.created_at[:19].replace('T', ' '):<20} "
            f"{_human_size(i.size + (state.snapshot_bytes or 0)):>10}  {state.label:<18} "
            f"{_safe(','.join(sorted(i.manifest.stores()))):<24} {_safe(','.join(i.tags))}{mark}{pin}"
        )
    for d in damaged:
        print(f"{_safe(d.checkpoint_id):<32} DAMAGED: {_safe(d.problem)}")
    return code


def cmd_show(store: Store, args: argparse.Namespace) -> int:
    info = store.get(args.checkpoint_id)
    if args.manifest:
        sys.stdout.write(info.manifest.to_bytes().decode())
        return EXIT_OK
    from airflow_checkpoint_provider.cli_lifecycle import show_history

    return show_history(store, info, as_json=args.json)


def cmd_lkg(store: Store, args: argparse.Namespace) -> int:
    if args.action == "set":
        if not args.checkpoint_id:
            print("lkg set: give the checkpoint id", file=sys.stderr)
            return EXIT_USAGE
        from airflow_checkpoint_provider import settings

        pointer = store.mark_lkg(
            args.checkpoint_id,
            reason=args.reason or "set by airflow-checkpoint lkg set",
            requires=settings.lkg_requires(),
            by={"cli": "lkg set"},
        )
        emit(args, pointer.to_dict(), [f"last-known-good: {pointer.checkpoint_id} (was {pointer.previous or 'unset'})"])
        return EXIT_OK
    if args.action == "history":
        history = store.lkg_history()
        if args.json:
            _print_json([p.to_dict() for p in history])
        for p in [] if args.json else history:
            print(f"{p.set_at}  {p.checkpoint_id}  (previous: {p.previous or '-'}) {_safe(p.reason)}")
        return EXIT_OK
    current = store.lkg()
    if args.json:
        _print_json(current.to_dict() if current else None)
    elif current is None:
        print(f"no last-known-good checkpoint in {store.root}")
    else:
        print(
            f"last-known-good: {current.checkpoint_id}\n  set at:   {current.set_at}\n"
            f"  previous: {current.previous or '-'}\n  reason:   {_safe(current.reason or '-')}"
        )
    return EXIT_OK


def cmd_delete(store: Store, args: argparse.Namespace) -> int:
    from airflow_checkpoint_provider.cli_lifecycle import expire_targets

    pending = store.delete(args.checkpoint_id, force=args.force, targets=expire_targets(args))
    print(f"deleted {args.checkpoint_id}")
    for line in pending:
        print(f"  left for the next `airflow-checkpoint expire --execute`: {_safe(line)}")
    return EXIT_OK


def cmd_cleanup(store: Store, args: argparse.Namespace) -> int:
    from airflow_checkpoint_provider import settings

    removed = store.cleanup(stale_after=settings.stale_staging_after(), dry_run=args.dry_run)
    if not args.store_only:
        from airflow_checkpoint_provider.core import leftovers

        for component, target in _targets(args).items():
            try:
                removed += leftovers.drop(
                    component, target, store, dry_run=args.dry_run, **_leftover_options(component)
                )
            except CheckpointError as exc:
                print(f"{component}: cannot look for leftovers: {exc}", file=sys.stderr)
    verb = "would remove" if args.dry_run else "removed"
    for rel in removed:
        print(f"{verb} {_safe(rel)}")
    print(f"{len(removed)} leftover(s) {'found (dry run: nothing removed)' if args.dry_run else 'removed'}")
    return EXIT_OK


def cmd_recover_interrupted(store: Store, args: argparse.Namespace) -> int:
    """Finish or undo the cut-overs of restores that were killed (see core/replay.py)."""
    from airflow_checkpoint_provider.core.replay import interrupted, replay_interrupted

    pending = interrupted(store)
    if not pending:
        print(f"no interrupted restore in {store.root}")
        return EXIT_OK
    if args.dry_run:
        for j in pending:
            for name, entry in j.components.items():
                policy = "finish (the copies had verified)" if entry.roll_forward else "undo"
                print(
                    f"{j.restore_id} of {j.checkpoint_id} ({j.owner.get('dag_id') or 'no DAG'}): {name} stopped "
                    f"in phase {entry.phase} with {len(entry.pending())} pending step(s): would {policy}"
                )
        return EXIT_OK
    overrides = _conn_ids(args)

    def resolve(component: str, public: dict[str, Any]) -> Any:
        from airflow_checkpoint_provider.operators.heal import resolve_target

        return resolve_target(component, {**public, "conn_id": overrides.get(component) or public.get("conn_id")})

    failed = 0
    for rep in replay_interrupted(store, resolve):
        if rep.error:
            failed += 1
            print(f"{rep.restore_id} of {rep.checkpoint_id}: FAILED: {rep.error}")
            continue
        print(f"{rep.restore_id} of {rep.checkpoint_id}: recovered")
        for name, actions in rep.actions.items():
            for line in actions or ["nothing left to do"]:
                print(f"  {name}: {line}")
    return EXIT_PROBLEMS if failed else EXIT_OK


def cmd_audit(store: Store, args: argparse.Namespace) -> int:
    records = store.audit_log()
    if args.json:
        _print_json(records)
        return EXIT_OK
    if not records:
        print(f"no restores recorded in {store.root}")
    for r in records:
        health = r.get("health", {}).get("ok")
        health_text = "-" if health is None else ("healthy" if health else "UNHEALTHY")
        print(
            _safe(
                f"{str(r.get('recorded_at', ''))[:19].replace('T', ' ')}  {r.get('status', ''):<9} "
                f"{r.get('checkpoint_id') or r.get('requested_checkpoint', ''):<30} "
                f"{','.join(map(str, r.get('components', []))):<22} {health_text:<9} "
                f"{r.get('dag_id', '')}/{r.get('run_id', '')}"
            )
        )
        if r.get("error"):
            print(f"    error: {_safe(str(r['error']).splitlines()[0])}")
    return EXIT_OK


def _conn_ids(args: argparse.Namespace) -> dict[str, str | None]:
    """The connection id per engine that the command line names (``--postgres-conn-id`` ...)."""
    from airflow_checkpoint_provider.core.engines import registry

    return {name: getattr(args, engine.conn_param, None) for name, engine in registry.engines().items()}


def _targets(args: argparse.Namespace) -> dict[str, Any]:
    """The live servers to look at, from Airflow connections (default: the ``[checkpoint]`` ids)."""
    from airflow_checkpoint_provider import engines

    only = set(args.component or engines.names())
    out = {}
    for component, conn_id in _conn_ids(args).items():
        if component not in only:
            continue
        conn_id = conn_id or engines.default_conn_id(engines.engines()[component])
        try:
            out[component] = engines.target(component, conn_id)
        except Exception as exc:
            print(f"{component}: connection {conn_id!r} cannot be used: {str(exc).splitlines()[0]}", file=sys.stderr)
    return out


def _leftover_options(component: str) -> dict[str, Any]:
    """What the engine's leftovers need besides the target, as its capture operator says (the
    search repository, the age of orphan snapshots)."""
    from airflow_checkpoint_provider import engines

    return engines.operator_class(component).default_leftover_options()


def cmd_rollbacks(store: Store, args: argparse.Namespace) -> int:
    """List rollback copies in the live stores, or drop them (a dry run unless --execute)."""
    from airflow_checkpoint_provider.core import rollbacks
    from airflow_checkpoint_provider.core.lease import live_holders, target_key

    rows: list[tuple[Any, Any]] = []
    for component, target in _targets(args).items():
        rows += [(c, target) for c in rollbacks.list_copies(component, target, store)]
    if args.action == "list":
        if args.json:
            _print_json([c.to_dict() for c, _ in rows])
            return EXIT_OK
        if not rows:
            print("no rollback copies")
        for c, _ in rows:
            size = _human_size(c.size) if c.size is not None else "-"
            print(
                f"{c.component:<9} {_safe(c.name):<64} of {_safe(c.of):<28} {c.created_at[:19].replace('T', ' ')} "
                f"({c.age / 3600:.1f} h) {size:>10}"
            )
        return EXIT_OK
    policy = rollbacks.RollbackPolicy(args.keep_last, args.older_than)
    names = set(args.names)
    doomed = (
        [(c, t) for c, t in rows if c.name in names]
        if names
        else [(c, t) for c, t in rows if c in policy.expired([r for r, _ in rows])]
    )
    if names - {c.name for c, _ in doomed}:
        print(f"error: not a rollback copy: {', '.join(sorted(names - {c.name for c, _ in doomed}))}", file=sys.stderr)
        return EXIT_USAGE
    for c, target in doomed:
        busy = live_holders(store.fs, [target_key(c.component, target.public())])
        if busy:
            print(f"skipped {c.component} {_safe(c.name)}: restore {busy[0].holder} is running on that server")
            continue
        if args.execute:
            rollbacks.drop_copy(c.component, target, c.name, store)
        print(
            f"{'dropped' if args.execute else 'would drop'} {c.component} {_safe(c.name)} "
            f"(copy of {_safe(c.of)}, {c.age / 3600:.1f} h old)"
        )
    if not args.execute and doomed:
        print("dry run: nothing was dropped; add --execute to drop them")
    return EXIT_OK


#: True while the parser of a store-only command is built: the engine options are left out, so that
#: no engine (nor its client libraries) is imported for ``list`` and the like
_light = False


def engine_arguments() -> bool:
    """Whether the parser being built takes the engines' options (see :data:`_light`)."""
    return not _light


def _conn_arguments(p: argparse.ArgumentParser, when: str = "default: the [checkpoint] option") -> None:
    from airflow_checkpoint_provider.core.engines import registry

    if _light:
        return
    for engine in registry.engines().values():
        p.add_argument(
            f"--{engine.conn_param.replace('_', '-')}",
            dest=engine.conn_param,
            help=f"Airflow connection of the {engine.title} server ({when})",
        )


def _component_arguments(p: argparse.ArgumentParser, *, conns: bool = True) -> None:
    from airflow_checkpoint_provider.core.engines import registry

    if _light:
        return
    p.add_argument("--component", action="append", choices=list(registry.names()))
    if conns:
        _conn_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-checkpoint",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", help="store root (default: [checkpoint] storage_root)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress lines (on stderr)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list complete checkpoints, newest first")
    p.add_argument("--tag")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "show", help="a checkpoint's state and the history of its verifications and drills, then its manifest"
    )
    p.add_argument("checkpoint_id")
    p.add_argument("--manifest", action="store_true", help="print only the manifest (JSON)")
    p.add_argument("--json", action="store_true", help="state, history and manifest as one JSON object")
    p.set_defaults(func=cmd_show)

    from airflow_checkpoint_provider import cli_create, cli_lifecycle, cli_restore, cli_status

    cli_create.add_parser(sub)
    cli_restore.add_parser(sub)
    cli_status.add_parser(sub)
    cli_lifecycle.add_verify_parser(sub)
    from airflow_checkpoint_provider import cli_rekey

    cli_rekey.add_parser(sub)

    p = sub.add_parser("lkg", help="show or move the last-known-good pointer")
    p.add_argument("action", nargs="?", choices=["show", "history", "set"], default="show")
    p.add_argument("checkpoint_id", nargs="?")
    p.add_argument("--reason")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lkg)

    p = sub.add_parser(
        "delete", help="delete a checkpoint with its search snapshot (never the LKG; pinned ones need --force)"
    )
    p.add_argument("checkpoint_id")
    p.add_argument("--force", action="store_true")
    p.add_argument("--no-servers", action="store_true", help="only the store; the snapshot waits for a later run")
    _component_arguments(p)
    p.set_defaults(func=cmd_delete)
    cli_lifecycle.add_expire_parser(sub)
    from airflow_checkpoint_provider.cli_plan import add_plan_parser

    add_plan_parser(sub)

    p = sub.add_parser(
        "cleanup", help="remove leftovers of crashed or abandoned writers, in the store and in the live servers"
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.add_argument("--store-only", action="store_true", help="only the store (no server connections)")
    _component_arguments(p)
    p.set_defaults(func=cmd_cleanup)

    p = sub.add_parser(
        "recover-interrupted", help="finish or undo the cut-over of restores that were killed (from their journals)"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
    _conn_arguments(p, "if the journal records none or it changed")
    p.set_defaults(func=cmd_recover_interrupted)

    p = sub.add_parser("rollbacks", help="rollback copies kept in the live stores: list, or drop (dry run first)")
    p.add_argument("action", choices=["list", "drop"])
    p.add_argument("names", nargs="*", help="drop: these copies (default: those the policy options select)")
    _component_arguments(p, conns=False)
    p.add_argument("--keep-last", type=int, help="drop: keep the newest N copies of each original")
    p.add_argument("--older-than", type=float, help="drop: copies older than this many seconds")
    p.add_argument("--execute", action="store_true", help="drop: really drop (default: only say what would go)")
    p.add_argument("--json", action="store_true")
    _conn_arguments(p)
    p.set_defaults(func=cmd_rollbacks)

    p = sub.add_parser("audit", help="the restore audit trail: when, which run, which checkpoint, health")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)

    # workflow checkpoints: list, show, history, reset, expire (airflow_checkpoint_provider/workflow/cli.py)
    from airflow_checkpoint_provider.workflow.cli import add_parser as add_workflow_parser

    add_workflow_parser(sub)
    from airflow_checkpoint_provider.cli_output import add_json_flags

    add_json_flags(parser)
    return parser


def _store_kwargs(root: str) -> dict[str, Any]:
    """S3 options and the cipher, only when the store needs them (they import boto3, Airflow)."""
    from airflow_checkpoint_provider import settings

    if not (root.startswith("s3://") or settings.encryption_key_sources()):
        return {}
    from airflow_checkpoint_provider.hooks.storage import store_kwargs

    return store_kwargs(root)


def main(argv: list[str] | None = None) -> int:
    global _light
    from airflow_checkpoint_provider import cli_output as out

    argv = sys.argv[1:] if argv is None else list(argv)
    _light = out.command_of(argv) in out.STORE_ONLY
    try:
        args = build_parser().parse_args(argv)
    finally:
        _light = False
    from airflow_checkpoint_provider import cli_progress, settings
    from airflow_checkpoint_provider.core import progress

    out.logs_to_stderr(args.verbose, args.command)
    root = args.root or settings.storage_root()
    try:
        store = Store.open(
            root, create=args.command == "create", lock_timeout=settings.lock_timeout(), **_store_kwargs(root)
        )
        with progress.listening(cli_progress.Bars() if cli_progress.wanted(args) else None):
            if args.json and out.command(args) not in out.NATIVE_JSON:
                return out.as_json(store, args)
            return args.func(store, args)
    except CheckpointError as exc:
        return out.fail(args, exc, out.exit_code(exc))
    except BrokenPipeError:  # the reader went away (``| head``): nothing more to say
        sys.stdout = open(os.devnull, "w")  # so that the interpreter's final flush stays quiet
        return EXIT_OK
    except KeyboardInterrupt:
        return out.fail(args, CheckpointError("interrupted", hint="see the log for what was left"), EXIT_FAILED)
    except Exception as exc:  # a server or library error the engines did not wrap: still one clear line
        if args.verbose:
            raise
        error = CheckpointError(f"{type(exc).__name__}: {exc}", hint="run again with --verbose for the traceback")
        return out.fail(args, error, EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
