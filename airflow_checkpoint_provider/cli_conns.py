"""Where ``airflow-checkpoint create`` and ``restore`` find the servers, with Airflow up or down.

For each component, in order:

1. ``--<component>-conn-file PATH`` (``-`` reads standard input): a file holding the connection
   as an Airflow connection URI (``postgres://user:pass@host:5432/db``) or as Airflow's JSON
   form (``{"conn_type": "redis", "host": ..., "password": ...}``). Secrets never go on the
   command line, so there is no flag taking the URI itself.
2. ``--<conn_param> ID`` (e.g. ``--postgres-conn-id pg_prod``), else the ``[checkpoint]`` option,
   else the engine's default id: looked up as Airflow does, in ``AIRFLOW_CONN_<ID>`` first, then
   in the secrets backends and the metadata database when that is reachable.

A component not named by ``--components`` whose default connection is not defined is skipped
(a deployment without a directory to checkpoint has no ``files_default``); any other connection
that cannot be found is an error naming it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from airflow_checkpoint_provider.core.engines.contract import ConnectionInfo
from airflow_checkpoint_provider.core.errors import CheckpointError


@dataclass
class Resolved:
    """One component's server: its engine target and where it came from."""

    component: str
    target: Any
    conn_id: str | None  #: the Airflow connection id; None when it came from a file
    source: str  #: ``connection 'pg_prod'`` or ``file /run/secrets/pg``


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--components``, and per engine ``--<conn_param> ID`` and ``--<component>-conn-file PATH``."""
    from airflow_checkpoint_provider.cli import engine_arguments
    from airflow_checkpoint_provider.core.engines import registry

    if not engine_arguments():
        return
    p.add_argument(
        "--components",
        nargs="+",
        choices=list(registry.names()),
        metavar="COMPONENT",
        help=f"which stores ({', '.join(registry.names())}; default: every one whose connection is defined)",
    )
    for name, engine in registry.engines().items():
        p.add_argument(
            f"--{engine.conn_param.replace('_', '-')}",
            dest=engine.conn_param,
            metavar="ID",
            help=f"Airflow connection id of the {engine.title} server (default: [checkpoint] {engine.conn_param})",
        )
        p.add_argument(
            f"--{name}-conn-file",
            dest=f"{name}_conn_file",
            metavar="PATH",
            help=f"read the {engine.title} connection (URI or JSON) from PATH ('-': standard input)",
        )


def add_name_arguments(p: argparse.ArgumentParser, verb: str) -> None:
    """``--names COMPONENT=NAME[,NAME...]`` (repeatable): only these databases, indices, ... of a component."""
    p.add_argument(
        "--names",
        action="append",
        metavar="COMPONENT=NAMES",
        help=f"only these of a component to {verb}, comma-separated: postgres=app,billing (databases), "
        "search='logs-*' (indices, patterns allowed); default: all",
    )


def name_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``{"postgres": {"databases": [...]}}`` from the ``--names`` flags (the keyword each capture
    operator picks by, its ``names_option``)."""
    from airflow_checkpoint_provider import engines

    out: dict[str, dict[str, Any]] = {}
    for item in getattr(args, "names", None) or []:
        component, sep, names = item.partition("=")
        option = engines.operator_class(component).names_option if component in engines.names() else None
        if not sep or option is None or not names.strip():
            pickable = [n for n in engines.names() if engines.operator_class(n).names_option]
            raise CheckpointError(
                f"--names {item!r} is not COMPONENT=NAME[,NAME...] of a component that picks by name",
                hint=f"e.g. --names {pickable[0]}=app; components that pick by name: {', '.join(pickable)}",
            )
        out.setdefault(component, {}).setdefault(option, []).extend(n.strip() for n in names.split(",") if n.strip())
    return out


def read_connection(name: str, path: str) -> ConnectionInfo:
    """The connection held in ``path`` (``-``: stdin), as a URI or as Airflow's JSON form."""
    from airflow.sdk import Connection

    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise CheckpointError(
            f"cannot read the {name} connection file {path!r}: {exc.strerror}",
            hint="give a readable file holding one connection URI or JSON document",
        ) from exc
    text = text.strip()
    if not text:
        raise CheckpointError(f"the {name} connection file {path!r} is empty", hint="write the connection URI into it")
    try:
        conn = (Connection.from_json if text.startswith("{") else Connection.from_uri)(text, conn_id=f"{name}_file")
    except Exception as exc:  # the message may quote the secret: name only the file and the kind of error
        raise CheckpointError(
            f"the {name} connection file {path!r} holds no valid connection ({type(exc).__name__})",
            hint="write an Airflow connection URI (postgres://user:pass@host:5432/db) or its JSON form",
        ) from None
    from airflow_checkpoint_provider.engines import info_of

    return info_of(conn, f"{name}_file")


def resolve(args: argparse.Namespace, held: list[str] | None = None) -> dict[str, Resolved]:
    """Every chosen component's server, in registry order (see the module docstring).

    :param held: for a restore, the stores the checkpoint holds: the default choice, and each of
        them needs its connection (nothing is skipped).
    """
    from airflow_checkpoint_provider import engines

    chosen = list(args.components or held or engines.names())
    optional = not args.components and held is None
    out: dict[str, Resolved] = {}
    for name, engine in engines.engines().items():
        if name not in chosen:
            continue
        path = getattr(args, f"{name}_conn_file", None)
        if path:
            info = read_connection(name, path)
            out[name] = Resolved(name, engine.target_from_connection(info), None, f"file {path}")
            continue
        explicit = getattr(args, engine.conn_param, None)
        conn_id = explicit or engines.default_conn_id(engine)
        try:
            target = engines.target(name, conn_id)
        except Exception as exc:
            if not explicit and optional:  # an engine this deployment may not use
                why = "is not defined" if type(exc).__name__ == "AirflowNotFoundException" else f"failed: {exc}"
                print(f"{name}: skipped: the lookup of connection {conn_id!r} {why}", file=sys.stderr)
                continue
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(
                f"{name}: connection {conn_id!r} cannot be used: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                hint=f"define it in Airflow, set AIRFLOW_CONN_{conn_id.upper()}, or pass --{name}-conn-file PATH",
            ) from None
        out[name] = Resolved(name, target, conn_id, f"connection {conn_id!r}")
    if not out:
        raise CheckpointError(
            f"no server to work on among {', '.join(chosen)}: none of their connections is defined",
            hint="define the connections (or AIRFLOW_CONN_<ID>), or pass --<component>-conn-file PATH",
        )
    return out
