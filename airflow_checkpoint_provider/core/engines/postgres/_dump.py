"""Reading a pg_dump archive: the strict directory-format tar reader and the TOC's database-level entries."""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO

from airflow_checkpoint_provider.core.errors import (
    FormatError,
    UnsafeArchiveError,
)
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE

_DUMP_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")

_TOC_LINE_RE = re.compile(r"^(\d+); \d+ \d+ (.*)\Z")

_RELATION_RE = re.compile(
    r"^(MATERIALIZED VIEW DATA|MATERIALIZED VIEW|FOREIGN TABLE|TABLE DATA|TABLE|VIEW|"
    r"SEQUENCE SET|SEQUENCE OWNED BY|SEQUENCE) (.*)\Z"
)

_DB_ENTRY_PREFIXES = (
    "DATABASE ",
    "DATABASE PROPERTIES ",
    "COMMENT - DATABASE ",
    "ACL - DATABASE ",
    "SECURITY LABEL - DATABASE ",
)

_IDENT = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")'

_CREATE_DB_RE = re.compile(rf"^CREATE DATABASE ({_IDENT}) WITH (.*)\Z", re.S)

_CONN_LIMIT_RE = re.compile(r"CONNECTION LIMIT = (-?\d{1,10})")

_ROLE_IN_DB_RE = re.compile(rf"ALTER ROLE ({_IDENT}) IN DATABASE ({_IDENT}) ((?:SET|RESET) .*)", re.S)

_CREATE_OPT_RE = re.compile(r"([A-Z_]+) = ('(?:[^']|'')*'|[A-Za-z0-9_]+)")

#: CREATE DATABASE options taken over from the dump; TEMPLATE is always template0, TABLESPACE and
#: OID are left out (they name things of the source server).
_KEPT_CREATE_OPTIONS = (
    "ENCODING",
    "LOCALE_PROVIDER",
    "LOCALE",
    "LC_COLLATE",
    "LC_CTYPE",
    "ICU_LOCALE",
    "ICU_RULES",
    "BUILTIN_LOCALE",
)


def untar_dump_directory(src: BinaryIO, dest: str, *, source: str, only_toc: bool = False) -> list[str]:
    """Extract a ``pg_dump/directory`` artifact (a tar of the dump directory's files) into ``dest``.

    Strict: only regular files with plain names (``toc.dat``, ``3350.dat``, ...) directly in
    ``dest``, ``toc.dat`` first, no name twice; files are created with O_EXCL | O_NOFOLLOW
    and mode 0600. Anything else raises :class:`UnsafeArchiveError` naming the entry, before
    anything is written for it. ``only_toc`` stops after ``toc.dat``.
    """
    names: list[str] = []
    try:
        with tarfile.open(fileobj=src, mode="r|", bufsize=CHUNK_SIZE) as tar:
            for member in tar:
                problem = None
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    problem = "is not a regular file"
                elif not _DUMP_FILE_RE.fullmatch(member.name):
                    problem = "is not a plain file name (no directories, no '..', no special characters)"
                elif member.name in names:
                    problem = "appears twice"
                elif not names and member.name != "toc.dat":
                    problem = "comes first, but a pg_dump directory tar starts with toc.dat"
                if problem:
                    raise UnsafeArchiveError(
                        f"{source}: entry {member.name!r} {problem}",
                        hint="refusing to extract this dump; it was not written by this tool or was tampered with",
                    )
                fd = os.open(
                    os.path.join(dest, member.name),
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                    0o600,
                )
                with os.fdopen(fd, "wb") as out:
                    data = tar.extractfile(member)
                    assert data is not None
                    left = member.size
                    while left:
                        chunk = data.read(min(left, CHUNK_SIZE))
                        if not chunk:
                            raise FormatError(
                                f"{source}: entry {member.name!r} is truncated",
                                hint="the artifact is damaged; verify the checkpoint",
                            )
                        out.write(chunk)
                        left -= len(chunk)
                names.append(member.name)
                if only_toc:
                    break
    except tarfile.TarError as exc:
        raise FormatError(
            f"{source}: not a readable tar of a pg_dump directory ({exc})",
            hint="the artifact is damaged; verify the checkpoint",
        ) from None
    if "toc.dat" not in names:
        raise FormatError(
            f"{source}: the pg_dump directory has no toc.dat",
            hint="the artifact is damaged or incomplete; verify the checkpoint",
        )
    return names


