"""Connections, versions, database listing and error translation for the PostgreSQL engine.

Every error raised here names the server with ``target.label`` (never the password),
carries a scrubbed copy of the driver's or tool's message, and ends with a ``HINT``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    CaptureError,
    ConnectionFailedError,
    EngineError,
    NotFoundError,
    ToolError,
)

log = logging.getLogger("airflow_checkpoint_provider.core.engines.postgres")

APPLICATION_NAME = "airflow-checkpoint"
#: ``application_name`` of the pg_dump sessions (visible in pg_stat_activity).
PG_DUMP_APPLICATION_NAME = "airflow-checkpoint-pg_dump"
MASK = "********"

_AUTH_MARKERS = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "no password supplied",
    "pg_hba.conf rejects",
    'role "',  # FATAL: role "x" does not exist
)
_PERMISSION_MARKERS = ("permission denied", "must be owner", "must be superuser")
_PLAIN_REFUSED_HINT = (
    "the server takes connections from here only over TLS (hostssl): set sslmode of the "
    "connection to verify-full (with sslrootcert) or require"
)
_TLS_MARKERS = (
    "ssl error",
    "ssl syscall",
    "certificate",
    "server does not support ssl",
    "sslmode value",
    "ssl connection",
    "private key file",
    "tls",
)
_VERSION_MISMATCH_MARKERS = ("server version mismatch", "aborting because of server version")


# --------------------------------------------------------------------------- secrets


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` (plain, URL-encoded or whitespace-collapsed) masked."""
    if not text or not secret:
        return text
    for form in sorted(
        {secret, quote(secret, safe=""), quote(secret), " ".join(secret.split())}, key=len, reverse=True
    ):
        if form:
            text = text.replace(form, MASK)
    return text


def scrub_target(text: str, target: PostgresTarget) -> str:
    """``text`` without ``target``'s password and sslpassword."""
    return scrub(scrub(text, target.password), target.ssl.get("sslpassword"))


# --------------------------------------------------------------------------- versions


def version_string(num: int) -> str:
    """``150018`` -> ``"15.18"``; ``90624`` -> ``"9.6.24"``."""
    if num >= 100000:
        return f"{num // 10000}.{num % 10000}"
    return f"{num // 10000}.{num // 100 % 100}.{num % 100}"


def major_of(num: int) -> int:
    """The major-version part of a ``server_version_num``-style number (150018 -> 150000)."""
    return num // 10000 * 10000 if num >= 100000 else num // 100 * 100


