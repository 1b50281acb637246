"""``airflow-checkpoint workflow ...``: workflow checkpoints from the command line.

::

    airflow-checkpoint workflow list [--json]
    airflow-checkpoint workflow show ID [--seq N | --step S] [--state [--output FILE]] [--json]
    airflow-checkpoint workflow history ID [--verify] [--json]
    airflow-checkpoint workflow reset ID [--execute]
    airflow-checkpoint workflow expire [--older-than DAYS] [--task-state] [--dry-run]

The file store under ``--root`` is read without Airflow; ``--postgres-conn-id ID`` (and
``--table``) selects the PostgreSQL store, through an Airflow connection. ``reset`` is a dry run
unless ``--execute``; it and ``expire`` take the workflow's lock, so they never race a running task.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from typing import Any

from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.core.workflow import (
    FileWorkflowStore,
    WorkflowStore,
    expire,
)
from airflow_checkpoint_provider.core.workflow.errors import StateDamagedError
from airflow_checkpoint_provider.core.workflow.records import DEFAULT_TABLE

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _safe(value: Any) -> str:
    from airflow_checkpoint_provider.cli import _safe as safe

    return safe(value)


def _store(store: Store, args: argparse.Namespace) -> WorkflowStore:
    if args.postgres_conn_id:
        from airflow_checkpoint_provider.workflow.task import open_store

        return open_store(postgres_conn_id=args.postgres_conn_id, table=args.table)
    return FileWorkflowStore(store)


def _step(text: str) -> int | str:
    """``2025`` is the int step 2025; ``'"2025"'`` the string; any other word is a string."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else text


def cmd_list(store: Store, args: argparse.Namespace) -> int:
    infos = _store(store, args).workflows()
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=2, sort_keys=True))
        return EXIT_OK
    if not infos:
        print("no workflow checkpoints")
        return EXIT_OK
    print(f"{'WORKFLOW':<48} {'STATUS':<10} {'STATES':>6}  {'LATEST STEP':<16} {'UPDATED (UTC)':<20} {'SIZE':>10}")
    for i in infos:
        print(
            f"{_safe(i.workflow_id):<48} {_safe(i.status):<10} {i.states:>6}  {_safe(i.latest_step):<16} "
            f"{i.updated_at[:19].replace('T', ' '):<20} {i.size:>10}"
        )
    return EXIT_OK


def cmd_history(store: Store, args: argparse.Namespace) -> int:
    wstore = _store(store, args)
    entries = wstore.entries(args.workflow_id)
    if not entries:
        print(f"error: no saved state of workflow {_safe(args.workflow_id)!r} in {wstore.location}", file=sys.stderr)
        return EXIT_USAGE
    rows, bad = [], 0
    for e in entries:
        row = e.to_dict()
        if args.verify and e.header is not None and not e.damaged:
            try:
                wstore.load(args.workflow_id, e.seq).state()
            except StateDamagedError as exc:
                row.update(problem=exc.message, damaged=True)
        bad += bool(row["damaged"])
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return EXIT_PROBLEMS if bad else EXIT_OK
    print(
        f"{'SEQ':>6} {'STEP':<16} {'PARENT':>6} {'SAVED (UTC)':<20} {'SIZE':>10} {'RAW':>10}  DATA CHECKPOINT / PROBLEM"
    )
    for r in rows:
        tail = f"DAMAGED: {_safe(r['problem'])}" if r["damaged"] else (r.get("data_checkpoint") or "-")
        print(
            f"{r['seq']:>6} {_safe(r.get('step', '?')):<16} {_safe(r.get('parent') or '-'):>6} "
            f"{str(r.get('saved_at', ''))[:19].replace('T', ' '):<20} {r.get('size', 0):>10} "
            f"{r.get('raw_size', 0):>10}  {tail}"
        )
    return EXIT_PROBLEMS if bad else EXIT_OK


def cmd_show(store: Store, args: argparse.Namespace) -> int:
    wstore = _store(store, args)
    entries = [e for e in wstore.entries(args.workflow_id) if e.header is not None and not e.damaged]
    if args.seq is not None:
        entries = [e for e in entries if e.seq == args.seq]
    elif args.step is not None:
        want = json.dumps(_step(args.step))
        entries = [e for e in entries if e.header is not None and json.dumps(e.header.step) == want]
    if not entries:
        print(
            f"error: no such saved state of workflow {_safe(args.workflow_id)!r} in {wstore.location}", file=sys.stderr
        )
        return EXIT_USAGE
    record = wstore.load(args.workflow_id, entries[0].seq)
    state = record.state()  # checks size and sha256 first
    header = {**record.header.to_dict(), "verified": True}
    if not args.state:
        print(json.dumps(header, indent=2, sort_keys=True))
        return EXIT_OK
    if isinstance(state, bytes) or args.output:
        if not args.output:
            print("error: the state is bytes: write it with --output FILE", file=sys.stderr)
            return EXIT_USAGE
        with open(args.output, "wb") as f:
            f.write(state if isinstance(state, bytes) else json.dumps(state).encode())
        print(f"wrote the state of step {_safe(record.header.step)} ({record.header.raw_size} bytes) to {args.output}")
        return EXIT_OK
    print(json.dumps(state, indent=2, sort_keys=True) if args.json else json.dumps(state))
    return EXIT_OK


