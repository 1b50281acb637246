"""``airflow-checkpoint rekey``: re-wrap every checkpoint's data key with a new master key.

Kept apart from :mod:`.cli` (which registers it) so that each stays a readable size. The
archives are never read nor rewritten: only the small key records beside them
(core/envelope.py). Each key is given as a file, an Airflow Variable or an Airflow connection,
never on the command line itself; the old key defaults to the configured one.
"""

from __future__ import annotations

import argparse
from typing import Any

from airflow_checkpoint_provider.cli import EXIT_OK, emit
from airflow_checkpoint_provider.core.crypt import Cipher
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.store import Store

_FORMS: tuple[tuple[str, str, str], ...] = (
    ("file", "PATH", "a key file (64 hex digits, mode 0600)"),
    ("variable", "KEY", "an Airflow Variable"),
    ("conn-id", "ID", "an Airflow connection (its password, or extra field key)"),
)


def _given(args: argparse.Namespace, which: str) -> Cipher | None:
    from airflow_checkpoint_provider.hooks.storage import resolve_cipher

    sources = {f"--{which}-key-{form}": getattr(args, f"{which}_key_{form.replace('-', '_')}") for form, _, _ in _FORMS}
    return resolve_cipher({k: v for k, v in sources.items() if v})


def cmd_rekey(store: Store, args: argparse.Namespace) -> int:
    """Re-wrap the data keys from the old master key to the new one (``--dry-run``: say which)."""
    from airflow_checkpoint_provider.core.envelope import rekey

    old, new = _given(args, "old") or store.cipher, _given(args, "new") or store.cipher
    if old is None or new is None:
        raise CheckpointError(
            f"rekey needs the {'old' if old is None else 'new'} master key, and none is given or configured",
            hint="pass --old-key-file/--old-key-variable/--old-key-conn-id and the --new-key-* form of the new key",
        )
    if old.key_id == new.key_id:
        raise CheckpointError(
            f"the old and the new master key are the same key ({old.key_id})",
            hint="pass the key being retired as --old-key-* and its successor as --new-key-*",
        )
    with store.lock():  # no seal writes a key record meanwhile
        report = rekey(store.fs, old, new, dry_run=args.dry_run)
    direct = _direct(store)
    verb = "would re-wrap" if args.dry_run else "re-wrapped"
    lines = [f"{verb} {rel}" for rel in report.rewrapped]
    lines += [
        f"NOT re-wrapped: {cid} is encrypted with a master key itself (an earlier version's scheme, no data key): "
        "keep that key, or take a new checkpoint and delete this one"
        for cid in direct
    ]
    lines.append(
        f"{len(report.rewrapped)} key record(s) {verb} from master key {old.key_id} to {new.key_id}; "
        f"{len(report.skipped)} already wrapped by {new.key_id}"
        + ("; dry run: nothing was changed" if args.dry_run else "")
    )
    emit(args, {**report.to_dict(), "not_rewrapped_direct_key": direct}, lines)
    return EXIT_OK


def _direct(store: Store) -> list[str]:
    """The checkpoints whose artifacts an earlier version encrypted with the master key directly: no key
    record to re-wrap, so they still need the old key."""
    return [
        info.checkpoint_id
        for info in store.list(cached=False)
        if any("encryption" in a.meta and "data_key_id" not in a.meta["encryption"] for a in info.manifest.artifacts)
    ]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "rekey", help="re-wrap every checkpoint's data key with a new master key; the archives are not rewritten"
    )
    for which in ("old", "new"):
        group = p.add_mutually_exclusive_group()
        for form, metavar, what in _FORMS:
            group.add_argument(
                f"--{which}-key-{form}",
                metavar=metavar,
                help=f"the {which} master key in {what} (default: the configured one)",
            )
    p.add_argument(
        "--dry-run", action="store_true", help="list the key records that would be re-wrapped; change nothing"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rekey)
