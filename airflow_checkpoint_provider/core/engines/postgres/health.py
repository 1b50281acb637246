"""Health of restored PostgreSQL databases: connect, ``SELECT 1``, tables exist, row counts.

``expectations`` takes the fingerprint shape, either wrapped or per database::

    {"databases": {"appdb": {"rows": {"public.orders": 8000, ...}}}}
    {"appdb": {"rows": {"public.orders": 8000, ...}, "row_counts": "exact"}}

Table names are the fingerprints' ``quote_ident(schema).quote_ident(table)``. They are parsed
into identifiers (never pasted into SQL), so a forged manifest cannot inject SQL. An expected
count of ``None`` (a never-analysed table in an estimate-count capture) or ``row_counts:
"estimate"`` checks existence only: estimates cannot be compared with real counts.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import psycopg
from psycopg import sql

from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.restore import HealthCheck, within

COMPONENT = "postgres"
_BARE = r"[a-z_][a-z0-9_$]*"
_QUOTED = r'"(?:[^"]|"")+"'
_QNAME = re.compile(rf"^({_BARE}|{_QUOTED})\.({_BARE}|{_QUOTED})\Z")


def split_qname(qname: str) -> tuple[str, str] | None:
    """``public."My Table"`` -> ``("public", "My Table")``; None if it is not quote_ident output."""
    m = _QNAME.fullmatch(qname)
    if not m:
        return None

    def unquote(part: str) -> str:
        return part[1:-1].replace('""', '"') if part.startswith('"') else part

    return unquote(m.group(1)), unquote(m.group(2))


def _per_database(expectations: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if "databases" in expectations and isinstance(expectations["databases"], dict):
        return expectations["databases"]
    return expectations


def health(target: PostgresTarget, expectations: dict[str, Any], *, tolerance: float = 0.0) -> list[HealthCheck]:
    """Checks per database: ``connect``, then one ``rows`` check per expected table.

    Never raises for an unhealthy server: every failure is a failed :class:`HealthCheck`
    whose detail names ``target.label`` and says what to do.
    """
    checks: list[HealthCheck] = []
    for db, expected in _per_database(expectations).items():
        where = f"{target.label}/{db}"
        try:
            conn = C.connect(target, db, action="checking health")
        except CheckpointError as exc:
            checks.append(HealthCheck(COMPONENT, f"{db}: connect", False, detail=str(exc)))
            continue
        try:
            with conn:
                try:
                    answer = C.one(conn.execute("SELECT 1"))[0]
                    version = C.version_string(C.server_version_num(conn))
                except psycopg.Error as exc:
                    err = C.scrub_target(" ".join(str(exc).split()), target)
                    checks.append(
                        HealthCheck(
                            COMPONENT,
                            f"{db}: connect",
                            False,
                            detail=f"{where}: SELECT 1 failed: {err}\nHINT: see the PostgreSQL server log",
                        )
                    )
                    continue
                checks.append(
                    HealthCheck(
                        COMPONENT,
                        f"{db}: connect",
                        answer == 1,
                        detail=f"{where}: SELECT 1 answered (PostgreSQL {version})",
                    )
                )
                estimates = (expected or {}).get("row_counts") == "estimate"
                for qname, want in sorted(((expected or {}).get("rows") or {}).items()):
                    checks.append(_table_check(conn, where, db, qname, want, tolerance, estimates))
        finally:
            with contextlib.suppress(Exception):
                conn.close()
    return checks


def _table_check(
    conn: psycopg.Connection, where: str, db: str, qname: str, want: int | None, tolerance: float, estimates: bool
) -> HealthCheck:
    name = f"{db}: table {qname} rows"
    parts = split_qname(qname)
    if parts is None:
        return HealthCheck(
            COMPONENT,
            name,
            False,
            want,
            None,
            f"{where}: {qname!r} is not a schema-qualified table name\n"
            "HINT: the checkpoint's fingerprints are damaged; verify the checkpoint",
        )
    try:
        exists = C.one(conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (qname,)))[0]
        if not exists:
            return HealthCheck(
                COMPONENT,
                name,
                False,
                want,
                None,
                f"{where}: table {qname} is missing\nHINT: the restore did not bring it back; "
                "restore the checkpoint again or check what dropped it",
            )
        actual = int(
            C.one(conn.execute(sql.SQL("SELECT pg_catalog.count(*) FROM ONLY {}").format(sql.Identifier(*parts))))[0]
        )
    except psycopg.Error as exc:
        return HealthCheck(
            COMPONENT,
            name,
            False,
            want,
            None,
            f"{where}: counting {qname} failed: {' '.join(str(exc).split())}\n"
            "HINT: check the role's SELECT privilege on the table",
        )
    if want is None or estimates:
        return HealthCheck(
            COMPONENT,
            name,
            True,
            want,
            actual,
            "exists; the checkpoint recorded estimates, so the count is not compared",
        )
    ok = within(int(want), actual, tolerance)
    diff = actual - int(want)
    detail = f"diff {diff:+d}" + (f" (tolerance {tolerance:.2%})" if tolerance else "")
    if not ok:
        detail = (
            f"{where}: table {qname} has {actual} rows, expected {want} ({detail})\n"
            "HINT: something wrote to the database after the restore, or the restore is incomplete"
        )
    return HealthCheck(COMPONENT, name, ok, int(want), actual, detail)
