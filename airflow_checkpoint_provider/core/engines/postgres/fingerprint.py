"""Fingerprints of a PostgreSQL database: row counts per table and a schema hash.

The same code runs inside the capture's snapshot transaction (so the fingerprints
describe exactly what pg_dump saw) and, through :func:`fingerprint`, against any
database later (a restored copy, a health check).

**Which relations.** Exactly the ones pg_dump dumps for the same filters. The
filters are pg_dump's own patterns (``-n/-N/-t/-T``, psql pattern syntax: ``*``,
``?``, ``"Quoted"`` names, ``schema.table``), translated to regular expressions the
way pg_dump does and evaluated by the server:

* never system schemas (``pg_*``, ``information_schema``) or extension members;
* with ``tables``: only relations matching a table pattern (``schemas`` and
  ``exclude_schemas`` then have no effect, as in pg_dump); an unqualified pattern
  matches relations visible on the default ``search_path``;
* otherwise relations in schemas matching ``schemas`` (all when empty) and not
  matching ``exclude_schemas``;
* minus relations matching ``exclude_tables``.

**Row counts** are taken for ordinary tables (and partitions) with
``count(*) FROM ONLY``; with ``exact_counts=False`` they are the planner's
``reltuples`` estimates (``None`` for a never-analysed table).

**schema_sha256** is the sha256 of the canonical JSON of a catalogue description
of the selected relations that survives a dump/restore round trip: relation
kinds and options, columns in order (name, type, not-null, default, identity,
generated, collation), constraints (``pg_get_constraintdef``), indexes
(``pg_get_indexdef``), triggers, partitioning, view definitions and sequence
parameters. It leaves out what a restore legitimately changes: OIDs, attribute
numbers of dropped columns, owners, privileges, comments, statistics, sizes.
Everything is printed with an empty ``search_path``, so names are fully
qualified and independent of session settings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from airflow_checkpoint_provider.core.engines.postgres._conn import one
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget
from airflow_checkpoint_provider.core.errors import NotFoundError
from airflow_checkpoint_provider.core.manifest import canonical_json

# --------------------------------------------------------------------------- filters


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class Filters:
    """pg_dump's object filters: ``-n``, ``-N``, ``-t``, ``-T`` patterns."""

    schemas: tuple[str, ...] = ()
    exclude_schemas: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()

    @classmethod
    def of(cls, schemas: Any = (), exclude_schemas: Any = (), tables: Any = (), exclude_tables: Any = ()) -> Filters:
        f = cls(_as_tuple(schemas), _as_tuple(exclude_schemas), _as_tuple(tables), _as_tuple(exclude_tables))
        for p in (*f.schemas, *f.exclude_schemas):
            schema_regex(p)  # validates
        for p in (*f.tables, *f.exclude_tables):
            table_regex(p)
        return f

    def pg_dump_args(self) -> list[str]:
        return (
            [f"--schema={p}" for p in self.schemas]
            + [f"--exclude-schema={p}" for p in self.exclude_schemas]
            + [f"--table={p}" for p in self.tables]
            + [f"--exclude-table={p}" for p in self.exclude_tables]
        )

    def to_meta(self) -> dict[str, list[str]]:
        return {
            "schemas": list(self.schemas),
            "exclude_schemas": list(self.exclude_schemas),
            "tables": list(self.tables),
            "exclude_tables": list(self.exclude_tables),
        }

    def __bool__(self) -> bool:
        return bool(self.schemas or self.exclude_schemas or self.tables or self.exclude_tables)


def pattern_to_regexes(pattern: str) -> list[str]:
    """Split a psql-style pattern at unquoted dots; each part as an anchored POSIX regex.

    A port of ``patternToSQLRegex`` (src/fe_utils/string_utils.c), which pg_dump uses.
    """
    parts: list[list[str]] = [[]]
    inquotes = False
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        cur = parts[-1]
        if ch == '"':
            if inquotes and i + 1 < n and pattern[i + 1] == '"':
                cur.append('"')
                i += 1
            else:
                inquotes = not inquotes
        elif not inquotes and "A" <= ch <= "Z":
            cur.append(ch.lower())
        elif not inquotes and ch == "*":
            cur.append(".*")
        elif not inquotes and ch == "?":
            cur.append(".")
        elif not inquotes and ch == ".":
            parts.append([])
        elif ch == "$":
            cur.append("\\$")
        else:
            if inquotes and ch in "|*+?()[]{}.^\\":
                cur.append("\\")
            elif ch == "[" and i + 1 < n and pattern[i + 1] == "]":
                cur.append("\\")
            cur.append(ch)
        i += 1
    return ["^(" + "".join(p) + ")$" for p in parts]


