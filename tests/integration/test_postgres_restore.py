"""PostgreSQL restore against the real server of the session (no fakes).

Each test seeds its own uniquely named databases with ``scripts/sample_data.py``, takes a real
checkpoint with ``capture`` + ``Store.seal``, damages the data, restores (through
``core.recovery.restore`` and directly through :class:`PostgresRestore`) and compares
``state_postgres`` (every row of every table plus the sequences) exactly. Everything a test
creates (databases, rollback copies, side-by-side copies, roles) is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.engines import postgres as P
from airflow_checkpoint_provider.core.engines import postgres as R  # the package exports the restore
from airflow_checkpoint_provider.core.engines.postgres import _switching
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
    EngineError,
    FormatError,
    NotFoundError,
    UnsafeArchiveError,
    VerificationFailedError,
)
from airflow_checkpoint_provider.core.manifest import Manifest
from airflow_checkpoint_provider.core.recovery import RestoreFailedError, RestoreRequest, restore
from tests.unit.core.helpers import archive_path, flip_byte, member_data_offsets

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data as S

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- helpers


def make_target(pg: dict[str, Any], **kw: Any) -> PostgresTarget:
    args = {
        "host": pg["host"],
        "port": pg["port"],
        "user": pg["user"],
        "password": pg["password"],
        "dbname": pg["database"],
        "connect_timeout": 5,
    }
    args.update(kw)
    return PostgresTarget(**args)


def admin(pg: dict[str, Any], dbname: str = "postgres") -> psycopg.Connection:
    """The superuser over the local socket (trust): the test's own back door."""
    return psycopg.connect(host=pg["socket_dir"], port=pg["port"], user=pg["superuser"], dbname=dbname, autocommit=True)


def databases(pg: dict[str, Any]) -> set[str]:
    with admin(pg) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def db_setting(pg: dict[str, Any], dbname: str) -> tuple[bool, int]:
    with admin(pg) as conn:
        row = conn.execute(
            "SELECT datallowconn, datconnlimit FROM pg_database WHERE datname = %s", (dbname,)
        ).fetchone()
        return tuple(row) if row else None  # type: ignore[return-value]


def checkpoint(store: Store, target: PostgresTarget, dbs: list[str], **opts: Any) -> Manifest:
    staging = store.staging(f"test-{uuid.uuid4().hex[:8]}")
    P.capture(target, staging, databases=dbs, **opts)
    return store.seal(staging, tags=["test"])


def damage(pg: dict[str, Any], dbname: str) -> None:
    """Drop a table, delete rows, insert junk, alter a column, move a sequence."""
    with S.pg_connect(pg, dbname) as conn:
        conn.execute("DROP TABLE attachments")
        conn.execute("DELETE FROM orders WHERE id % 10 = 0")
        conn.execute("INSERT INTO customers VALUES (999999, 'junk@example.com', '2030-01-01', NULL)")
        conn.execute("UPDATE customers SET email = 'changed-' || email WHERE id <= 5")
        conn.execute("ALTER TABLE audit.events ALTER COLUMN what TYPE varchar(40)")
        conn.execute("SELECT setval('orders_id_seq', 123456)")


def builder(
    target: PostgresTarget, made: list[R.PostgresRestore] | None = None, cls: type = R.PostgresRestore, **kw: Any
) -> Callable[..., list[R.PostgresRestore]]:
    def build(store: Store, manifest: Manifest, request: RestoreRequest) -> list[R.PostgresRestore]:
        part = cls(target, store, manifest.checkpoint_id, manifest.artifacts, mode=request.mode, **kw)
        if made is not None:
            made.append(part)
        return [part]

    return build


def leftovers(pg: dict[str, Any], dbname: str) -> list[str]:
    return sorted(d for d in databases(pg) if d.startswith(dbname[:20]) and d.endswith("__restoring"))


def rollbacks_of(pg: dict[str, Any], dbname: str) -> list[str]:
    return sorted(d for d in databases(pg) if d.startswith(dbname[:20]) and R.is_rollback_name(d))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def target(pg) -> PostgresTarget:
    return make_target(pg)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "store", create=True, lock_timeout=30)


