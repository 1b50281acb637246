"""How pg_dump and pg_restore get the password (and the TLS key's sslpassword).

Never through argv or the environment, and never written to disk:

* the password goes into a libpq password file held in an anonymous memory file
  (``memfd_create``), handed to the tool as ``PGPASSFILE=/proc/self/fd/N`` (the descriptor is
  inherited through ``pass_fds`` only); it vanishes with the last process that holds it, so a
  SIGKILL leaves nothing behind;
* the ``sslpassword`` goes the same way into a connection service file (``PGSERVICEFILE``);
* a secret those files cannot hold (a line break, a trailing carriage return or blank) is
  kept in this process: the tool connects to an :class:`~._relay.AuthRelay` on a private
  Unix socket, which logs in to the server on its behalf.

Where ``memfd_create`` does not exist, the files go into a private 0700 directory removed
afterwards; directories left by a killed process are removed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres._relay import AuthRelay
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import EngineError

SERVICE = "airflow-checkpoint"
_FALLBACK_PREFIX = "ckpt-pg-"


@dataclass
class ToolAuth:
    """What a client tool run needs: its environment, the descriptors to pass, its conninfo."""

    target: PostgresTarget
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    service: bool = False  #: the conninfo names the service file (which holds the sslpassword)
    relay: AuthRelay | None = field(default=None, repr=False)

    def conninfo(self, dbname: str, application_name: str = C.PG_DUMP_APPLICATION_NAME) -> str:
        via = self.relay.conninfo_parts() if self.relay is not None else None
        text = C.conninfo(self.target, dbname, application_name, via=via)
        return f"{text} service='{SERVICE}'" if self.service and via is None else text

    def failure(self) -> EngineError | None:
        """Why the relay could not log in to the server for the tool (None without a relay or failure)."""
        return self.relay.failure() if self.relay is not None else None


def passfile_can_hold(target: PostgresTarget) -> bool:
    """Whether libpq reads ``target``'s password back from a passfile line unchanged.

    libpq reads the file line by line and strips trailing line ends: a line break cannot be
    escaped, and a trailing carriage return is lost (``:`` and ``\\`` are escaped).
    """
    password = target.password or ""
    return "\n" not in password and not password.endswith("\r") and "\n" not in target.user


def service_file_can_hold(value: str) -> bool:
    """Whether libpq reads ``value`` back from a service file line (no line break, no trailing blank)."""
    return "\n" not in value and value == value.rstrip()


def passfile_text(target: PostgresTarget) -> str:
    """The one-line libpq password file for ``target`` (``:`` and ``\\`` escaped)."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{esc(target.user)}:{esc(target.password or '')}\n"


def needs_relay(target: PostgresTarget) -> bool:
    """True when a secret of ``target`` cannot go into the files libpq reads."""
    if target.password is not None and not passfile_can_hold(target):
        return True
    sslpassword = target.ssl.get("sslpassword")
    return bool(sslpassword) and not service_file_can_hold(str(sslpassword))


@contextlib.contextmanager
def tool_auth(target: PostgresTarget, env: dict[str, str] | None = None) -> Iterator[ToolAuth]:
    """The secrets of ``target`` ready for one client tool run (see the module docstring)."""
    env = dict(C.tool_env() if env is None else env)
    if target.password is not None:  # ours replaces the worker's own
        env.pop("PGPASSWORD", None)
        env.pop("PGPASSFILE", None)
    if needs_relay(target):
        with AuthRelay(target) as relay:
            yield ToolAuth(target, env, relay=relay)
        return
    with contextlib.ExitStack() as stack:
        fds: list[int] = []
        if target.password is not None:
            path, fd = stack.enter_context(_secret_file("pgpass", passfile_text(target)))
            env["PGPASSFILE"] = path
            fds += [fd] if fd is not None else []
        sslpassword = target.ssl.get("sslpassword")
        if sslpassword:
            path, fd = stack.enter_context(_secret_file("pg_service.conf", f"[{SERVICE}]\nsslpassword={sslpassword}\n"))
            env["PGSERVICEFILE"] = path
            fds += [fd] if fd is not None else []
        yield ToolAuth(target, env, tuple(fds), service=bool(sslpassword))


@contextlib.contextmanager
def _secret_file(name: str, text: str) -> Iterator[tuple[str, int | None]]:
    """``(path, fd)`` of a 0600 file holding ``text``: a memory file when possible (``fd`` set)."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd(name, getattr(os, "MFD_CLOEXEC", 1))  # inherited only by the tool, through pass_fds
        try:
            os.fchmod(fd, 0o600)  # libpq ignores a passfile with group or world access
            data = text.encode("utf-8")
            while data:
                data = data[os.write(fd, data) :]
            yield f"/proc/self/fd/{fd}", fd
        finally:
            os.close(fd)
        return
    remove_stale_secret_dirs()
    directory = tempfile.mkdtemp(prefix=f"{_FALLBACK_PREFIX}{os.getpid()}-")
    try:
        os.chmod(directory, 0o700)
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        yield path, None
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def remove_stale_secret_dirs(parent: str | None = None) -> list[str]:
    """Remove the private secret directories whose process is gone (a SIGKILL); returns them."""
    removed = []
    for entry in Path(parent or tempfile.gettempdir()).glob(f"{_FALLBACK_PREFIX}*-*"):
        pid = entry.name[len(_FALLBACK_PREFIX) :].split("-", 1)[0]
        try:
            mine = entry.is_dir() and entry.stat().st_uid == os.getuid()
        except OSError:
            continue
        if not mine or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(str(entry))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