def table_regex(pattern: str) -> tuple[str | None, str]:
    """(schema regex or None for "visible on search_path", name regex) of a table pattern."""
    parts = pattern_to_regexes(pattern)
    if len(parts) > 3:
        raise ValueError(f"improper table pattern {pattern!r}: too many dotted names (at most db.schema.table)")
    if len(parts) == 1:
        return None, parts[0]
    return parts[-2], parts[-1]


def schema_regex(pattern: str) -> str:
    parts = pattern_to_regexes(pattern)
    if len(parts) > 2:
        raise ValueError(f"improper schema pattern {pattern!r}: too many dotted names (at most db.schema)")
    return parts[-1]


# --------------------------------------------------------------------------- selection

_SELECT = """
WITH rels AS (
    SELECT c.oid, c.relkind::text AS relkind, c.reltuples, n.nspname, c.relname,
           pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS qname,
           pg_catalog.pg_table_is_visible(c.oid) AS visible
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
    WHERE c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'v', 'm', 'S', 'f']::"char"[])
      AND n.nspname OPERATOR(pg_catalog.!~) '^pg_'
      AND n.nspname OPERATOR(pg_catalog.<>) 'information_schema'
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                        AND d.objid OPERATOR(pg_catalog.=) c.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')
)
SELECT r.oid, r.qname, r.relkind, r.reltuples
FROM rels r
WHERE CASE WHEN pg_catalog.cardinality(%(t_n)s::text[]) > 0 THEN
          EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest(%(t_s)s::text[]), pg_catalog.unnest(%(t_n)s::text[])) AS p(s, n)
                  WHERE r.relname OPERATOR(pg_catalog.~) p.n COLLATE pg_catalog.default
                    AND CASE WHEN p.s IS NULL THEN r.visible
                             ELSE r.nspname OPERATOR(pg_catalog.~) p.s COLLATE pg_catalog.default END)
      ELSE
          (pg_catalog.cardinality(%(s_in)s::text[]) = 0
           OR EXISTS (SELECT 1 FROM pg_catalog.unnest(%(s_in)s::text[]) AS s(re)
                      WHERE r.nspname OPERATOR(pg_catalog.~) s.re COLLATE pg_catalog.default))
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(%(s_ex)s::text[]) AS s(re)
                          WHERE r.nspname OPERATOR(pg_catalog.~) s.re COLLATE pg_catalog.default)
      END
  AND NOT EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest(%(x_s)s::text[]), pg_catalog.unnest(%(x_n)s::text[])) AS p(s, n)
                  WHERE r.relname OPERATOR(pg_catalog.~) p.n COLLATE pg_catalog.default
                    AND CASE WHEN p.s IS NULL THEN r.visible
                             ELSE r.nspname OPERATOR(pg_catalog.~) p.s COLLATE pg_catalog.default END)
ORDER BY r.qname
"""


@dataclass
class Selection:
    """The relations a dump with these filters contains: (oid, qualified name, relkind, reltuples)."""

    relations: list[tuple[int, str, str, float]] = field(default_factory=list)

    @property
    def oids(self) -> list[int]:
        return [r[0] for r in self.relations]

    @property
    def tables(self) -> list[tuple[int, str, float]]:
        return [(oid, q, t) for oid, q, kind, t in self.relations if kind == "r"]


def select_relations(conn: psycopg.Connection, filters: Filters) -> Selection:
    """Evaluate the filters in the current transaction (with the session's default search_path)."""
    t = [table_regex(p) for p in filters.tables]
    x = [table_regex(p) for p in filters.exclude_tables]
    params = {
        "t_s": [s for s, _ in t], "t_n": [n for _, n in t],
        "x_s": [s for s, _ in x], "x_n": [n for _, n in x],
        "s_in": [schema_regex(p) for p in filters.schemas],
        "s_ex": [schema_regex(p) for p in filters.exclude_schemas],
    }  # fmt: skip
    rows = conn.execute(_SELECT, params).fetchall()
    return Selection([(int(oid), q, kind, float(tup)) for oid, q, kind, tup in rows])