@pytest.fixture
def names(pg) -> Iterator[Callable[[str], str]]:
    """Factory of unique database names; at teardown drops them and every copy derived from them."""
    made: list[str] = []

    def make(prefix: str = "ckr") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        made.append(name)
        return name

    yield make
    with admin(pg) as conn:
        for db in sorted(databases(pg)):
            if any(db.startswith(m[:20]) for m in made):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


@pytest.fixture
def seeded(pg, names) -> Callable[..., str]:
    def make(**kw: Any) -> str:
        db = names()
        S.seed_postgres(pg, db, **kw)
        return db

    return make


@pytest.fixture(autouse=True)
def _no_password_in_logs(pg, caplog):
    caplog.set_level("DEBUG", logger="airflow_checkpoint_provider")
    yield
    assert pg["password"] not in caplog.text


@contextlib.contextmanager
def held_connection(pg: dict[str, Any], dbname: str) -> Iterator[psycopg.Connection]:
    conn = S.pg_connect(pg, dbname)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


# --------------------------------------------------------------------------- round trips


def test_round_trip_through_the_orchestrator(pg, target, store, seeded):
    db = seeded()
    with S.pg_connect(pg, db) as conn:  # database-level settings travel with the dump
        conn.execute(sql.SQL("ALTER DATABASE {} SET work_mem = '8MB'").format(sql.Identifier(db)))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'the shop'").format(sql.Identifier(db)))
    original = S.state_postgres(pg, db)
    manifest = checkpoint(store, target, [db])
    damage(pg, db)
    damaged = S.state_postgres(pg, db)
    assert damaged != original

    made: list[R.PostgresRestore] = []
    report = restore(store, RestoreRequest(manifest.checkpoint_id, components=("postgres",)), builder(target, made))

    assert S.state_postgres(pg, db) == original
    (outcome,) = report.outcomes
    assert outcome.restored == [db]
    (copy,) = outcome.rollback
    assert copy.startswith(f"{db}__rollback_{manifest.checkpoint_id[-6:]}_") and copy in databases(pg)
    assert S.state_postgres(pg, copy) == damaged  # the rollback copy holds what was replaced
    assert leftovers(pg, db) == []
    details = outcome.details[db]
    assert details["verification"]["row_counts"] == "exact" and details["pg_restore"]["input"] == "stdin"
    # health: connect + one check per table, all passing
    assert report.healthy
    checks = {h.check: h for h in report.health}
    assert checks[f"{db}: connect"].ok
    assert checks[f"{db}: table public.orders rows"].actual == 8000
    # the safety checkpoint holds the damaged state
    safety = store.get(report.safety_checkpoint_id)
    assert "safety" in safety.tags
    (art,) = safety.manifest.artifacts
    assert art.meta["database"] == db and art.fingerprints["rows"]["public.orders"] == 7200
    # database-level settings and comment came back from the dump
    with admin(pg) as conn:
        settings = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d "
            "ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0",
            (db,),
        ).fetchone()
        comment = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (db,)
        ).fetchone()[0]
    assert settings == (["work_mem=8MB"],) and comment == "the shop"
    # the module-level health check on the fingerprint shape
    expectations = {"databases": {db: {"rows": manifest.artifacts[0].fingerprints["rows"]}}}
    assert all(h.ok for h in P.health(target, expectations))


@pytest.mark.parametrize(("dump_format", "jobs"), [("custom", 2), ("directory", 2), ("directory", 1)])
def test_round_trip_direct(pg, target, store, seeded, dump_format, jobs):
    db = seeded()
    original = S.state_postgres(pg, db)
    manifest = checkpoint(store, target, [db], dump_format=dump_format, jobs=2 if dump_format == "directory" else 1)
    damage(pg, db)
    damaged = S.state_postgres(pg, db)

    part = P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts, jobs=jobs)
    items, problems = part.plan()
    assert problems == [] and [i.action for i in items] == ["replace"]
    part.prepare()
    assert f"{db}__restoring" in databases(pg) and S.state_postgres(pg, db) == damaged  # nothing replaced yet
    outcome = part.cutover()
    assert S.state_postgres(pg, db) == original
    assert outcome.details[db]["pg_restore"]["input"] == "file"
    assert f"--jobs={jobs}" in outcome.details[db]["pg_restore"]["options"] or jobs == 1
    assert all(h.ok for h in part.health(0.0))

    part.rollback()  # undo: the damaged state serves again, no copies left behind
    assert S.state_postgres(pg, db) == damaged
    assert rollbacks_of(pg, db) == [] and leftovers(pg, db) == []


