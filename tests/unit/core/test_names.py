"""Name patterns match the whole name: "$" also matches before a trailing newline, so none may use it."""

from __future__ import annotations

import ast
import io
import pathlib
import tarfile

import pytest

import airflow_checkpoint_provider
from airflow_checkpoint_provider.core.archive import member_name_problem
from airflow_checkpoint_provider.core.engines.postgres import is_rollback_name, untar_dump_directory
from airflow_checkpoint_provider.core.engines.postgres.capture import artifact_base
from airflow_checkpoint_provider.core.engines.postgres.health import split_qname
from airflow_checkpoint_provider.core.engines.search._logic import validate_snapshot_name
from airflow_checkpoint_provider.core.engines.search.restore import ROLLBACK_RE, STAGING_RE
from airflow_checkpoint_provider.core.errors import CheckpointError, CheckpointNotFoundError, UnsafeArchiveError
from airflow_checkpoint_provider.core.manifest import validate_artifact_name, validate_checkpoint_id


def test_checkpoint_id_with_trailing_newline_is_refused(store):
    with pytest.raises(CheckpointError, match="invalid checkpoint id"):
        validate_checkpoint_id("x\n")
    with pytest.raises(CheckpointNotFoundError, match="not a valid checkpoint id"):
        store.resolve("x\n")


def test_artifact_name_with_trailing_newline_is_refused():
    with pytest.raises(CheckpointError, match="invalid artifact name"):
        validate_artifact_name("postgres/app.dump\n")
    assert member_name_problem("artifacts/postgres/app.dump.zst\n") is not None


def _dump_tar(*names: str) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name in names:
            ti = tarfile.TarInfo(name)
            ti.size = 4
            tf.addfile(ti, io.BytesIO(b"data"))
    buf.seek(0)
    return buf


def test_dump_entry_with_trailing_newline_is_refused(tmp_path):
    with pytest.raises(UnsafeArchiveError, match=r"entry '3002.dat\\n'"):
        untar_dump_directory(_dump_tar("toc.dat", "3002.dat\n"), str(tmp_path), source="postgres/app.dir.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toc.dat"]


def test_engine_names_with_trailing_newline_are_not_taken_for_own_copies_or_safe_names():
    assert not is_rollback_name("app__rollback_7c4e1a_20261122123042\n")
    assert not ROLLBACK_RE.match("orders__rollback_7c4e1a_20261122123042\n")
    assert not STAGING_RE.match("orders__restoring_7c4e1a\n")
    assert artifact_base("app\n") != "app\n"
    with pytest.raises(CheckpointError, match="invalid snapshot name"):
        validate_snapshot_name("snap-1\n")
    assert split_qname("public.orders") == ("public", "orders") and split_qname("public.orders\n") is None


# ---- regression guard: no regex literal in the package may anchor with "$" ---------------------------

_RE_FUNCTIONS = {"compile", "match", "fullmatch", "search", "sub", "subn", "split", "findall", "finditer"}


def _dollar_anchor(pattern: str) -> bool:
    """True if ``pattern`` uses ``$`` as an anchor (not escaped, not inside a character class)."""
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            i += 1
            if i < len(pattern) and pattern[i] == "^":
                i += 1
            if i < len(pattern) and pattern[i] == "]":  # a leading "]" is literal
                i += 1
            continue
        elif c == "$":
            return True
        i += 1
    return False


def _literal(node: ast.expr, constants: dict[str, str]) -> str | None:
    """The text of a string literal, f-string (placeholders from module constants) or constant name."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                parts.append(_literal(value.value, constants) or "x")
            else:
                parts.append(_literal(value, constants) or "")
        return "".join(parts)
    return None


def _patterns(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    constants: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            text = _literal(node.value, constants)
            if text is not None:
                constants[node.targets[0].id] = text
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.args
            and node.func.attr in _RE_FUNCTIONS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
        ):
            text = _literal(node.args[0], constants)
            if text is not None:
                found.append((node.lineno, text))
    return found


def test_the_guard_recognises_dollar_anchors():
    assert _dollar_anchor(r"^[a-z]+$") and _dollar_anchor(r"(a$|b)")
    assert not _dollar_anchor(r"^[a-z_$]+\Z") and not _dollar_anchor(r"price \$5") and not _dollar_anchor(r"[]$]")


def test_no_regex_in_the_package_anchors_with_a_dollar():
    root = pathlib.Path(airflow_checkpoint_provider.__file__).parent
    checked, offenders = 0, []
    for path in sorted(root.rglob("*.py")):
        for line, pattern in _patterns(path):
            checked += 1
            if _dollar_anchor(pattern):
                offenders.append(f"{path.relative_to(root)}:{line}: {pattern!r}")
    assert checked > 20  # the scan does see the package's patterns
    assert offenders == [], "use \\Z (or fullmatch) instead of $:\n" + "\n".join(offenders)


def test_drill_names_fit_the_postgresql_identifier_limit_and_are_deterministic():
    from airflow_checkpoint_provider.core.engines.postgres._names import MAX_NAME_BYTES, drill_name, is_own_copy

    cid = "ckpt-20261201T120000Z-3fa9c1"
    assert drill_name("shop", cid) == "shop__drill_3fa9c1"
    long = "ä" * 40  # 80 bytes: shortened, keeping 8 hex digits of the full name's sha256
    name = drill_name(long, cid)
    assert len(name.encode()) <= MAX_NAME_BYTES and name.endswith("__drill_3fa9c1") and is_own_copy(name)
    assert drill_name(long, cid) == name and drill_name(long + "x", cid) != name
    other = drill_name("shop", "my-own-id")  # an id not generated by the provider: 8 hex digits of its sha256
    assert other.startswith("shop__drill_") and len(other) == len("shop__drill_") + 8


def test_search_drill_copy_names_are_own_copies_and_found_by_their_pattern():
    from airflow_checkpoint_provider.core.engines.search._names import DRILL_MARK, DRILL_RE, is_own_copy, staging_name

    name = staging_name("products", "3fa9c1", DRILL_MARK)
    assert name == "products__drill_3fa9c1" and is_own_copy(name)
    m = DRILL_RE.match(name)
    assert m and m.group("source") == "products" and m.group("short") == "3fa9c1"
    assert not DRILL_RE.match(name + "\n") and not STAGING_RE.match(name)
