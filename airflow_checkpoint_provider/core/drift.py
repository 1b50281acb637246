"""Drift: what changed in the live stores and in the deployment since a checkpoint was taken.

A restore plan (:mod:`.recovery`, step 2) lists the drift before anything changes, so that a
migration that ran after a ``pre-migration`` checkpoint shows as exactly what the restore undoes:

- **schema drift**, per component (``ComponentRestore.drift()``, optional): PostgreSQL tables and
  columns added, removed or retyped since the capture (the manifest's ``columns`` fingerprint;
  older manifests: the table list of ``rows`` and ``schema_sha256``); search indices whose mapping
  changed (``mapping_sha256``);
- **config drift**: the keys of the deployment configuration (config files by content, required
  environment variable *names* and whether they are set, never their values, installed versions of
  the dependencies) whose digest differs from the one the manifest recorded in ``config_keys``.

Policy: drift *warns*, it never blocks. Undoing what changed since the checkpoint is what a
restore is for (a side-by-side restore keeps the replaced state as a rollback copy), so the plan,
dry runs included, lists every drift line as a ``DRIFT`` warning, logged and kept in the restore
audit. ``allow_drift`` records that someone looked at them: the same lines become accepted notes
(``drift_accepted`` in the plan and the audit). It never overrides a compatibility problem (a dump
of a newer PostgreSQL major, a newer RDB version, a snapshot of a newer search major than the
target takes): those are plan problems and refuse the restore, ``allow_drift`` or not.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from airflow_checkpoint_provider.core.deploycheck import requirement_names
from airflow_checkpoint_provider.core.workflow.codec import changed_keys, config_digest

#: the top-level key of the deployment part of a checkpoint's configuration
DEPLOYMENT = "deployment"
_KINDS = ("config_files", "env", "packages")


def _file_digest(path: str) -> str:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({type(exc).__name__})"
    return "sha256:" + h.hexdigest()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def deployment_config(
    config_files: Iterable[str] = (),
    env: Iterable[str] = (),
    packages: Mapping[str, str] | Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The deployment as it is now: ``{"config_files": {path: content sha256}, "env": {NAME: "set"|"unset"},
    "packages": {name: installed version}}``. Environment values are never read into it."""
    envmap = os.environ if environ is None else environ
    return {
        "config_files": {p: _file_digest(p) for p in sorted(set(config_files))},
        "env": {n: "set" if envmap.get(n) else "unset" for n in sorted(set(env))},
        "packages": {n: _version(n) for n in sorted(set(requirement_names(packages)))},
    }


def merge(*parts: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """Union of ``{"config_files": [...], "env": [...], "packages": [...] or {name: spec}}`` descriptions."""
    out: dict[str, list[str]] = {k: [] for k in _KINDS}
    for part in parts:
        for kind in _KINDS:
            value = (part or {}).get(kind) or []
            names = requirement_names(value) if kind == "packages" else [str(v) for v in value]
            out[kind] += [n for n in names if n and n not in out[kind]]
    return out


def recorded_names(config_keys: Mapping[str, str]) -> dict[str, list[str]]:
    """The files, variables and packages a manifest's ``config_keys`` recorded (from the key paths)."""
    out: dict[str, list[str]] = {k: [] for k in _KINDS}
    for key in config_keys:
        for kind in _KINDS:
            prefix = f"{DEPLOYMENT}.{kind}."
            if key.startswith(prefix):
                out[kind].append(key[len(prefix) :])
    return out


def config_changes(
    recorded: Mapping[str, str], current: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Config drift lines: each deployment key whose digest differs from the recorded one.

    ``current``: the deployment description configured now (:func:`merge` form); the keys the
    manifest recorded are always compared too. Keys of the capture configuration (connection ids,
    options) describe how the checkpoint was taken and are not compared."""
    wanted = merge(recorded_names(recorded), current)
    if not any(wanted.values()):
        return []
    found = deployment_config(wanted["config_files"], wanted["env"], wanted["packages"], environ=environ)
    now = config_digest({DEPLOYMENT: found})
    mine = {k: v for k, v in recorded.items() if k.startswith(f"{DEPLOYMENT}.")}
    lines = []
    for key in changed_keys(mine, {k: v for k, v in now.items() if k.startswith(f"{DEPLOYMENT}.")}):
        if key not in mine:
            lines.append(f"config {key} is new since the checkpoint (the checkpoint did not record it)")
        elif key not in now:
            lines.append(f"config {key} is no longer part of the deployment")
        else:
            lines.append(f"config {key} changed since the checkpoint")
    return lines


def schema_changes(
    where: str, recorded: Mapping[str, Mapping[str, str]], live: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """Schema drift lines of one database: ``{table: {column: type}}`` as recorded vs as it is now."""
    lines = []
    for table in sorted(set(live) - set(recorded)):
        lines.append(f"{where}: table {table} was added since the checkpoint; the restore removes it")
    for table in sorted(set(recorded) - set(live)):
        lines.append(f"{where}: table {table} was removed since the checkpoint; the restore brings it back")
    for table in sorted(set(recorded) & set(live)):
        was, now = recorded[table], live[table]
        for col in [c for c in now if c not in was]:
            lines.append(f"{where}: column {table}.{col} was added since the checkpoint; the restore removes it")
        for col in [c for c in was if c not in now]:
            lines.append(f"{where}: column {table}.{col} was removed since the checkpoint; the restore brings it back")
        for col in [c for c in was if c in now and was[c] != now[c]]:
            lines.append(
                f"{where}: column {table}.{col} is {now[col]} now, {was[col]} in the checkpoint; the restore "
                "changes it back"
            )
    return lines


def columns_of(description: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{table: {column: type}}`` of a PostgreSQL catalogue description (fingerprint.describe);
    tables, views and foreign tables, not sequences (a serial column's sequence follows its table)."""
    return {
        rel: {str(c[0]): str(c[1]) for c in d.get("columns", [])}
        for rel, d in description.get("relations", {}).items()
        if d.get("kind") != "S"
    }