def test_restore_under_another_name_leaves_the_original_alone(pg, target, store, seeded, names):
    db = seeded()
    original = S.state_postgres(pg, db)
    manifest = checkpoint(store, target, [db])
    damage(pg, db)
    damaged = S.state_postgres(pg, db)
    other = names("copy")

    # Nothing exists yet that would be replaced, so there is nothing for a safety checkpoint to hold
    # (core.recovery cannot seal an empty one yet: safety_checkpoint=False).
    assert (
        P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts, rename={db: other}).safety_capture(
            store.staging("unused")
        )
        == []
    )
    made: list[R.PostgresRestore] = []
    report = restore(
        store,
        RestoreRequest(manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False),
        builder(target, made, rename={db: other}),
    )
    assert [i.action for i in report.plan.items] == ["create"]
    assert report.outcomes[0].restored == [other] and report.outcomes[0].rollback == []
    assert S.state_postgres(pg, other) == original
    assert S.state_postgres(pg, db) == damaged
    assert rollbacks_of(pg, db) == []


@pytest.fixture(scope="module")
def pg2(services_module, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A second, independent PostgreSQL server (another cluster, port and password)."""
    state = tmp_path_factory.mktemp("pg2")
    try:
        yield services_module.start(state, only=["postgres"])["postgres"]
    finally:
        services_module.stop(state)


def test_restore_into_another_server_and_role(pg, pg2, target, store, seeded):
    db = seeded()
    original = S.state_postgres(pg, db)
    manifest = checkpoint(store, target, [db])
    # on the second server, as a role that may only CREATEDB (no superuser)
    with admin(pg2) as conn:
        conn.execute("CREATE ROLE restorer LOGIN CREATEDB PASSWORD 'r-secret-1'")
    other = make_target(pg2, user="restorer", password="r-secret-1")
    try:
        part = P.PostgresRestore(other, store, manifest.checkpoint_id, manifest.artifacts, rename={db: "shop"})
        items, problems = part.plan()
        assert problems == [] and items[0].target == "shop" and items[0].action == "create"
        part.prepare()
        outcome = part.cutover()
        assert outcome.restored == ["shop"]
        assert S.state_postgres({**pg2, "user": "restorer", "password": "r-secret-1"}, "shop") == original
        assert all(h.ok for h in part.health(0.0))
        # a second restore replaces the role's own database, keeping a rollback copy
        with S.pg_connect({**pg2, "user": "restorer", "password": "r-secret-1"}, "shop") as conn:
            conn.execute("DELETE FROM audit.events")
        again = P.PostgresRestore(other, store, manifest.checkpoint_id, manifest.artifacts, rename={db: "shop"})
        assert again.plan()[1] == []
        again.prepare()
        out = again.cutover()
        assert S.state_postgres({**pg2, "user": "restorer", "password": "r-secret-1"}, "shop") == original
        assert [r["name"] for r in P.list_rollbacks(other)] == out.rollback
    finally:
        with admin(pg2) as conn:
            for name in [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'shop%'")]:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute("DROP ROLE restorer")
    assert S.state_postgres(pg, db) == original  # the source server was not touched


def test_tables_filtered_dump_creates_its_schemas(pg, target, store, seeded, names):
    db = seeded()
    original = S.state_postgres(pg, db)
    manifest = checkpoint(store, target, [db], tables=["audit.events", "public.customers"])
    other = names("part")
    part = P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts, rename={db: other})
    assert part.plan()[1] == []
    part.prepare()
    part.cutover()
    restored = S.state_postgres(pg, other)
    assert set(restored) == {"audit.events", "public.customers", "__sequences__"}
    assert restored["audit.events"] == original["audit.events"]
    assert restored["public.customers"] == original["public.customers"]


def test_in_place_restore(pg, target, store, seeded):
    db = seeded()
    original = S.state_postgres(pg, db)
    manifest = checkpoint(store, target, [db])
    damage(pg, db)

    made: list[R.PostgresRestore] = []
    report = restore(
        store, RestoreRequest(manifest.checkpoint_id, components=("postgres",), mode="in_place"), builder(target, made)
    )
    assert S.state_postgres(pg, db) == original
    assert report.outcomes[0].rollback == [] and rollbacks_of(pg, db) == [] and leftovers(pg, db) == []
    assert "--single-transaction" in report.outcomes[0].details[db]["pg_restore"]["options"]
    assert "safety" in store.get(report.safety_checkpoint_id).tags  # the way back
    assert report.healthy
    with pytest.raises(EngineError, match="safety checkpoint"):
        made[0].rollback()


# --------------------------------------------------------------------------- planning, refusals


def test_dry_run_changes_nothing_and_lists_conflicts(pg, target, store, seeded):
    db = seeded()
    manifest = checkpoint(store, target, [db])
    damage(pg, db)
    with admin(pg) as conn:  # a leftover of an earlier failed run
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"{db}__restoring")))
    before = (S.state_postgres(pg, db), databases(pg), [c.checkpoint_id for c in store.list()])
    with held_connection(pg, db) as conn:
        report = restore(
            store, RestoreRequest(manifest.checkpoint_id, components=("postgres",), dry_run=True), builder(target)
        )
        conn.execute("SELECT 1")  # not terminated
    after = (S.state_postgres(pg, db), databases(pg), [c.checkpoint_id for c in store.list()])
    assert before == after
    assert report.dry_run and report.plan.ok and report.outcomes == [] and report.safety_checkpoint_id is None
    (item,) = report.plan.items
    assert item.action == "replace" and item.target == db and item.staging_name == f"{db}__restoring"
    text = "\n".join(item.conflicts)
    assert "1 active session(s)" in text and "terminated" in text
    assert f"leftover {db}__restoring" in text
    assert f"{db} exists" in text


def test_plan_problems(pg, target, store, seeded, names):
    db = seeded()
    manifest = checkpoint(store, target, [db])
    # unknown database: named, with what the checkpoint holds
    part = P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts, databases=["nope"])
    _, problems = part.plan()
    assert any("'nope'" in p and db in p and target.label in p and "HINT" in p for p in problems)
    before = databases(pg)
    with pytest.raises(CheckpointError, match="'nope'"):
        part.prepare()  # used directly, without the orchestrator: still refused
    assert databases(pg) == before
    # a pg_restore older than the pg_dump that wrote the dump
    (art,) = manifest.artifacts
    newer = dataclasses.replace(art, meta={**art.meta, "pg_dump_version": "99.1"})
    _, problems = P.PostgresRestore(target, store, manifest.checkpoint_id, [newer]).plan()
    assert any("older than the pg_dump 99.1" in p for p in problems)
    # a dump from a newer server major than the target
    newer = dataclasses.replace(art, engine_version="99.1")
    _, problems = P.PostgresRestore(target, store, manifest.checkpoint_id, [newer]).plan()
    assert any("PostgreSQL 99.1" in p and "older major" in p for p in problems)
    # a role that may not create databases: refused before anything changes
    role = names("role")
    with admin(pg) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw-nocreate'").format(sql.Identifier(role)))
    try:
        weak = make_target(pg, user=role, password="pw-nocreate")
        before = databases(pg)
        with pytest.raises(Exception, match="may not create databases"):
            restore(store, RestoreRequest(manifest.checkpoint_id, components=("postgres",)), builder(weak))
        assert databases(pg) == before
    finally:
        with admin(pg) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_corrupt_archive_is_refused_and_nothing_changes(pg, target, store, seeded):
    db = seeded()
    manifest = checkpoint(store, target, [db])
    damage(pg, db)
    path = archive_path(store, manifest.checkpoint_id)
    offset, size = member_data_offsets(path)[f"artifacts/postgres/{db}.dump.zst"]
    flip_byte(path, offset + size // 2)
    before = (S.state_postgres(pg, db), databases(pg), len(store.list()))
    with pytest.raises(VerificationFailedError, match=f"postgres/{db}.dump"):
        restore(store, RestoreRequest(manifest.checkpoint_id, components=("postgres",)), builder(target))
    assert (S.state_postgres(pg, db), databases(pg), len(store.list())) == before


def test_verification_mismatch_drops_the_copy(pg, target, store, seeded):
    db = seeded()
    manifest = checkpoint(store, target, [db])
    damage(pg, db)
    damaged = S.state_postgres(pg, db)
    (art,) = manifest.artifacts
    rows = {**art.fingerprints["rows"], "public.orders": 7999}
    wrong = dataclasses.replace(art, fingerprints={**art.fingerprints, "rows": rows})
    part = P.PostgresRestore(target, store, manifest.checkpoint_id, [wrong])
    with pytest.raises(P.RestoreVerificationError) as err:
        part.prepare()
    message = str(err.value)
    assert "public.orders has 8000 rows, the checkpoint recorded 7999" in message
    assert target.label in message and "HINT" in message and pg["password"] not in message
    assert leftovers(pg, db) == [] and S.state_postgres(pg, db) == damaged


# --------------------------------------------------------------------------- failures midway


def _find_child(name: str) -> int | None:
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if comm == name and ppid == me:
                return int(entry)
    return None


def _kill_when_copying(pg: dict[str, Any], how: str, done: threading.Event, hits: list[str]) -> None:
    with admin(pg) as conn:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not done.is_set():
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND state = 'active' "
                "AND query ILIKE 'COPY%%'",
                (P.PG_RESTORE_APPLICATION_NAME,),
            ).fetchone()
            if row:
                if how == "backend":
                    conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                    hits.append(f"backend {row[0]}")
                else:
                    pid = _find_child("pg_restore")
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                        hits.append(f"process {pid}")
                if hits:
                    return
            time.sleep(0.01)


@pytest.mark.parametrize("how", ["backend", "process"])
def test_pg_restore_killed_midway_leaves_the_original(pg, target, store, seeded, how):
    db = seeded(customers=20000, orders=600_000)
    manifest = checkpoint(store, target, [db])
    with S.pg_connect(pg, db) as conn:
        conn.execute("DELETE FROM audit.events WHERE id > 250")
    before = S.state_postgres(pg, db)
    done, hits = threading.Event(), []
    killer = threading.Thread(target=_kill_when_copying, args=(pg, how, done, hits), daemon=True)
    killer.start()
    try:
        with pytest.raises(RestoreFailedError) as err:
            restore(
                store,
                RestoreRequest(manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False),
                builder(target),
            )
    finally:
        done.set()
        killer.join()
    assert hits, "the restore finished before it could be interrupted"
    message = str(err.value)
    assert "while loading postgres" in message and "pg_restore" in message and target.label in message
    assert S.state_postgres(pg, db) == before
    assert leftovers(pg, db) == [] and rollbacks_of(pg, db) == []


class _HoldRestoringCopy(R.PostgresRestore):
    """Opens a session on ``<db>__restoring`` after prepare(): the cut-over's rename then fails."""

    held: list[psycopg.Connection] = []

    def prepare(self) -> None:
        super().prepare()
        pg = self._pg  # type: ignore[attr-defined]
        for item in self.items:
            self.held.append(S.pg_connect(pg, item.staging))


def test_cutover_failure_puts_the_original_back(pg, target, store, seeded):
    db = seeded()
    manifest = checkpoint(store, target, [db])
    damage(pg, db)
    damaged = S.state_postgres(pg, db)
    with S.pg_connect(pg, "postgres") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 40").format(sql.Identifier(db)))

    class Hold(_HoldRestoringCopy):
        _pg = pg
        held: list[psycopg.Connection] = []

    try:
        with pytest.raises(RestoreFailedError) as err:
            restore(
                store,
                RestoreRequest(manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False),
                builder(target, cls=Hold),
            )
    finally:
        for conn in Hold.held:
            with contextlib.suppress(Exception):
                conn.close()
    message = str(err.value)
    assert "while cutting over postgres" in message and "back in place" in message
    assert S.state_postgres(pg, db) == damaged
    assert db_setting(pg, db) == (True, 40)  # accepts connections again, with its own limit
    assert rollbacks_of(pg, db) == [] and leftovers(pg, db) == []  # abort() dropped the copy


def test_cutover_name_collision_puts_the_original_back(pg, target, store, seeded, names, monkeypatch):
    db = seeded()
    manifest = checkpoint(store, target, [db])
    damage(pg, db)
    damaged = S.state_postgres(pg, db)
    taken = names("taken")
    with admin(pg) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(taken)))
    part = P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts)
    part.prepare()
    monkeypatch.setattr(_switching, "rollback_name", lambda *a, **k: taken)
    with pytest.raises(P.CutoverError, match="back in place") as err:
        part.cutover()
    assert "HINT" in str(err.value)
    assert S.state_postgres(pg, db) == damaged and db_setting(pg, db) == (True, -1)
    assert leftovers(pg, db) == [f"{db}__restoring"]
    part.abort()
    part.abort()  # idempotent
    assert leftovers(pg, db) == []


