"""``airflow-checkpoint status``: LKG age, the last verify and drill, storage used, the last failures."""

from __future__ import annotations

import argparse
from typing import Any

from airflow_checkpoint_provider.cli import EXIT_OK, EXIT_PROBLEMS, _human_size, emit
from airflow_checkpoint_provider.core.store import Store


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _line(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "never"
    level = f" {rec['level']}" if rec.get("level") else ""
    return f"{rec['outcome']}{level} on {rec['checkpoint_id']} at {rec['recorded_at'][:19].replace('T', ' ')} ({_ago(rec['age_seconds'])})"


def cmd_status(store: Store, args: argparse.Namespace) -> int:
    """Print the summary of :func:`core.status.status`; exit 1 when there is no healthy LKG."""
    from airflow_checkpoint_provider.core.status import status

    doc = status(store, failures=args.failures)
    lkg, storage = doc["lkg"], doc["storage"]
    lines = [f"store:        {doc['store']}"]
    if lkg is None:
        lines.append("LKG:          none (no checkpoint was marked last-known-good)")
    else:
        lines.append(
            f"LKG:          {lkg['checkpoint_id']}, taken {_ago(lkg['age_seconds'])}"
            + (f"; PROBLEM: {lkg['problem']}" if lkg["problem"] else "")
        )
    lines += [
        f"last verify:  {_line(doc['last_verify'])}",
        f"last drill:   {_line(doc['last_drill'])}",
        f"storage:      {_human_size(storage['total_bytes'])} in {doc['checkpoints']} checkpoint(s) "
        f"({_human_size(storage['archive_bytes'])} archives + {_human_size(storage['outside_bytes'])} outside them)",
        "states:       " + (", ".join(f"{n} {label}" for label, n in storage["states"].items()) or "-"),
        "last failures:" + ("" if doc["last_failures"] else " none"),
    ]
    for f in doc["last_failures"]:
        when = f["recorded_at"][:19].replace("T", " ") or "-"
        lines.append(f"  {when}  {f['what']} {f['outcome']}: {f['checkpoint_id']}: {f['problem'] or '-'}")
    emit(args, doc, lines)
    return EXIT_OK if lkg is not None and not lkg["problem"] else EXIT_PROBLEMS


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="LKG age, the last verify and drill, storage used, the last failures")
    p.add_argument("--failures", type=int, default=5, help="how many recent failures to list (default 5)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