def check_selection(conn: psycopg.Connection, filters: Filters, where: str) -> None:
    """Fail like pg_dump would when -n or -t patterns match nothing, but before it runs."""
    if filters.tables:
        if not select_relations(conn, Filters(tables=filters.tables)).relations:
            raise NotFoundError(
                f"{where}: no table matches tables={list(filters.tables)}",
                hint="patterns use psql syntax (schema.table, *, ?); unqualified names "
                "match tables on the search_path; names are case-folded unless quoted",
            )
    elif filters.schemas:
        n = one(
            conn.execute(
                "SELECT count(*) FROM pg_catalog.pg_namespace n, pg_catalog.unnest(%s::text[]) AS s(re) "
                "WHERE n.nspname OPERATOR(pg_catalog.~) s.re COLLATE pg_catalog.default",
                ([schema_regex(p) for p in filters.schemas],),
            )
        )[0]
        if not n:
            raise NotFoundError(
                f"{where}: no schema matches schemas={list(filters.schemas)}",
                hint="check the schema names (case-folded unless quoted)",
            )


def unreadable(conn: psycopg.Connection, selection: Selection) -> list[str]:
    """Selected tables and sequences the current role may not SELECT from (pg_dump would fail on them)."""
    oids = [oid for oid, _q, kind, _t in selection.relations if kind in ("r", "p", "S")]
    rows = conn.execute(
        "SELECT o FROM pg_catalog.unnest(%s::oid[]) AS o WHERE NOT pg_catalog.has_table_privilege(o, 'SELECT')",
        (oids,),
    ).fetchall()
    missing = {int(r[0]) for r in rows}
    return [q for oid, q, _k, _t in selection.relations if oid in missing]


# --------------------------------------------------------------------------- description

_RELATIONS = """
SELECT c.oid, c.relkind::text, c.relpersistence::text, c.relrowsecurity, c.relforcerowsecurity,
       COALESCE((SELECT array_agg(o ORDER BY o) FROM pg_catalog.unnest(c.reloptions) o), '{}'),
       CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END
FROM pg_catalog.pg_class c WHERE c.oid = ANY (%(oids)s::oid[])
"""
_COLUMNS = """
SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
       CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::pg_catalog.regcollation::text END
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
WHERE a.attrelid = ANY (%(oids)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind <> 'S'
ORDER BY a.attrelid, a.attnum
"""
_CONSTRAINTS = """
SELECT conrelid, conname, contype::text, pg_catalog.pg_get_constraintdef(oid), convalidated
FROM pg_catalog.pg_constraint WHERE conrelid = ANY (%(oids)s::oid[])
ORDER BY conrelid, conname
"""
_INDEXES = """
SELECT indrelid, pg_catalog.pg_get_indexdef(indexrelid) AS def
FROM pg_catalog.pg_index WHERE indrelid = ANY (%(oids)s::oid[])
ORDER BY indrelid, def
"""
_TRIGGERS = """
SELECT tgrelid, pg_catalog.pg_get_triggerdef(oid) AS def, tgenabled::text
FROM pg_catalog.pg_trigger WHERE tgrelid = ANY (%(oids)s::oid[]) AND NOT tgisinternal
ORDER BY tgrelid, def
"""
_SEQUENCES = """
SELECT s.seqrelid, pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmax, s.seqmin,
       s.seqcache, s.seqcycle,
       (SELECT ARRAY[pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
                     a.attname::text]
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class c ON c.oid = d.refobjid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = s.seqrelid
          AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i')
        LIMIT 1)
FROM pg_catalog.pg_sequence s WHERE s.seqrelid = ANY (%(oids)s::oid[])
"""