def test_sessions_are_terminated_at_cutover(pg, target, store, seeded):
    db = seeded()
    original = S.state_postgres(pg, db)
    manifest = checkpoint(store, target, [db])
    damage(pg, db)
    with S.pg_connect(pg, "postgres") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 25").format(sql.Identifier(db)))
    with held_connection(pg, db) as held, held_connection(pg, db) as idle_in_tx:
        idle_in_tx.execute("BEGIN")
        idle_in_tx.execute("SELECT count(*) FROM customers")
        report = restore(
            store,
            RestoreRequest(manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False),
            builder(target),
        )
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    assert report.outcomes[0].details[db]["terminated_sessions"] == 2  # client sessions only, never autovacuum
    assert db_setting(pg, db) == (True, -1)  # the checkpoint's CONNECTION LIMIT, not the replaced database's
    rollback = report.outcomes[0].rollback[0]
    assert db_setting(pg, rollback) == (True, 25)  # which the rollback copy keeps
    assert S.state_postgres(pg, db) == original  # and it accepts new connections


def test_cutover_does_not_wait_for_a_guard_to_start(pg, target, store, seeded):
    """The connection guard's process starts while the copy loads; the cut-over hands it the settings."""
    db = seeded()
    original = S.state_postgres(pg, db)
    manifest = checkpoint(store, target, [db])
    damage(pg, db)
    part = P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts)
    assert part.plan()[1] == []
    part.prepare()
    (warm,) = part._watchers._ready
    assert warm.poll() is None  # started during prepare(), waiting for its settings
    part.cutover()
    assert warm.wait(timeout=10) == 0 and part._watchers._ready == []  # it guarded the block, then exited
    assert S.state_postgres(pg, db) == original and db_setting(pg, db) == (True, -1)
    part.rollback()


