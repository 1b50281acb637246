"""Where the PostgreSQL password goes, against the real server: never argv, environment or disk.

* a capture SIGKILLed while pg_dump runs leaves no file holding the password;
* a password with a line break, ``:`` and ``\\`` (which no passfile line can hold) still
  captures and restores, and no tool's argv or environment ever holds it.

The tools are wrapped by a script that records their argv and environment
(``tests/integration/tls.py::recording_tool``) before it becomes the tool.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.engines import postgres as P
from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres import _secrets as SEC
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import AuthenticationError
from tests.integration.test_postgres_engine import admin, gate_locked, pg_dump_waiting, wait_for
from tests.integration.tls import recorded_runs, recording_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data as S

pytestmark = pytest.mark.integration

HOSTILE_PASSWORD = "new\nline:colon\\backslash"

CAPTURE_CHILD = """
import json, sys
from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.engines import postgres
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
spec = json.loads(sys.stdin.read())  # the password comes on stdin, not in argv or the environment
store = Store.open(spec["store"], create=True)
postgres.capture(PostgresTarget(**spec["target"]), store.staging("killed"), databases=[spec["db"]])
"""


@pytest.fixture
def databases(pg):
    """Factory of database names; every database made from one is dropped at teardown."""
    made: list[str] = []

    def make() -> str:
        made.append(f"sec_{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    with admin(pg) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall():
            if any(name.startswith(m) for m in made):
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def hostile_role(pg):
    """A superuser whose password holds a line break, a colon and a backslash."""
    role = f"hostile_{uuid.uuid4().hex[:8]}"
    with admin(pg) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(HOSTILE_PASSWORD)
            )
        )
    yield {**pg, "user": role, "password": HOSTILE_PASSWORD}
    with admin(pg) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture(autouse=True)
def _no_password_in_logs(pg, caplog):
    caplog.set_level("DEBUG", logger="airflow_checkpoint_provider")
    yield
    assert pg["password"] not in caplog.text and HOSTILE_PASSWORD not in caplog.text


def target_of(pg: dict[str, Any]) -> PostgresTarget:
    return PostgresTarget(
        host=pg["host"],
        port=pg["port"],
        user=pg["user"],
        password=pg["password"],
        dbname="postgres",
        connect_timeout=10,
    )


def files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def children(parent: int, name: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            comm, rest = raw[raw.index("(") + 1 : raw.rindex(")")], raw[raw.rindex(")") + 2 :].split()
            if comm == name and int(rest[1]) == parent:
                out.append(int(entry.name))
    return out


def test_sigkill_mid_capture_leaves_no_file_holding_the_password(pg, databases, tmp_path):
    db = databases()
    S.seed_postgres(pg, db, customers=200, orders=500)
    with admin(pg, db) as conn:
        conn.execute("CREATE TABLE gate (id int)")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    spec = {
        "store": str(tmp_path / "store"),
        "db": db,
        "target": {"host": pg["host"], "port": pg["port"], "user": pg["user"], "password": pg["password"]},
    }
    env = {**os.environ, "TMPDIR": str(tmp)}
    with gate_locked(pg, db):
        child = subprocess.Popen(
            [sys.executable, "-c", CAPTURE_CHILD],
            stdin=subprocess.PIPE,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
        child.stdin.write(json.dumps(spec).encode())
        child.stdin.close()
        try:
            wait_for(lambda: pg_dump_waiting(pg, db), timeout=60, what="pg_dump to wait for the gate lock")
            (dump,) = wait_for(lambda: children(child.pid, "pg_dump"), what="the pg_dump process")
            assert files_holding(tmp_path, pg["password"]) == []  # not even while it runs
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
            os.kill(dump, signal.SIGKILL)  # the orphan too: nothing is left to clean up
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode == -signal.SIGKILL
    assert files_holding(tmp_path, pg["password"]) == []
    assert [p.name for p in tmp.iterdir()] == []  # no private secret directory left behind


def test_password_with_newline_colon_and_backslash_never_enters_an_environment(hostile_role, databases, tmp_path):
    db = databases()
    S.seed_postgres(hostile_role, db, customers=500, orders=2000)
    original = S.state_postgres(hostile_role, db)
    target = target_of(hostile_role)
    tools = tmp_path / "tools"
    pg_dump = str(recording_tool(tools, str(Path(hostile_role["bin_dir"]) / "pg_dump")))
    pg_restore = str(recording_tool(tools, str(Path(hostile_role["bin_dir"]) / "pg_restore")))
    store = Store.open(tmp_path / "store", create=True)

    for dump_format, jobs in (("custom", 1), ("directory", 2)):
        staging = store.staging(f"hostile-{dump_format}")
        P.capture(target, staging, databases=[db], dump_format=dump_format, jobs=jobs, pg_dump=pg_dump)
        manifest = store.seal(staging)
        copy = databases()
        part = P.PostgresRestore(
            target,
            store,
            manifest.checkpoint_id,
            manifest.artifacts,
            rename={db: copy},
            pg_restore=pg_restore,
            jobs=jobs,
            capture_options={"pg_dump": pg_dump},
        )
        assert part.plan()[1] == []
        part.prepare()
        assert part.cutover().restored == [copy]
        assert S.state_postgres(hostile_role, copy) == original

    runs = recorded_runs(tools)
    leaked = [r[:200] for r in runs if HOSTILE_PASSWORD.encode() in r or b"new\nline" in r or b"PGPASSWORD=" in r]
    assert leaked == []
    logins = [r for r in runs if b"--dbname=" in r]
    assert len(logins) >= 4 and all(b"ckpt-pgrelay-" in r for r in logins)  # they logged in through the relay
    assert files_holding(tmp_path / "store", HOSTILE_PASSWORD) == []


def test_wrong_password_with_a_line_break_is_refused_through_the_relay(hostile_role, databases):
    db = databases()
    S.seed_postgres(hostile_role, db, customers=10, orders=100)
    wrong = PostgresTarget(
        host=hostile_role["host"], port=hostile_role["port"], user=hostile_role["user"], password="new\nline:but wrong"
    )
    with SEC.tool_auth(wrong) as auth:
        assert auth.relay is not None
        run = subprocess.run(
            [
                str(Path(hostile_role["bin_dir"]) / "pg_dump"),
                f"--dbname={auth.conninfo(db)}",
                "--no-password",
                "--schema-only",
            ],
            env=auth.env,
            capture_output=True,
            text=True,
        )
    assert run.returncode != 0 and "password authentication failed" in run.stderr  # the server's own answer
    failure = C.translate_tool_failure(wrong, db, "pg_dump", run.returncode, run.stderr)
    assert isinstance(failure, AuthenticationError) and "new\nline" not in str(failure)
    with pytest.raises(AuthenticationError):  # psycopg gets it in-process, and is refused the same way
        C.connect(wrong, db).close()
