"""The lifecycle commands of ``airflow-checkpoint``: verify at a level, show a checkpoint's history, expire.

Kept apart from :mod:`.cli` (which registers them) so that each stays a readable size.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from airflow_checkpoint_provider.cli import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    _component_arguments,
    _human_size,
    _print_json,
    _safe,
    _targets,
)
from airflow_checkpoint_provider.core.states import LEVELS
from airflow_checkpoint_provider.core.store import CheckpointInfo, Store
from airflow_checkpoint_provider.core.verify import VerifyResult


def _report(result: VerifyResult, as_json: bool) -> None:
    if as_json:
        return
    cid = _safe(result.checkpoint_id)
    if result.ok:
        print(
            f"{cid}: OK ({len(result.verified)} artifacts, {_human_size(result.bytes_read)} read, level {result.level})"
        )
        return
    print(f"{cid}: {len(result.problems)} problem(s)")
    for p in result.problems:
        print(f"  {_safe(p)}\n    HINT: {_safe(p.hint)}")


def _deep_targets(args: argparse.Namespace) -> dict[str, Any]:
    """The servers the deep checks may ask (the search snapshot); none is required."""
    if args.level != "deep" or args.no_servers:
        return {}
    return _targets(args)


def cmd_verify(store: Store, args: argparse.Namespace) -> int:
    """Verify at ``--level`` and record each outcome; a corrupt LKG falls back (see core/levels.py)."""
    from airflow_checkpoint_provider import settings
    from airflow_checkpoint_provider.core import levels

    if args.deep:
        args.level = "deep"
    if args.all:
        infos, damaged = store.scan(cached=False)
        ids = [i.checkpoint_id for i in infos]
    elif args.checkpoint_id:
        ids, damaged = [args.checkpoint_id], []
    else:
        print("verify: give a checkpoint id, 'last-known-good', or --all", file=sys.stderr)
        return EXIT_USAGE
    targets = _deep_targets(args)
    by = {"cli": "verify"}
    results = []
    for cid in ids:
        result, record = levels.verify_at(store, cid, args.level, targets=targets, by=by)
        for note in record.evidence.get("unchecked", []):
            print(f"{_safe(result.checkpoint_id)}: not checked: {_safe(note)}", file=sys.stderr)
        results.append(result)
    results += [store.verify(d.checkpoint_id) if _valid_id(d.checkpoint_id) else _damaged(d) for d in damaged]
    for r in results:
        _report(r, args.json)
    pointer = store.lkg()
    problem = store.lkg_problem(pointer) if pointer is not None else None
    if pointer is not None and problem:
        new = store.fallback_lkg(problem, requires=settings.lkg_requires(), by=by)
        print(
            f"last-known-good {pointer.checkpoint_id} is damaged: it fell back to "
            f"{new.checkpoint_id if new else 'nothing (no checkpoint qualifies; the pointer was removed)'}",
            file=sys.stderr,
        )
    if args.json:
        _print_json([r.to_dict() for r in results])
    return EXIT_OK if all(r.ok for r in results) else EXIT_PROBLEMS


def _valid_id(cid: str) -> bool:
    from airflow_checkpoint_provider.core.manifest import CHECKPOINT_ID_RE

    return bool(CHECKPOINT_ID_RE.match(cid))


def _damaged(entry: Any) -> VerifyResult:
    from airflow_checkpoint_provider.core.results import ProblemKind

    result = VerifyResult(checkpoint_id=entry.checkpoint_id)
    result.add(ProblemKind.BAD_MANIFEST, entry.path, entry.problem)
    return result


def add_verify_parser(sub: Any) -> None:
    p = sub.add_parser("verify", help="verify a checkpoint at a level and record it; reports every problem")
    p.add_argument("checkpoint_id", nargs="?")
    p.add_argument("--all", action="store_true", help="verify every checkpoint")
    p.add_argument(
        "--level",
        choices=LEVELS,
        default="standard",
        help="basic: sizes and manifests; standard (default): sha256 of every artifact; deep: also "
        "decompress and parse every artifact and check the search snapshot",
    )
    p.add_argument("--deep", action="store_true", help="the same as --level deep")
    p.add_argument(
        "--no-servers", action="store_true", help="deep: ask no server (the search snapshot stays unchecked)"
    )
    p.add_argument("--json", action="store_true")
    _component_arguments(p)
    p.set_defaults(func=cmd_verify)


def show_history(store: Store, info: CheckpointInfo, *, as_json: bool) -> int:
    """A checkpoint's state, then each verification and drill record, oldest first, then its manifest."""
    state = store.state_of(info)
    records = store.state_records(info.checkpoint_id)
    if as_json:
        _print_json(
            {
                "checkpoint_id": info.checkpoint_id,
                "state": state.to_dict(),
                "history": [r.to_dict() for r in records],
                "manifest": json.loads(info.manifest.to_bytes()),
            }
        )
        return EXIT_OK
    lkg = store.lkg()
    print(f"checkpoint: {info.checkpoint_id}{' [LKG]' if lkg and lkg.checkpoint_id == info.checkpoint_id else ''}")
    print(f"state:      {state.label}{f' ({_safe(state.reason)})' if state.reason else ''}")
    print(
        f"size:       {_human_size(info.size)} archive"
        + (f" + {_human_size(state.snapshot_bytes)} outside it" if state.snapshot_bytes else "")
    )
    print("history:" if records else "history:    none (sealed, never verified since)")
    for r in records:
        mine = "" if r.manifest_sha256 == info.manifest.manifest_sha256 else " (of an earlier manifest)"
        level = f" {r.level}" if r.level else ""
        who = ",".join(f"{k}={v}" for k, v in sorted(r.by.items()))
        print(
            _safe(
                f"  {r.recorded_at[:19].replace('T', ' ')}  {r.kind}{level}: {r.outcome} in "
                f"{r.duration_ms} ms{mine}{f'  [{who}]' if who else ''}"
            )
        )
        for p in r.problems:
            print(_safe(f"      {p.get('kind')}: {p.get('subject')}: {p.get('detail')}"))
    print("manifest:")
    sys.stdout.write(info.manifest.to_bytes().decode())
    return EXIT_OK