def test_unused_guard_exits_when_the_restore_is_aborted(pg, target, store, seeded):
    db = seeded()
    manifest = checkpoint(store, target, [db])
    part = P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts)
    assert part.plan()[1] == []
    part.prepare()
    (warm,) = part._watchers._ready
    part.abort()
    assert warm.wait(timeout=10) == 0  # its pipe closed before any settings: nothing to do
    assert leftovers(pg, db) == [] and db_setting(pg, db) == (True, -1)


def test_database_properties_come_from_the_checkpoint_not_the_replaced_database(
    pg, target, store, seeded, names, caplog
):
    db = seeded()
    role = names("ckr_role")
    with S.pg_connect(pg, "postgres") as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 7").format(sql.Identifier(db)))
        conn.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET work_mem TO '3MB'").format(
                sql.Identifier(role), sql.Identifier(db)
            )
        )
    manifest = checkpoint(store, target, [db])
    with S.pg_connect(pg, "postgres") as conn:  # the live database drifts
        conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 25").format(sql.Identifier(db)))
        conn.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} RESET work_mem").format(sql.Identifier(role), sql.Identifier(db))
        )
    part = P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts)
    items, problems = part.plan()
    assert not problems
    assert any("CONNECTION LIMIT 7" in n and "1 per-role setting" in n for n in items[0].notes), items[0].notes
    report = restore(
        store,
        RestoreRequest(manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False),
        builder(target),
    )
    assert db_setting(pg, db) == (True, 7)
    assert db_setting(pg, report.outcomes[0].rollback[0]) == (True, 25)
    with S.pg_connect(pg, "postgres") as conn:
        rows = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = %s AND r.rolname = %s",
            (db, role),
        ).fetchall()
    assert rows == [(["work_mem=3MB"],)]
    assert "CONNECTION LIMIT is the checkpoint's 7 (the replaced database had 25" in caplog.text


