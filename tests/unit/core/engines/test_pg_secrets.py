"""Pure logic of how the PostgreSQL tools get their secrets: passfile syntax, SASLprep, SCRAM.

No server here; the real logins are in tests/integration/test_postgres_secrets.py and
test_postgres_tls.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from airflow_checkpoint_provider.core.engines.postgres import _secrets as S
from airflow_checkpoint_provider.core.engines.postgres._relay import Scram, md5_response, saslprep
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import CheckpointError


def target(password: str | None, user: str = "app", **ssl: str) -> PostgresTarget:
    return PostgresTarget(host="db", user=user, password=password, ssl=ssl)


def test_passfile_escapes_colon_and_backslash():
    assert S.passfile_text(target("a:b\\c", user="u:x")) == "*:*:*:u\\:x:a\\:b\\\\c\n"


@pytest.mark.parametrize(
    "password, relay",
    [
        ("plain", False),
        ("with:colon\\and backslash ", False),
        ("cr\rinside", False),
        ("line\nbreak", True),
        ("trailing carriage return\r", True),
    ],
)
def test_only_passwords_a_passfile_line_cannot_hold_go_through_the_relay(password, relay):
    assert S.needs_relay(target(password)) is relay


def test_sslpassword_with_trailing_blank_goes_through_the_relay():
    assert not S.needs_relay(target("pw", sslpassword="key pass"))
    assert S.needs_relay(target("pw", sslpassword="key pass "))


def test_conninfo_never_holds_the_sslpassword():
    from airflow_checkpoint_provider.core.engines.postgres._conn import conninfo

    t = PostgresTarget(
        host="db",
        password="pa55word",
        sslmode="verify-full",
        ssl={"sslrootcert": "/ca.pem", "sslpassword": "k3y-secret", "sslsni": True},
    )
    text = conninfo(t, "app")
    assert "sslrootcert='/ca.pem'" in text and "sslmode='verify-full'" in text and "sslsni='1'" in text
    assert "k3y-secret" not in text and "pa55word" not in text
    assert "k3y-secret" not in repr(t) and "k3y-secret" not in str(t.public())


def test_unknown_tls_option_is_refused_naming_it():
    with pytest.raises(CheckpointError, match="unknown TLS option.*'sslrootkert'"):
        PostgresTarget(host="db", ssl={"sslrootkert": "/ca.pem"})
    with pytest.raises(CheckpointError, match="sslmode='verify_full'"):
        PostgresTarget(host="db", sslmode="verify_full")


def test_password_file_is_a_memory_file_readable_by_the_child_only_through_pass_fds():
    with S.tool_auth(target("s3cret:x")) as auth:
        path = auth.env["PGPASSFILE"]
        assert path.startswith("/proc/self/fd/") and auth.pass_fds
        assert os.readlink(path).startswith("/memfd:")
        read = [sys.executable, "-c", f"print(open({path!r}).read(), end='')"]
        assert (
            subprocess.run(read, pass_fds=auth.pass_fds, capture_output=True, text=True).stdout
            == "*:*:*:app:s3cret\\:x\n"
        )
        assert subprocess.run(read, capture_output=True, text=True).returncode != 0  # not inherited otherwise


def test_without_memfd_a_private_file_is_used_and_stale_ones_are_removed(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "memfd_create")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"ckpt-pg-{dead.pid}-abc"
    stale.mkdir()
    (stale / "pgpass").write_text("*:*:*:app:old-secret\n")
    with S.tool_auth(target("s3cret")) as auth:
        passfile = auth.env["PGPASSFILE"]
        assert open(passfile).read() == "*:*:*:app:s3cret\n" and oct(os.stat(passfile).st_mode)[-3:] == "600"
        assert not stale.exists()
    assert not os.path.exists(passfile)


@pytest.mark.parametrize(
    "text, prepared",
    [
        ("I\u00adX", b"IX"),  # RFC 4013 examples: soft hyphen mapped to nothing
        ("user", b"user"),
        ("USER", b"USER"),
        ("\u00aa", b"a"),
        ("\u2168", b"IX"),  # NFKC
        ("\u0007", b"\x07"),  # prohibited: the raw bytes, as libpq and the server do
        ("line\nbreak", b"line\nbreak"),
    ],
)
def test_saslprep(text, prepared):
    assert saslprep(text) == prepared


def test_scram_matches_the_rfc_7677_example():
    scram = Scram("pencil", nonce="rOprNGfwEbeRWgbNEkqO", username="user")
    assert scram.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = scram.final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    scram.check(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(Exception, match="signature is wrong"):
        scram.check(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_md5_response_is_the_protocols_double_hash():
    import hashlib

    inner = hashlib.md5(b"secretapp").hexdigest()
    assert (
        md5_response("secret", "app", b"\x01\x02\x03\x04")
        == b"md5" + hashlib.md5(inner.encode() + b"\x01\x02\x03\x04").hexdigest().encode()
    )