def expire_targets(args: argparse.Namespace) -> dict[str, Any]:
    """The servers holding data of checkpoints outside the store (the search snapshots), from connections."""
    from airflow_checkpoint_provider.core.engines import registry

    if getattr(args, "no_servers", False):
        return {}
    if not args.component:
        args.component = [n for n, e in registry.engines().items() if e.expire is not None]
    return _targets(args)


def cmd_expire(store: Store, args: argparse.Namespace) -> int:
    """Apply the retention policy: print each checkpoint with the rule that keeps it or why it goes."""
    from airflow_checkpoint_provider import settings
    from airflow_checkpoint_provider.core.expire import expire
    from airflow_checkpoint_provider.core.retention import Policy

    policy = Policy.parse(args.policy if args.policy is not None else settings.retention())
    targets = expire_targets(args) if args.execute else {}
    report = expire(store, policy, requires=settings.lkg_requires(), targets=targets, execute=args.execute)
    if args.json:
        _print_json(report.to_dict())
        return EXIT_PROBLEMS if report.pending else EXIT_OK
    for o in report.finished:
        print(f"finished the deletion of {o.checkpoint_id}: {_safe('; '.join(o.done) or 'nothing left')}")
    gone = {o.checkpoint_id: o for o in report.deleted}
    for d in report.plan.decisions:
        if d.keep:
            verb = "keep  "
        elif args.execute:
            verb = "REFUSED" if gone.get(d.checkpoint_id) and gone[d.checkpoint_id].refused else "deleted"
        else:
            verb = "delete"
        print(
            _safe(
                f"{verb} {d.checkpoint_id:<32} {d.created_at.strftime('%Y-%m-%d %H:%M')}  "
                f"{_human_size(d.size):>10}  {'; '.join(d.reasons)}"
            )
        )
        outcome = gone.get(d.checkpoint_id)
        if outcome and outcome.refused:
            print(f"    {_safe(outcome.refused)}")
    for warning in report.plan.warnings:
        print(f"warning: {_safe(warning)}", file=sys.stderr)
    for line in report.pending:
        print(f"pending (a later run retries): {_safe(line)}", file=sys.stderr)
    n = len(report.plan.doomed)
    print(
        f"{n} checkpoint(s) {'deleted' if args.execute else 'would be deleted (dry run: add --execute)'}, "
        f"{_human_size(report.plan.kept_bytes)} kept"
    )
    return EXIT_PROBLEMS if report.pending else EXIT_OK


def add_expire_parser(sub: Any) -> None:
    p = sub.add_parser("expire", help="apply the retention policy ([checkpoint] retention); a dry run unless --execute")
    p.add_argument("--execute", action="store_true", help="really delete (default: only print the plan)")
    p.add_argument("--policy", help="a policy as JSON instead of [checkpoint] retention")
    p.add_argument("--no-servers", action="store_true", help="leave search snapshots for a later run")
    p.add_argument("--json", action="store_true")
    _component_arguments(p)
    p.set_defaults(func=cmd_expire)