def test_missing_role_of_a_per_database_setting_is_named_in_the_plan_and_the_log(
    pg, target, store, seeded, names, caplog
):
    db = seeded()
    role = names("ckr_gone")
    with S.pg_connect(pg, "postgres") as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET work_mem TO '3MB'").format(
                sql.Identifier(role), sql.Identifier(db)
            )
        )
    manifest = checkpoint(store, target, [db])
    with S.pg_connect(pg, "postgres") as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    part = P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts)
    items, problems = part.plan()
    assert not problems
    assert any(f"role(s) {role} do not exist on the target" in n for n in items[0].notes), items[0].notes
    restore(
        store,
        RestoreRequest(manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False),
        builder(target),
    )
    assert f"database property ALTER ROLE {role} IN DATABASE" in caplog.text


# --------------------------------------------------------------------------- rollback copies, health


def test_list_and_drop_rollbacks(pg, target, store, seeded, names):
    db = seeded()
    long_db = names("ckr_long") + "_" + "x" * 40  # 63 bytes: its copies' names are shortened
    S.seed_postgres(pg, long_db, customers=10, orders=200)
    manifest = checkpoint(store, target, [db, long_db])
    made: list[R.PostgresRestore] = []
    report = restore(
        store,
        RestoreRequest(manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False),
        builder(target, made),
    )
    copies = report.outcomes[0].rollback
    assert len(copies) == 2 and all(len(c.encode()) <= 63 for c in copies)

    listed = {r["name"]: r for r in P.list_rollbacks(target)}
    for copy, source in zip(copies, [db, long_db], strict=True):
        entry = listed[copy]
        assert entry["database"] == source and entry["database_exists"]
        assert entry["checkpoint"] == manifest.checkpoint_id[-6:] and entry["size"] > 0
        assert entry["allow_connections"] and entry["created_at"].endswith("Z")

    with pytest.raises(EngineError, match="not a rollback copy") as err:
        P.drop_rollback(target, db)
    assert "HINT" in str(err.value) and db in databases(pg)
    with pytest.raises(NotFoundError):
        P.drop_rollback(target, f"{db}__rollback_abcdef_20000101000000")
    with held_connection(pg, copies[0]):
        with pytest.raises(EngineError, match="open session"):
            P.drop_rollback(target, copies[0])
        P.drop_rollback(target, copies[0], force=True)
    P.drop_rollback(target, copies[1])
    assert not set(copies) & databases(pg)
    assert not any(r["name"] in copies for r in P.list_rollbacks(target))


