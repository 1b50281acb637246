"""The break-glass CLI end to end with Airflow down: ``create``, then ``restore last-known-good --yes``.

No scheduler, no api-server, and the metadata database is unreachable (its URL points at a closed
port): the connections come from ``AIRFLOW_CONN_*`` and from a connection file. The data is
compared exactly: every table row, every Redis key with type, value and TTL, every document.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from airflow_checkpoint_provider.core import Store
from tests.integration.airflow_support import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data

DB = "cli_app"
PREFIX = "clitest-"
DBS = range(2)
CLI = str(Path(sys.executable).parent / "airflow-checkpoint")


@pytest.fixture(scope="module")
def cli_env(services, services_module, tmp_path_factory) -> dict[str, str]:
    """Airflow down: an unmigrated home whose metadata database cannot be reached; PostgreSQL only
    through a connection file (owner-only), Redis and search through AIRFLOW_CONN_*."""
    home = tmp_path_factory.mktemp("cli_airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    conns = services_module.connection_env(services)
    pg_file = home / "pg.conn"
    pg_file.touch(mode=0o600)
    pg_file.write_text(conns.pop("AIRFLOW_CONN_POSTGRES_DEFAULT") + "\n")
    env.update(conns)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://nobody:unreachable@127.0.0.1:{free_port()}/none",
            "AIRFLOW__CHECKPOINT__STORAGE_ROOT": str(home / "store"),
            "AIRFLOW__CHECKPOINT__SEARCH_REPOSITORY_LOCATION": str(Path(services["opensearch"]["path_repo"]) / "cli"),
            "CLI_PG_FILE": str(pg_file),
        }
    )
    return env


def cli(env: dict[str, str], *argv: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *argv], env=env, capture_output=True, text=True, stdin=stdin, timeout=600)


def in_pty(env: dict[str, str], *argv: str, typed: str | None = None, timeout: float = 600) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal (stdin, stdout and stderr); returns (exit code, what it drew).
    ``typed``: the line typed once the CLI asks for the checkpoint id."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execve(CLI, [CLI, *argv], {**env, "COLUMNS": "160"})
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            piece = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not piece:
            break
        out += piece
        if typed is not None and b"Type the checkpoint id" in out:
            os.write(fd, typed.encode() + b"\n")
            typed = None
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


BAR = "\u2501"  # the heavy horizontal line rich draws bars with


def _state(services, indices):
    return {
        "postgres": sample_data.state_postgres(services["postgres"], DB),
        "redis": sample_data.state_redis(services["redis"], dbs=DBS),
        "search": sample_data.state_search(services["opensearch"]["url"], indices),
    }


def _damage(services, indices):
    with sample_data.pg_connect(services["postgres"], DB) as conn:
        conn.execute("DROP TABLE IF EXISTS attachments")
        conn.execute("DELETE FROM orders WHERE id % 3 = 0")
    r = sample_data.redis_client(services["redis"])
    r.delete("hash:big", "list:small")
    r.set("junk", "x")
    r.persist("session:1")
    sample_data.redis_client(services["redis"], 1).flushdb()
    url = services["opensearch"]["url"]
    httpx.delete(f"{url}/{indices[0]}").raise_for_status()
    httpx.post(f"{url}/{indices[1]}/_doc/junk?refresh=true", json={"n": -1, "name": "junk"}).raise_for_status()


@pytest.fixture(scope="module")
def created(cli_env, services):
    """Seeded stores and `airflow-checkpoint create` of them; returns (summary, indices, state)."""
    sample_data.seed_postgres(services["postgres"], DB)
    sample_data.seed_redis(services["redis"])
    indices = sample_data.seed_search(services["opensearch"]["url"], prefix=PREFIX)
    proc = cli(
        cli_env,
        "create",
        "--type",
        "pre-migration",
        "--tag",
        "break-glass",
        "--postgres-conn-file",
        cli_env["CLI_PG_FILE"],
        "--names",
        f"postgres={DB}",
        "--names",
        f"search={PREFIX}*",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert BAR not in proc.stderr and "\x1b[" not in proc.stderr  # piped: no progress bars
    return json.loads(proc.stdout), indices, _state(services, indices)


def test_create_with_airflow_down_seals_verifies_and_marks_lkg(cli_env, services, created):
    summary, _, _ = created
    store = Store.open(cli_env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"])
    info = store.get(summary["checkpoint_id"])
    assert summary["lkg"] is True and store.lkg().checkpoint_id == info.checkpoint_id
    assert sorted(info.manifest.stores()) == ["postgres", "redis", "search"]
    assert info.manifest.tags == ["break-glass", "pre-migration"] and info.manifest.pinned
    assert store.state_of(info).label.startswith("verified")
    assert info.manifest.provenance["cli"] == "create"
    assert summary["components"]["postgres"] == f"file {cli_env['CLI_PG_FILE']}"
    assert services["postgres"]["password"] not in info.manifest.to_bytes().decode()


def test_restore_without_yes_off_a_terminal_is_refused_and_changes_nothing(cli_env, services, created):
    _, indices, original = created
    _damage(services, indices)
    damaged = _state(services, indices)
    proc = cli(cli_env, "restore", "last-known-good", "--postgres-conn-file", cli_env["CLI_PG_FILE"], "--json")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert "standard input is not a terminal" in error["message"] and "--yes" in error["hint"]
    assert _state(services, indices) == damaged != original


def test_a_mistyped_id_at_the_prompt_cancels_the_restore_and_changes_nothing(cli_env, services, created):
    summary, indices, original = created
    if _state(services, indices) == original:
        _damage(services, indices)
    damaged = _state(services, indices)
    argv = ("restore", "last-known-good", "--postgres-conn-file", cli_env["CLI_PG_FILE"], "--names", f"postgres={DB}")
    code, screen = in_pty(cli_env, *argv, typed=summary["checkpoint_id"][:-1])
    assert code == 2, screen[-3000:]
    assert f"restore plan for {summary['checkpoint_id']}" in screen and "restore cancelled" in screen
    assert _state(services, indices) == damaged


def test_restore_last_known_good_yes_with_airflow_down_gives_exact_data(cli_env, services, created):
    """On a terminal, so its progress bars are drawn too: the restore's reading of each artifact."""
    summary, indices, original = created
    if _state(services, indices) == original:
        _damage(services, indices)
    code, screen = in_pty(
        cli_env,
        "restore",
        "last-known-good",
        "--yes",
        "--postgres-conn-file",
        cli_env["CLI_PG_FILE"],
        "--names",
        f"postgres={DB}",
    )
    assert code == 0, screen[-4000:]
    assert f"restored {summary['checkpoint_id']}: healthy" in screen
    after = _state(services, indices)
    assert after["postgres"] == original["postgres"]
    assert sample_data.same_redis_state(original["redis"], after["redis"]) == []
    assert after["search"] == original["search"]
    audit = Store.open(cli_env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"]).audit_log()
    assert audit[0]["status"] == "restored" and audit[0]["cli"] == "restore"
    assert audit[0]["checkpoint_id"] == summary["checkpoint_id"] and audit[0]["health"]["ok"]
    for phase, artifact in (("verify", f"postgres/{DB}.dump"), ("restore", f"postgres/{DB}.dump")):
        bars = [line for line in screen.splitlines() if phase in line and BAR in line]
        assert any(artifact in line and ("KiB" in line or "MiB" in line) for line in bars), (phase, screen[-3000:])


def test_create_on_a_terminal_draws_capture_seal_and_verify_bars(cli_env):
    code, screen = in_pty(cli_env, "create", "--components", "redis", "--no-lkg")
    assert code == 0, screen[-4000:]
    for phase in ("capture", "seal", "verify"):
        assert any(phase in line and "dump.rdb" in line and BAR in line for line in screen.splitlines()), phase
    assert "created ckpt-" in screen