def describe(conn: psycopg.Connection, selection: Selection) -> dict[str, Any]:
    """Canonical description of the selected relations (run with an empty search_path)."""
    names = {oid: q for oid, q, _k, _t in selection.relations}
    p = {"oids": list(names)}
    rels: dict[str, dict[str, Any]] = {}
    for oid, kind, persistence, rls, force_rls, options, partkey, bound, viewdef in conn.execute(_RELATIONS, p):
        d: dict[str, Any] = {"kind": kind, "persistence": persistence, "options": list(options)}
        if rls or force_rls:
            d["row_security"] = [rls, force_rls]
        if partkey:
            d["partition_key"] = partkey
        if bound:
            d["partition_bound"] = bound
        if viewdef is not None:
            d["definition"] = " ".join(viewdef.split())
        rels[names[oid]] = d
    for rel, name, typ, notnull, default, identity, generated, collation in conn.execute(_COLUMNS, p):
        col = [name, typ, notnull, default, identity or "", generated or "", collation]
        rels[names[rel]].setdefault("columns", []).append(col)
    for rel, name, contype, definition, validated in conn.execute(_CONSTRAINTS, p):
        rels[names[rel]].setdefault("constraints", []).append([name, contype, definition, validated])
    for rel, definition in conn.execute(_INDEXES, p):
        rels[names[rel]].setdefault("indexes", []).append(definition)
    for rel, definition, enabled in conn.execute(_TRIGGERS, p):
        rels[names[rel]].setdefault("triggers", []).append([definition, enabled])
    selected = set(names.values())
    for rel, typ, start, inc, mx, mn, cache, cycle, owner in conn.execute(_SEQUENCES, p):
        # pg_dump writes OWNED BY only when it dumps the owning table too
        owned_by = f"{owner[0]}.{owner[1]}" if owner and owner[0] in selected else None
        rels[names[rel]]["sequence"] = {
            "type": typ,
            "start": int(start),
            "increment": int(inc),
            "max": int(mx),
            "min": int(mn),
            "cache": int(cache),
            "cycle": cycle,
            "owned_by": owned_by,
        }
    return {"relations": rels}


def columns_of(description: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The compact schema the drift report compares: ``{table: {column: type}}`` (core/drift.py)."""
    from airflow_checkpoint_provider.core.drift import columns_of as _columns

    return _columns(description)


def schema_sha256(description: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(description)).hexdigest()


def count_rows(conn: psycopg.Connection, selection: Selection, exact: bool) -> dict[str, int | None]:
    rows: dict[str, int | None] = {}
    for _oid, qname, reltuples in selection.tables:
        if exact:
            query = sql.SQL("SELECT pg_catalog.count(*) FROM ONLY {}").format(sql.SQL(qname))
            rows[qname] = int(one(conn.execute(query))[0])
        else:
            rows[qname] = int(round(reltuples)) if reltuples >= 0 else None
    return rows


def compute(
    conn: psycopg.Connection, selection: Selection, *, exact_counts: bool, server_version: str
) -> dict[str, Any]:
    """All fingerprints, in the connection's open transaction. Leaves ``search_path`` empty."""
    conn.execute("SELECT pg_catalog.set_config('search_path', '', true)")
    description = describe(conn, selection)
    rows = count_rows(conn, selection, exact_counts)
    size = one(conn.execute("SELECT pg_catalog.pg_database_size(pg_catalog.current_database())"))[0]
    return {
        "rows": rows,
        "row_counts": "exact" if exact_counts else "estimate",
        "schema_sha256": schema_sha256(description),
        "columns": columns_of(description),
        "server_version": server_version,
        "database_size": int(size),
    }


def fingerprint_in_transaction(
    conn: psycopg.Connection, filters: Filters, *, exact_counts: bool, server_version: str
) -> dict[str, Any]:
    return compute(conn, select_relations(conn, filters), exact_counts=exact_counts, server_version=server_version)


def open_snapshot_connection(target: PostgresTarget, dbname: str, action: str) -> psycopg.Connection:
    """A connection whose next statement starts a REPEATABLE READ, READ ONLY transaction."""
    from airflow_checkpoint_provider.core.engines.postgres._conn import connect

    conn = connect(target, dbname, autocommit=False, action=action)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


def names_of(relations: Sequence[tuple[int, str, str, float]]) -> list[str]:
    return [q for _o, q, _k, _t in relations]