def _split_sql(text: str) -> list[str]:
    """Statements of pg_restore's SQL output: psql meta-commands, comments and SETs dropped."""
    lines = [ln for ln in text.splitlines() if not ln.startswith("\\") and not ln.startswith("--")]
    text = "\n".join(lines)
    out, cur, quote = [], [], ""
    for ch in text:
        cur.append(ch)
        if quote:
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
        elif ch == ";":
            stmt = "".join(cur).strip()
            cur = []
            if stmt and not stmt.startswith(("SET ", "SELECT pg_catalog.set_config")):
                out.append(stmt[:-1].strip())
    return out


@dataclass
class DumpInfo:
    """What the dump's table of contents says (read with ``pg_restore -C -l``, no data read)."""

    entries: int = 0
    relation_schemas: set[str] = field(default_factory=set)  #: schemas of dumped tables, views, sequences
    create_options: list[tuple[str, str]] = field(default_factory=list)  #: (KEY, SQL literal or keyword)
    owner: str | None = None
    settings: list[str] = field(default_factory=list)  #: ``SET ...`` / ``RESET ...`` tails of ALTER DATABASE
    comment: str | None = None  #: ``IS '...'`` tail of COMMENT ON DATABASE
    grants: list[tuple[str, str]] = field(default_factory=list)  #: (before, after) around ``ON DATABASE <name>``
    connection_limit: int | None = None  #: ``ALTER DATABASE ... CONNECTION LIMIT = n`` (None: unlimited)
    role_settings: list[tuple[str, str]] = field(default_factory=list)  #: (role, ``SET ...``) of ALTER ROLE IN DATABASE
    skipped: list[str] = field(default_factory=list)

    def parse_listing(self, listing: str) -> list[str]:
        """Read ``pg_restore -C -l`` output; returns the lines of the database-level entries."""
        db_lines = []
        for line in listing.splitlines():
            m = _TOC_LINE_RE.match(line)
            if not m:
                continue
            self.entries += 1
            rest = m.group(2)
            if rest.startswith(_DB_ENTRY_PREFIXES):
                db_lines.append(line)
                continue
            rel = _RELATION_RE.match(rest)
            if rel and rel.group(1) in ("TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SEQUENCE"):
                parts = rel.group(2).split(" ")
                if len(parts) == 3 and parts[0] != "-":  # schema name owner; ambiguous when names hold spaces
                    self.relation_schemas.add(parts[0])
        return db_lines

    def parse_database_sql(self, text: str) -> None:
        statements = _split_sql(text)
        qname = None
        for stmt in statements:
            m = _CREATE_DB_RE.match(stmt)
            if m:
                qname = m.group(1)
                for key, value in _CREATE_OPT_RE.findall(m.group(2)):
                    if key in _KEPT_CREATE_OPTIONS:
                        self.create_options.append((key, value))
        if qname is None:
            return
        alter, comment = f"ALTER DATABASE {qname} ", f"COMMENT ON DATABASE {qname} "
        on_db, in_db = f" ON DATABASE {qname} ", f" IN DATABASE {qname} "
        for stmt in statements:
            if stmt.startswith("CREATE DATABASE "):
                continue
            limit = _CONN_LIMIT_RE.fullmatch(stmt[len(alter) :]) if stmt.startswith(alter) else None
            role = _ROLE_IN_DB_RE.fullmatch(stmt) if stmt.startswith("ALTER ROLE ") and in_db in stmt else None
            if limit:
                self.connection_limit = int(limit.group(1))
            elif role and role.group(2) == qname:
                self.role_settings.append((role.group(1), role.group(3)))
            elif stmt.startswith(alter + "OWNER TO "):
                self.owner = stmt[len(alter + "OWNER TO ") :].strip()
            elif stmt.startswith((alter + "SET ", alter + "RESET ")):
                self.settings.append(stmt[len(alter) :])
            elif stmt.startswith(comment + "IS "):
                self.comment = stmt[len(comment) :]
            elif stmt.startswith(("GRANT ", "REVOKE ")) and on_db in stmt:
                before, after = stmt.split(on_db, 1)
                self.grants.append((before, after))
            else:
                self.skipped.append(stmt if len(stmt) < 200 else stmt[:200] + "...")


def _unquote(ident: str) -> str:
    """A role name as pg_dump printed it (quoted if needed) -> the name."""
    return ident[1:-1].replace('""', '"') if ident.startswith('"') and ident.endswith('"') else ident
