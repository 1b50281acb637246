"""The engine registry: every engine fulfils the contract, and nothing outside the engines names one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.engines.contract import ConnectionInfo, Engine
from airflow_checkpoint_provider.core.errors import CheckpointError

PACKAGE = Path(__file__).resolve().parents[4] / "airflow_checkpoint_provider"
FORMAT = PACKAGE.parent / "docs" / "FORMAT.md"


@pytest.mark.parametrize("name", registry.names())
def test_every_engine_fulfils_the_contract(name):
    engine = registry.get(name)
    assert isinstance(engine, Engine) and engine.name == name and engine.kinds and engine.title
    # what a connection of any engine may carry: a server, credentials, and a directory in the extra
    target = engine.target_from_connection(
        ConnectionInfo(
            conn_id="x",
            conn_type=engine.conn_types[0],
            host="db.internal",
            port=1234,
            login="u",
            password="s3",
            extra={"path": "/srv/app/uploads"},
        )
    )
    assert "s3" not in repr(target) and "s3" not in str(target.public())  # the secret stays out
    assert callable(engine.capture) and callable(engine.restore) and callable(engine.recover)
    assert engine.is_own_copy("x__rollback_abc123_20260101000000") in (True, False)
    # the optional lifecycle functions: the deep check of its artifacts, and what lives outside the archive
    for optional in (engine.deep_check, engine.expire):
        assert optional is None or callable(optional)


@pytest.mark.parametrize("name", registry.names())
def test_every_engine_has_an_operator_for_its_component(name):
    from airflow_checkpoint_provider import engines

    cls = engines.operator_class(name)
    engine = registry.get(name)
    assert cls.component == name and cls.task_name
    import inspect

    assert engine.conn_param in inspect.signature(cls).parameters, f"{cls.__name__} takes {engine.conn_param}"


@pytest.mark.parametrize("name", registry.names())
def test_format_md_has_a_section_for_every_engine_and_its_artifact_kinds(name):
    text = FORMAT.read_text()
    assert f"(`store: {name}`)" in text, f"docs/FORMAT.md lacks the section of engine {name}"
    section = text.split(f"(`store: {name}`)", 1)[1].split("\n### ", 1)[0]
    for kind in registry.get(name).kinds:
        assert kind in section, f"docs/FORMAT.md's {name} section does not describe artifact kind {kind}"


def test_an_unknown_component_names_the_known_ones():
    with pytest.raises(CheckpointError, match="unknown component 'mongo'") as err:
        registry.get("mongo")
    assert all(n in err.value.hint for n in registry.names())


def _operator_module(name: str) -> str:
    """``airflow_checkpoint_provider.operators.postgres:PgDumpOperator`` -> ``operators/postgres.py``."""
    module = registry.get(name).operator.partition(":")[0]
    return module.removeprefix(f"{PACKAGE.name}.").replace(".", "/") + ".py"


#: modules that belong to one engine (its core package, its operator, hook and trigger): they may name it
ENGINE_MODULES = ("core/engines/", *(_operator_module(n) for n in registry.names()), "hooks/", "triggers/search.py")


def _deploy_check_names(tree: ast.AST) -> set[int]:
    """String constants that name a pre-deploy check (``check="files"``, ``self.check == "files"``, the
    ``CHECKS`` tuple): another vocabulary, which may share a word with an engine's name."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "check":
            found.add(id(node.value))
        elif isinstance(node, ast.Compare) and any(
            isinstance(side, (ast.Name, ast.Attribute)) and getattr(side, "id", getattr(side, "attr", "")) == "check"
            for side in (node.left, *node.comparators)
        ):
            found.update(id(side) for side in (node.left, *node.comparators))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CHECKS" for t in node.targets):
            found.update(id(e) for e in getattr(node.value, "elts", []))
    return found


def _code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that are not docstrings, nor names of pre-deploy checks."""
    skipped = _deploy_check_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skipped.add(id(first.value))
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skipped
    ]


def test_nothing_outside_the_engines_names_an_engine():
    names = set(registry.names())
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(ENGINE_MODULES):
            continue
        for line, value in _code_strings(ast.parse(path.read_text())):
            if value in names:
                offenders.append(f"{rel}:{line}: {value!r}")
    assert offenders == [], "these read the registry instead of naming an engine:\n" + "\n".join(offenders)