def major_label(num: int) -> str:
    return str(num // 10000) if num >= 100000 else f"{num // 10000}.{num // 100 % 100}"


@dataclass(frozen=True)
class ToolVersion:
    path: str  #: resolved executable
    text: str  #: first line of ``--version``
    version: str  #: e.g. "15.18"
    num: int  #: server_version_num style, e.g. 150018


_TOOL_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_tool_version(text: str) -> tuple[str, int] | None:
    m = _TOOL_VERSION_RE.search(text) or re.search(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if not m:
        return None
    a, b, c = (int(x) if x else 0 for x in m.groups())
    if a >= 10:
        return f"{a}.{b}", a * 10000 + b
    return f"{a}.{b}.{c}", a * 10000 + b * 100 + c


def tool_env() -> dict[str, str]:
    """Environment for the PostgreSQL client tools: messages in English (matched by translate_tool_failure),
    and without the worker's Airflow connections and variables (they may hold secrets the tools never need)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env.pop("LANGUAGE", None)
    env["LC_ALL"] = "C"
    return env


def resolve_tool(target: PostgresTarget, path: str, name: str = "pg_dump") -> str:
    hint = (
        f"install the PostgreSQL client matching the server (Debian: postgresql-client-<major>) or pass "
        f"{name}='/usr/lib/postgresql/<major>/bin/{name}'"
    )
    if os.sep in path or (os.altsep and os.altsep in path):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ToolError(f"{target.label}: {name} binary {path!r} not found or not executable", hint=hint)
        return path
    found = shutil.which(path)
    if not found:
        raise ToolError(f"{target.label}: {name} binary {path!r} not found on PATH", hint=hint)
    return found


def tool_version(target: PostgresTarget, path: str, name: str = "pg_dump") -> ToolVersion:
    exe = resolve_tool(target, path, name)
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, env=tool_env())
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolError(
            f"{target.label}: cannot run {name} binary {exe!r}: {exc}",
            hint=f"check the {name} path and its permissions",
        ) from None
    text = (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""
    parsed = parse_tool_version(text) if out.returncode == 0 else None
    if parsed is None:
        raise ToolError(
            f"{target.label}: {exe!r} --version printed {text!r} (exit {out.returncode}); it does not look like {name}",
            hint=f"pass {name}= the path of PostgreSQL's {name}",
        )
    return ToolVersion(exe, text, parsed[0], parsed[1])


def _newer_candidates(server_num: int, name: str) -> list[str]:
    out = []
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin")):
        exe = d / name
        try:
            major = int(d.parent.name)
        except ValueError:
            continue
        if exe.exists() and major * 10000 >= major_of(server_num):
            out.append(str(exe))
    return out


def check_tool_version(target: PostgresTarget, tool: ToolVersion, server_num: int, name: str = "pg_dump") -> None:
    """Refuse a client tool whose major version is older than the server's."""
    if major_of(tool.num) >= major_of(server_num):
        return
    candidates = _newer_candidates(server_num, name)
    extra = f" (found here: {', '.join(candidates)})" if candidates else ""
    raise ToolError(
        f"{target.label}: {name} {tool.version} ({tool.path}) is older than the server "
        f"(PostgreSQL {version_string(server_num)}); {name} cannot dump a newer server",
        hint=f"pass {name}= the path of a {name} of major version {major_label(server_num)} or newer{extra}, "
        f"or install postgresql-client-{major_label(server_num)}",
    )


# --------------------------------------------------------------------------- errors


def _markers(text: str, markers: tuple[str, ...]) -> bool:
    low = text.lower()
    return any(m in low for m in markers)


def translate(exc: BaseException, target: PostgresTarget, dbname: str | None, action: str) -> EngineError:
    """Turn a psycopg error into the matching :class:`EngineError` (message scrubbed)."""
    msg = scrub_target(" ".join(str(exc).split()), target)
    state = getattr(exc, "sqlstate", None) or ""
    where = f"{target.label}/{dbname}" if dbname else target.label
    if state.startswith("28") or _markers(msg, _AUTH_MARKERS):
        return AuthenticationError(
            f"{where}: authentication failed for user {target.user!r} while {action}: {msg}",
            hint=_PLAIN_REFUSED_HINT
            if "no encryption" in msg
            else "check the login and password of the connection (and pg_hba.conf on the server)",
        )
    if state == "3D000" or (_markers(msg, ('database "',)) and "does not exist" in msg):
        return NotFoundError(
            f"{where}: database {dbname!r} does not exist ({msg})",
            hint="check the database name; list_databases() shows the ones you can reach",
        )
    if state == "42501" or _markers(msg, _PERMISSION_MARKERS):
        return AuthenticationError(
            f"{where}: user {target.user!r} lacks a permission needed while {action}: {msg}",
            hint="grant the role CONNECT on the database and SELECT on every captured table and sequence "
            "(or use a role with pg_read_all_data)",
        )
    if isinstance(exc, psycopg.OperationalError) and not state:
        failed = tls_error(where, action, msg, target)
        if failed is not None:
            return failed
    if isinstance(exc, psycopg.OperationalError) and (not state or state[:2] in ("08", "57")):
        return ConnectionFailedError(
            f"{where}: cannot connect while {action}: {msg}",
            hint="check host and port of the connection, that the server runs and accepts TCP connections "
            "from this worker (listen_addresses, firewall)",
        )
    return CaptureError(f"{where}: {action} failed: {msg}", hint="see the PostgreSQL server log for details")


def translate_tool_failure(target: PostgresTarget, dbname: str, name: str, rc: int, stderr: str) -> EngineError:
    """The error for a client tool that exited with ``rc`` (stderr already collected)."""
    err = scrub_target(stderr.strip(), target) or "(no output)"
    where = f"{target.label}/{dbname}"
    if _markers(err, _VERSION_MISMATCH_MARKERS):
        return ToolError(
            f"{where}: {name} refused to dump: server version mismatch:\n{err}",
            hint=f"pass {name}= the path of a {name} at least as new as the server",
        )
    if _markers(err, ("authentication failed", "no pg_hba.conf entry", "no password supplied")):
        return AuthenticationError(
            f"{where}: {name} could not log in as {target.user!r}:\n{err}",
            hint=_PLAIN_REFUSED_HINT if "no encryption" in err else "check the login and password of the connection",
        )
    failed = tls_error(where, name, err, target) if _markers(err, ("connection to server",)) else None
    if failed is not None:
        return failed
    if _markers(err, ("permission denied",)):
        return AuthenticationError(
            f"{where}: {name} failed: user {target.user!r} lacks a permission:\n{err}",
            hint="grant SELECT on every captured table and sequence (or pg_read_all_data), "
            "or exclude the objects with exclude_tables/exclude_schemas",
        )
    how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
    return ToolError(
        f"{where}: {name} {how}:\n{err}", hint=f"read the {name} message above; the PostgreSQL server log may say more"
    )


# --------------------------------------------------------------------------- connections


def connect_kwargs(target: PostgresTarget, dbname: str, application_name: str = APPLICATION_NAME) -> dict[str, object]:
    """psycopg's keyword arguments for ``target``: the password and every TLS option included."""
    kwargs: dict[str, object] = {
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "dbname": dbname,
        "application_name": application_name,
    }
    if target.password is not None:
        kwargs["password"] = target.password  # in-process: libpq keeps it in memory
    if target.sslmode:
        kwargs["sslmode"] = target.sslmode
    kwargs.update(target.ssl)
    if target.connect_timeout:
        kwargs["connect_timeout"] = target.connect_timeout
    return kwargs


def connect(
    target: PostgresTarget, dbname: str | None = None, *, autocommit: bool = True, action: str = "connecting"
) -> psycopg.Connection:
    """A psycopg connection to ``dbname`` (default: ``target.dbname``), errors translated."""
    db = dbname or target.dbname
    try:
        return psycopg.connect(autocommit=autocommit, **connect_kwargs(target, db))  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise translate(exc, target, db, action) from None


def one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The single row a query must return (a catalogue lookup, a count)."""
    row = cursor.fetchone()
    if row is None:
        raise EngineError(
            "the server returned no row where it must return one",
            hint="check the server's logs; this is a bug if the server is healthy",
        )
    return tuple(row)


def server_version_num(conn: psycopg.Connection[Any]) -> int:
    return int(one(conn.execute("SELECT pg_catalog.current_setting('server_version_num')"))[0])


def server_version(target: PostgresTarget) -> str:
    """The server's version, e.g. ``"15.18"``."""
    with connect(target, action="reading the server version") as conn:
        return version_string(server_version_num(conn))


_DB_QUERY = """
SELECT datname, datallowconn, datistemplate,
       pg_catalog.has_database_privilege(datname, 'CONNECT') AS can_connect
FROM pg_catalog.pg_database ORDER BY datname
"""


def database_rows(conn: psycopg.Connection) -> list[tuple[str, bool, bool, bool]]:
    return [(str(r[0]), bool(r[1]), bool(r[2]), bool(r[3])) for r in conn.execute(_DB_QUERY).fetchall()]


def connectable(rows: list[tuple[str, bool, bool, bool]]) -> list[str]:
    return [name for name, allow, template, can in rows if allow and not template and can]


def list_databases(target: PostgresTarget) -> list[str]:
    """Every database the role can capture: not a template, accepting connections, CONNECT granted.

    Sorted by name; includes ``postgres`` (``capture(databases="all")`` leaves it out).
    """
    with connect(target, action="listing databases") as conn:
        return connectable(database_rows(conn))


def conninfo(
    target: PostgresTarget,
    dbname: str,
    application_name: str = PG_DUMP_APPLICATION_NAME,
    *,
    via: dict[str, object] | None = None,
) -> str:
    """A libpq connection string for a client tool, without the password and the sslpassword.

    Those reach the tool through :mod:`._secrets`; ``via`` replaces the server address and TLS
    options when it connects through :class:`._relay.AuthRelay`.
    """

    def q(value: object) -> str:
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"

    parts: dict[str, object] = {
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "dbname": dbname,
        "application_name": application_name,
    }
    if via is None:
        if target.sslmode:
            parts["sslmode"] = target.sslmode
        parts.update((k, v) for k, v in target.ssl.items() if k != "sslpassword")
    else:
        parts.update(via)
    if target.connect_timeout:
        parts["connect_timeout"] = target.connect_timeout
    return " ".join(f"{k}={q(v)}" for k, v in parts.items())


def tls_note(target: PostgresTarget) -> str:
    """`` (sslmode=..., sslrootcert=...)``: the TLS settings a TLS error message should name."""
    shown = {"sslmode": target.sslmode or "prefer (libpq's default)"}
    shown.update((k, target.ssl[k]) for k in ("sslrootcert", "sslcert", "sslkey", "sslcrl") if k in target.ssl)
    if "sslrootcert" not in target.ssl:
        shown["sslrootcert"] = "~/.postgresql/root.crt (libpq's default)"
    return " (" + ", ".join(f"{k}={v!r}" if "default" not in v else f"{k}={v}" for k, v in shown.items()) + ")"


def tls_error(where: str, what: str, err: str, target: PostgresTarget) -> EngineError | None:
    """A :class:`ConnectionFailedError` naming the TLS files when ``err`` is a TLS failure, else None."""
    if not _markers(err, _TLS_MARKERS):
        return None
    low = err.lower()
    if "certificate verify failed" in low or "root certificate" in low:
        hint = (
            "set sslrootcert to the CA certificate that signed the server's certificate "
            "(verify-full also needs host to be a name or address the certificate lists)"
        )
    elif "private key" in low or "client certificate" in low or "certificate file" in low:
        hint = "check sslcert and sslkey: a PEM certificate and its key, the key readable only by its owner (0600)"
    elif "server does not support ssl" in low:
        hint = "enable ssl on the server, or lower sslmode"
    else:
        hint = "check the TLS settings of the connection against the server's certificate and ssl settings"
    return ConnectionFailedError(f"{where}: {what} failed over TLS{tls_note(target)}:\n{err}", hint=hint)