def test_health_reports_expected_actual_and_diff(pg, target, store, seeded):
    db = seeded()
    rows = checkpoint(store, target, [db]).artifacts[0].fingerprints["rows"]
    assert all(h.ok for h in P.health(target, {db: {"rows": rows}}))
    with S.pg_connect(pg, db) as conn:
        conn.execute("DELETE FROM audit.events WHERE id > 495")
        conn.execute("DROP TABLE attachments")
    checks = {h.check: h for h in P.health(target, {"databases": {db: {"rows": rows}}})}
    events = checks[f"{db}: table audit.events rows"]
    assert not events.ok and (events.expected, events.actual) == (500, 495) and "-5" in events.detail
    missing = checks[f"{db}: table public.attachments rows"]
    assert not missing.ok and "missing" in missing.detail and "HINT" in missing.detail
    assert checks[f"{db}: table public.orders rows"].ok
    tolerant = {h.check: h for h in P.health(target, {db: {"rows": rows}}, tolerance=0.02)}
    assert tolerant[f"{db}: table audit.events rows"].ok
    gone = P.health(target, {"nonexistent_db_x": {"rows": {}}})
    assert [h.ok for h in gone] == [False] and target.label in gone[0].detail


def test_estimate_count_checkpoint_round_trip(pg, target, store, seeded, names):
    db = seeded()
    original = S.state_postgres(pg, db)
    manifest = checkpoint(store, target, [db], exact_counts=False)
    assert manifest.artifacts[0].fingerprints["row_counts"] == "estimate"
    other = names("est")
    part = P.PostgresRestore(target, store, manifest.checkpoint_id, manifest.artifacts, rename={db: other})
    part.prepare()  # tables and schema hash are compared; estimated counts cannot be
    part.cutover()
    assert S.state_postgres(pg, other) == original
    checks = part.health(0.0)
    assert all(h.ok for h in checks) and any("estimates" in h.detail for h in checks)