def cmd_reset(store: Store, args: argparse.Namespace) -> int:
    wstore = _store(store, args)
    entries = wstore.entries(args.workflow_id)
    if not entries:
        print(f"no saved state of workflow {_safe(args.workflow_id)!r} in {wstore.location}")
        return EXIT_OK
    if not args.execute:
        print(f"would delete {len(entries)} state(s) of workflow {_safe(args.workflow_id)!r}; add --execute to do it")
        return EXIT_OK
    session = wstore.session(args.workflow_id, timeout=0, owner={"reason": "airflow-checkpoint workflow reset"})
    try:
        n = session.reset()
    finally:
        session.close()
    print(f"deleted {n} state(s) of workflow {_safe(args.workflow_id)!r}: its next run starts from the first step")
    return EXIT_OK


def cmd_expire(store: Store, args: argparse.Namespace) -> int:
    from airflow_checkpoint_provider import settings

    days = settings.workflow_retention_days() if args.older_than is None else args.older_than
    verb = "would expire" if args.dry_run else "expired"
    done = expire(_store(store, args), older_than=timedelta(days=days), dry_run=args.dry_run)
    for item in done:
        info = item.workflow
        if item.skipped:
            print(f"skipped {_safe(info.workflow_id)}: {item.skipped}")
        else:
            print(f"{verb} {_safe(info.workflow_id)} ({info.states} state(s), last saved {info.updated_at})")
    if args.task_state and not args.postgres_conn_id:
        from airflow_checkpoint_provider.core.workflow.blobs import TaskStateBlobs

        for rel in TaskStateBlobs(store).expire(days * 86400.0, dry_run=args.dry_run):
            print(f"{verb} {_safe(rel)}")
    print(
        f"{sum(1 for d in done if not d.skipped)} workflow(s) not saved for {days:g} day(s) "
        f"{'found (dry run: nothing deleted)' if args.dry_run else 'deleted'}"
    )
    return EXIT_OK


def add_parser(sub: Any) -> None:
    """Add ``workflow`` and its subcommands to the ``airflow-checkpoint`` parser."""
    parser = sub.add_parser("workflow", help="workflow checkpoints: list, show, history, reset, expire")
    actions = parser.add_subparsers(dest="workflow_command", required=True)

    def action(name: str, func: Any, text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=text)
        p.add_argument(
            "--postgres-conn-id",
            help="the PostgreSQL store of this Airflow connection (default: the file store under --root)",
        )
        p.add_argument("--table", default=DEFAULT_TABLE, help="its table (default %(default)s)")
        p.set_defaults(func=func)
        return p

    p = action("list", cmd_list, "workflows, most recently saved first")
    p.add_argument("--json", action="store_true")
    p = action("show", cmd_show, "the header of the latest (or a chosen) saved state, verified; --state prints it")
    p.add_argument("workflow_id")
    p.add_argument("--seq", type=int)
    p.add_argument("--step", help="a step: 2025 is the number, '\"2025\"' the string")
    p.add_argument("--state", action="store_true", help="print the state itself (JSON)")
    p.add_argument("--output", help="write the state to this file (needed for bytes states)")
    p.add_argument("--json", action="store_true", help="pretty-print")
    p = action("history", cmd_history, "every saved state of a workflow, newest first, damaged ones marked")
    p.add_argument("workflow_id")
    p.add_argument("--verify", action="store_true", help="also check every payload's size and sha256")
    p.add_argument("--json", action="store_true")
    p = action("reset", cmd_reset, "delete a workflow's states, so its next run starts over (dry run unless --execute)")
    p.add_argument("workflow_id")
    p.add_argument("--execute", action="store_true")
    p = action(
        "expire", cmd_expire, "delete workflows not saved for a while (default [checkpoint] workflow_retention_days, 7)"
    )
    p.add_argument("--older-than", type=float, help="days")
    p.add_argument(
        "--task-state",
        action="store_true",
        help="also task_state_store values kept in the store (task-state/) not written for that long",
    )
    p.add_argument("--dry-run", action="store_true")
