"""PostgreSQL over TLS against a real cluster that refuses plain-text TCP logins (``hostnossl reject``).

The cluster is started here with ``scripts/services.py`` and switched to ``ssl = on`` with a
certificate authority made for the test; ``verify-full`` checks its certificate for 127.0.0.1.
Every TCP session of psycopg, pg_dump and pg_restore therefore runs over TLS, or fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.engines import postgres as P
from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres import _secrets as SEC
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import AuthenticationError, ConnectionFailedError
from airflow_checkpoint_provider.core.recovery import RestoreRequest, restore
from tests.integration.tls import HOST, Pki, postgres_tls_server, recorded_runs, recording_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data as S

pytestmark = pytest.mark.integration

LINE_BREAK_PASSWORD = "tls\nline:colon\\back"
KEY_PASSWORD = "k3y pass-phrase"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pg-pki"))


@pytest.fixture(scope="module")
def pg_tls(services_module, pki):
    """A private cluster with ssl on; ``certuser`` logs in by client certificate, ``md5user`` by md5."""
    with postgres_tls_server(services_module, pki, {"certuser": "cert", "md5user": "md5"}) as info:
        yield info


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "store", create=True)


@pytest.fixture(autouse=True)
def _no_secret_in_logs(pg_tls, caplog):
    caplog.set_level("DEBUG", logger="airflow_checkpoint_provider")
    yield
    for secret in (pg_tls["password"], LINE_BREAK_PASSWORD, KEY_PASSWORD):
        assert secret not in caplog.text


def hook_target(monkeypatch, pg: dict[str, Any], **extra: Any) -> PostgresTarget:
    """The target the provider's hook makes of an Airflow connection with these extras."""
    from airflow_checkpoint_provider.hooks.postgres import PgCheckpointHook

    login = extra.pop("login", pg["user"])
    password = extra.pop("password", pg["password"])
    conn = {
        "conn_type": "postgres",
        "host": HOST,
        "port": pg["port"],
        "login": login,
        "password": password,
        "schema": "postgres",
        "extra": {"connect_timeout": 10, **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_PG_TLS_TEST", json.dumps(conn))
    return PgCheckpointHook(postgres_conn_id="pg_tls_test").target()


def seeded(pg: dict[str, Any]) -> str:
    db = f"tls_{uuid.uuid4().hex[:10]}"
    S.seed_postgres(pg, db, customers=300, orders=1200)  # sslmode prefer: TLS, as the server demands
    return db


def damage(pg: dict[str, Any], db: str) -> None:
    with S.pg_connect(pg, db) as conn:
        conn.execute("DROP TABLE attachments")
        conn.execute("DELETE FROM orders WHERE id % 3 = 0")


def round_trip(
    store: Store, pg: dict[str, Any], target: PostgresTarget, db: str, *, tools: Path | None = None, jobs: int = 1
) -> None:
    """Capture, damage, restore side by side; the database must hold exactly what it held."""
    original = S.state_postgres(pg, db)
    paths = {}
    if tools is not None:
        paths = {
            name: str(recording_tool(tools, str(Path(pg["bin_dir"]) / name))) for name in ("pg_dump", "pg_restore")
        }
    staging = store.staging(f"tls-{uuid.uuid4().hex[:8]}")
    P.capture(
        target,
        staging,
        databases=[db],
        dump_format="directory" if jobs > 1 else "custom",
        jobs=jobs,
        **({"pg_dump": paths["pg_dump"]} if paths else {}),
    )
    manifest = store.seal(staging)
    damage(pg, db)

    def build(s: Store, m: Any, r: RestoreRequest) -> list:
        return [
            P.PostgresRestore(
                target,
                s,
                m.checkpoint_id,
                m.artifacts,
                mode=r.mode,
                jobs=jobs,
                **(
                    {"pg_restore": paths["pg_restore"], "capture_options": {"pg_dump": paths["pg_dump"]}}
                    if paths
                    else {}
                ),
            )
        ]

    report = restore(store, RestoreRequest(checkpoint_id=manifest.checkpoint_id, components=("postgres",)), build)
    assert report.healthy, [str(h) for h in report.health]
    assert S.state_postgres(pg, db) == original
    for path in Path(store.root).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert pg["password"].encode() not in data and KEY_PASSWORD.encode() not in data, path


@pytest.mark.parametrize("jobs", [1, 2])
def test_verify_full_round_trip_uses_the_connections_root_certificate(pg_tls, pki, store, monkeypatch, jobs):
    target = hook_target(monkeypatch, pg_tls, sslmode="verify-full", sslrootcert=pki.ca)
    assert target.ssl == {"sslrootcert": pki.ca}
    round_trip(store, pg_tls, target, seeded(pg_tls), jobs=jobs)


def test_wrong_root_certificate_fails_naming_the_file(pg_tls, store, tmp_path, monkeypatch):
    db = seeded(pg_tls)
    other = Pki(tmp_path / "other", name="another CA")
    wrong = hook_target(monkeypatch, pg_tls, sslmode="verify-full", sslrootcert=other.ca)
    with pytest.raises(ConnectionFailedError) as exc:
        P.capture(wrong, store.staging("wrong-ca"), databases=[db])
    text = str(exc.value)
    assert "failed over TLS" in text and f"sslrootcert={other.ca!r}" in text and "certificate verify failed" in text
    assert "HINT: set sslrootcert to the CA certificate" in text

    # pg_dump's own failure says the same
    with SEC.tool_auth(wrong) as auth:
        run = subprocess.run(
            [
                str(Path(pg_tls["bin_dir"]) / "pg_dump"),
                f"--dbname={auth.conninfo(db)}",
                "--no-password",
                "--schema-only",
            ],
            env=auth.env,
            pass_fds=auth.pass_fds,
            capture_output=True,
            text=True,
        )
    assert run.returncode != 0
    failure = C.translate_tool_failure(wrong, db, "pg_dump", run.returncode, run.stderr)
    assert isinstance(failure, ConnectionFailedError) and other.ca in str(failure)

    missing = str(tmp_path / "no-such-ca.pem")
    with pytest.raises(ConnectionFailedError, match=f'root certificate file "{missing}" does not exist'):
        P.capture(
            hook_target(monkeypatch, pg_tls, sslmode="verify-full", sslrootcert=missing),
            store.staging("missing-ca"),
            databases=[db],
        )
    assert store.list() == []


def test_plaintext_login_to_a_tls_only_server_says_to_set_sslmode(pg_tls, store):
    db = seeded(pg_tls)
    plain = PostgresTarget(
        host=HOST, port=pg_tls["port"], user=pg_tls["user"], password=pg_tls["password"], sslmode="disable"
    )
    with pytest.raises(AuthenticationError, match="no encryption") as exc:
        P.capture(plain, store.staging("plain"), databases=[db])
    assert "HINT: the server takes connections from here only over TLS" in str(exc.value)
    assert "set sslmode" in str(exc.value) and store.list() == []


def test_client_certificate_login_with_sslcert_and_sslkey(pg_tls, pki, store, monkeypatch):
    cert, key = pki.issue("certuser-client", common_name="certuser", client=True)
    target = hook_target(
        monkeypatch,
        pg_tls,
        login="certuser",
        password=None,
        sslmode="verify-full",
        sslrootcert=pki.ca,
        sslcert=cert,
        sslkey=key,
    )
    round_trip(store, pg_tls, target, seeded(pg_tls))


def test_encrypted_client_key_gets_its_sslpassword_without_argv_or_environment(
    pg_tls, pki, store, tmp_path, monkeypatch
):
    cert, key = pki.issue("certuser-locked", common_name="certuser", client=True, key_password=KEY_PASSWORD.encode())
    target = hook_target(
        monkeypatch,
        pg_tls,
        login="certuser",
        password=None,
        sslmode="verify-full",
        sslrootcert=pki.ca,
        sslcert=cert,
        sslkey=key,
        sslpassword=KEY_PASSWORD,
    )
    assert KEY_PASSWORD not in repr(target) and KEY_PASSWORD not in json.dumps(target.public())
    round_trip(store, pg_tls, target, seeded(pg_tls), tools=tmp_path / "tools")
    runs = recorded_runs(tmp_path / "tools")
    assert runs and not [r for r in runs if KEY_PASSWORD.encode() in r]
    assert any(b"PGSERVICEFILE=/proc/self/fd/" in r for r in runs)


@pytest.mark.parametrize("method", ["scram-sha-256", "md5"])
def test_password_with_a_line_break_logs_in_over_verify_full(pg_tls, pki, store, tmp_path, monkeypatch, method):
    """libpq cannot read such a password from a passfile: the tools log in through the relay,
    which speaks TLS (verify-full) and the server's password method itself."""
    role = "md5user" if method == "md5" else f"nl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        host=pg_tls["socket_dir"], port=pg_tls["port"], user=pg_tls["superuser"], dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(sql.SQL("SET password_encryption = {}").format(sql.Literal(method)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(LINE_BREAK_PASSWORD)
            )
        )
    target = hook_target(
        monkeypatch, pg_tls, login=role, password=LINE_BREAK_PASSWORD, sslmode="verify-full", sslrootcert=pki.ca
    )
    round_trip(store, pg_tls, target, seeded(pg_tls), tools=tmp_path / "tools", jobs=2)
    runs = recorded_runs(tmp_path / "tools")
    assert runs and all(b"ckpt-pgrelay-" in r for r in runs if b"--dbname=" in r)
    assert not [r for r in runs if LINE_BREAK_PASSWORD.encode() in r or b"tls\nline" in r]
