"""Pre-deploy validation checks, as plain functions. Each returns a list of problems (empty = pass).

The checks users asked for before a deploy: required environment variables, required
configuration files, and dependency versions. (Connection reachability needs Airflow's
connections and lives in the operator layer.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet


def check_env(names: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """Each variable must be set and non-empty. Values are never echoed (they may be secrets)."""
    env = os.environ if environ is None else environ
    return [
        f"environment variable {n} is not set" if n not in env else f"environment variable {n} is empty"
        for n in names
        if not env.get(n)
    ]


def check_files(paths: Iterable[str]) -> list[str]:
    """Each path must be an existing, readable, non-empty file."""
    problems = []
    for p in paths:
        if not os.path.exists(p):
            problems.append(f"config file {p} does not exist")
        elif not os.path.isfile(p):
            problems.append(f"config file {p} is not a regular file")
        elif not os.access(p, os.R_OK):
            problems.append(f"config file {p} is not readable by this user")
        elif os.path.getsize(p) == 0:
            problems.append(f"config file {p} is empty")
    return problems


def requirement_names(requirements: Mapping[str, str] | Iterable[str]) -> list[str]:
    """The distribution names of ``{"name": "spec"}`` or ``["name>=1.0", ...]`` (unparsable: as given)."""
    if isinstance(requirements, str):
        requirements = [requirements]
    out = []
    for item in requirements:
        try:
            out.append(Requirement(str(item)).name)
        except InvalidRequirement:
            out.append(str(item).strip())
    return out


def check_dependencies(requirements: Mapping[str, str] | Iterable[str]) -> list[str]:
    """Installed distributions must satisfy the given specifiers.

    Accepts ``{"apache-airflow": ">=3.3,<3.4"}`` or ``["apache-airflow>=3.3,<3.4"]``.
    """
    items = (
        [(name, spec) for name, spec in requirements.items()]
        if isinstance(requirements, Mapping)
        else [(r, None) for r in requirements]
    )
    problems = []
    for name, spec in items:
        try:
            req = Requirement(name if spec is None else f"{name}{spec}")
        except (InvalidRequirement, InvalidSpecifier) as exc:
            problems.append(f"requirement {name!r} {spec or ''} is not valid: {exc}")
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"package {req.name} is not installed (required {req.specifier or 'any version'})")
            continue
        if req.specifier and not SpecifierSet(str(req.specifier)).contains(installed, prereleases=True):
            problems.append(f"package {req.name} is {installed}, required {req.specifier}")
    return problems
