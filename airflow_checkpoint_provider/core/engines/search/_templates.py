"""Index templates of the captured indices: record them at capture, put them back at restore.

A snapshot without the global state holds no template, so an index or data stream restored into
a cluster that lacks its templates would come back without what keeps it working (the data stream
template new backing indices need, the mappings of tomorrow's daily index). The capture records
every template whose ``index_patterns`` match a captured index or data stream: composable index
templates, the component templates they are composed of, and legacy templates. The document's
``templates``::

    {"component_templates": {name: body}, "index_templates": {name: body}, "legacy_templates": {name: body}}

with each body as ``GET`` returns it (and ``PUT`` takes it). A restore creates the missing ones
(``restore_templates`` None, the default, or True), never changes a differing existing template
unless ``restore_templates`` is True (the plan shows the difference either way), and touches no
template with ``restore_templates=False``.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search._client import (
    SearchClient,
    _Req,
    _seg,
)
from airflow_checkpoint_provider.core.engines.search._ops import send

#: template kind -> (path, label); components first: index templates are composed of them
KINDS = {
    "component_templates": ("_component_template", "component template"),
    "index_templates": ("_index_template", "index template"),
    "legacy_templates": ("_template", "legacy template"),
}


def _get_all(client: SearchClient, kind: str, name: str = "*") -> dict[str, dict[str, Any]]:
    path, label = KINDS[kind]
    body = send(client, _Req("GET", f"{path}/{_seg(name, safe='*')}", f"read the {label}s", missing_ok=True)) or {}
    if kind == "legacy_templates":
        return {str(k): dict(v or {}) for k, v in body.items()}
    key, inner = (
        ("component_templates", "component_template")
        if kind == "component_templates"
        else ("index_templates", "index_template")
    )
    return {str(t["name"]): dict(t.get(inner) or {}) for t in body.get(key) or []}


def get_template(client: SearchClient, kind: str, name: str) -> dict[str, Any] | None:
    return _get_all(client, kind, name).get(name)


def put_template(client: SearchClient, kind: str, name: str, body: dict[str, Any]) -> None:
    path, label = KINDS[kind]
    send(client, _Req("PUT", f"{path}/{_seg(name)}", f"put the {label} {name!r}", body=body))


def delete_template(client: SearchClient, kind: str, name: str) -> bool:
    path, label = KINDS[kind]
    return (
        send(client, _Req("DELETE", f"{path}/{_seg(name)}", f"delete the {label} {name!r}", missing_ok=True))
        is not None
    )


def _matches(patterns: Any, names: list[str]) -> bool:
    pats = [patterns] if isinstance(patterns, str) else list(patterns or [])
    return any(fnmatch.fnmatchcase(n, str(p)) for p in pats for n in names)


def collect_templates(client: SearchClient, names: list[str]) -> dict[str, dict[str, Any]]:
    """The templates whose patterns match any of ``names`` (indices and data streams), and the
    component templates those are composed of."""
    index_templates = {
        k: v for k, v in _get_all(client, "index_templates").items() if _matches(v.get("index_patterns"), names)
    }
    used = sorted({c for v in index_templates.values() for c in v.get("composed_of") or []})
    components = _get_all(client, "component_templates")
    legacy = {k: v for k, v in _get_all(client, "legacy_templates").items() if _matches(v.get("index_patterns"), names)}
    return {
        "component_templates": {c: components[c] for c in used if c in components},
        "index_templates": index_templates,
        "legacy_templates": legacy,
    }


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def difference(have: dict[str, Any], want: dict[str, Any], limit: int = 6) -> str:
    """``settings.index.number_of_shards: 2 (checkpoint: 1); ...``: what differs, briefly."""
    a, b = _flat(have), _flat(want)
    keys = sorted(k for k in set(a) | set(b) if L.canonical_json_any(a.get(k)) != L.canonical_json_any(b.get(k)))
    parts = [f"{k}: {a.get(k, '<absent>')!r} (checkpoint: {b.get(k, '<absent>')!r})" for k in keys[:limit]]
    return "; ".join(parts) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def plan_templates(
    client: SearchClient, recorded: dict[str, dict[str, Any]], restore_templates: bool | None
) -> list[dict[str, Any]]:
    """One entry per recorded template: ``{"kind", "name", "action", "body", "previous", "text"}``.

    ``action``: ``create`` (missing), ``overwrite`` (differs, ``restore_templates=True``),
    ``keep`` (differs, left as it is), ``equal``, or ``skip`` (``restore_templates=False``).
    """
    out: list[dict[str, Any]] = []
    for kind in KINDS:
        wanted = recorded.get(kind) or {}
        live = _get_all(client, kind) if wanted else {}
        label = KINDS[kind][1]
        for name, body in sorted(wanted.items()):
            have = live.get(name)
            if have is not None and L.canonical_json_any(have) == L.canonical_json_any(body):
                action, text = "equal", f"{label} {name} is as the checkpoint has it"
            elif restore_templates is False:
                action = "skip"
                text = (
                    f"{label} {name} is missing (restore_templates=False: not created)"
                    if have is None
                    else f"{label} {name} differs from the checkpoint's (restore_templates=False: left as it is): "
                    + difference(have, body)
                )
            elif have is None:
                action, text = "create", f"{label} {name} is missing: it will be created from the checkpoint"
            elif restore_templates:
                action = "overwrite"
                text = f"{label} {name} differs and will be overwritten with the checkpoint's: " + difference(
                    have, body
                )
            else:
                action = "keep"
                text = (
                    f"{label} {name} differs from the checkpoint's and is left as it is (restore_templates=True "
                    "overwrites it): " + difference(have, body)
                )
            out.append({"kind": kind, "name": name, "action": action, "body": body, "previous": have, "text": text})
    return out
