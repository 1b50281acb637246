"""How ``airflow-checkpoint`` speaks: logging to stderr, ``--json`` on every command, errors and exit codes.

Kept apart from :mod:`.cli` (the commands and the parser) so that each stays a readable size.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from airflow_checkpoint_provider.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_STORE,
    EXIT_USAGE,
    _print_json,
)
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    EngineError,
    LkgRequirementError,
    StoreError,
    VerificationFailedError,
)
from airflow_checkpoint_provider.core.store import Store

#: commands that only read the store: they never import Airflow (which takes seconds)
STORE_ONLY = frozenset({"list", "show", "status", "audit", "lkg"})


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was set up (``main()``
    called in-process, e.g. by a test or an embedding tool, must not leave logging bound to a
    stream that was replaced and closed since)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.stderr, name)


def logs_to_stderr(verbose: bool, command: str) -> None:
    """Log lines go to stderr (stdout carries the output, e.g. the one JSON document of ``--json``),
    secrets masked as in Airflow; below warnings only with ``--verbose``. Store-only commands
    set up plain logging and leave Airflow unimported."""
    import logging

    if command in STORE_ONLY and "airflow" not in sys.modules:
        logging.basicConfig(stream=_CurrentStderr(), level=logging.INFO if verbose else logging.WARNING)
        return
    try:
        from airflow.sdk.log import configure_logging
    except ImportError:  # pragma: no cover - Airflow is a dependency; keep the CLI usable without it
        return
    configure_logging(
        log_level="INFO" if verbose else "WARNING",
        output=_CurrentStderr(),  # type: ignore[arg-type]
        colored_console_log=False,
    )


def command_of(argv: list[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not an option or --root's value)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--root":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


#: the commands that write their own JSON document under ``--json``; the others are wrapped by :func:`as_json`
NATIVE_JSON = frozenset(
    {"list", "show", "verify", "lkg", "expire", "rollbacks", "audit", "create", "restore", "status", "plan", "rekey"}
    | {"workflow list", "workflow show", "workflow history"}
)


def command(args: argparse.Namespace) -> str:
    sub = getattr(args, "workflow_command", None)
    return f"{args.command} {sub}" if sub else args.command


def as_json(store: Store, args: argparse.Namespace) -> int:
    """Run a command that speaks text, and print what it said as one JSON document:
    ``{"exit_code", "output": [lines], "messages": [stderr lines]}``, or on failure
    ``{"error": {"type", "message", "hint"}, "exit_code", "output"}``."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(store, args)
    lines, messages = out.getvalue().splitlines(), err.getvalue().splitlines()
    if code == EXIT_OK:
        _print_json({"exit_code": code, "output": lines, "messages": messages})
        return code
    said = [m.removeprefix("error: ") for m in messages] or lines[-1:] or [f"{command(args)} failed"]
    hints = [m.split("HINT:", 1)[1].strip() for m in messages if "HINT:" in m]
    error = {"type": "CommandFailed", "message": said[0], "hint": hints[0] if hints else None}
    _print_json({"error": error, "exit_code": code, "output": lines})
    return code


def add_json_flags(parser: argparse.ArgumentParser) -> None:
    """``--json`` on every command (each subcommand that lacks it gets it)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                if sub._subparsers is not None:
                    add_json_flags(sub)
                elif "--json" not in sub._option_string_actions:
                    sub.add_argument("--json", action="store_true", help="print one JSON document")


def exit_code(exc: CheckpointError) -> int:
    """The documented exit code of an error (see the module docstring)."""
    from airflow_checkpoint_provider.core.recovery import RestoreFailedError, RestoreRefusedError

    if isinstance(exc, CheckpointNotFoundError):
        return EXIT_USAGE
    if isinstance(exc, (VerificationFailedError, LkgRequirementError)):
        return EXIT_PROBLEMS
    if isinstance(exc, StoreError):
        return EXIT_STORE
    if isinstance(exc, (RestoreRefusedError, RestoreFailedError, EngineError)):
        return EXIT_FAILED
    return EXIT_USAGE


def fail(args: argparse.Namespace, exc: CheckpointError, code: int) -> int:
    """Report ``exc``: with ``--json`` as the one JSON document on stdout, else on stderr."""
    if getattr(args, "json", False):
        _print_json(
            {"error": {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}, "exit_code": code}
        )
    else:
        print(f"error: {exc}", file=sys.stderr)
    return code