def _tar(*entries: tarfile.TarInfo | tuple[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    buf.seek(0)
    return buf


def _link(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, "/etc/passwd"
    return info


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([("toc.dat", b"t"), ("../evil.dat", b"x")], "plain file name"),
        ([("toc.dat", b"t"), ("sub/3.dat", b"x")], "plain file name"),
        ([("/abs.dat", b"x")], "plain file name"),
        ([("toc.dat", b"t"), _link("3.dat", tarfile.SYMTYPE)], "not a regular file"),
        ([("toc.dat", b"t"), _link("3.dat", tarfile.LNKTYPE)], "not a regular file"),
        ([("3.dat", b"x"), ("toc.dat", b"t")], "toc.dat"),
        ([("toc.dat", b"t"), ("toc.dat", b"u")], "twice"),
    ],
)
def test_directory_dump_extraction_is_strict(tmp_path, entries, why):
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match=why):
        R.untar_dump_directory(_tar(*entries), str(dest), source="ckpt:postgres/x.dir.tar")
    assert not any(p.name != "toc.dat" for p in dest.iterdir())  # nothing written for the refused entry
    assert not (tmp_path / "evil.dat").exists()


def test_directory_dump_extraction_accepts_a_dump(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    names = R.untar_dump_directory(_tar(("toc.dat", b"toc"), ("3350.dat", b"rows" * 1000)), str(dest), source="x")
    assert names == ["toc.dat", "3350.dat"] and (dest / "3350.dat").read_bytes() == b"rows" * 1000
    assert oct((dest / "toc.dat").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FormatError, match="toc.dat"):
        R.untar_dump_directory(_tar(), str(tmp_path), source="x")


def test_capture_of_all_databases_leaves_out_the_restores_own_copies(pg, target, store, seeded, names):
    db = seeded()
    manifest = checkpoint(store, target, [db])
    report = restore(
        store,
        RestoreRequest(manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False),
        builder(target),
    )
    rollback = report.outcomes[0].rollback[0]
    leftover = f"{db}__restoring"
    with admin(pg) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(leftover)))
    staging = store.staging(f"all-{uuid.uuid4().hex[:6]}")
    captured = {a.meta["database"] for a in P.capture(target, staging, databases="all")}
    assert db in captured and rollback not in captured and leftover not in captured
    staging.discard()
    staging = store.staging(f"all-{uuid.uuid4().hex[:6]}")
    captured = {a.meta["database"] for a in P.capture(target, staging, databases="all", include_own_copies=True)}
    assert {db, rollback, leftover} <= captured
    staging.discard()


def test_rollback_keep_expires_older_copies_after_a_healthy_restore(pg, target, store, seeded):
    db = seeded()
    manifest = checkpoint(store, target, [db])
    request = RestoreRequest(manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False)
    restore(store, request, builder(target))
    time.sleep(1.1)  # rollback names carry the second
    assert len(rollbacks_of(pg, db)) == 1
    request = RestoreRequest(
        manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False, rollback_keep="last=1"
    )
    report = restore(store, request, builder(target))
    (kept,) = rollbacks_of(pg, db)
    assert kept == report.outcomes[0].rollback[0]  # the newest stays
    assert [r["of"] for r in report.expired_rollbacks] == [db]
