"""Server-side HTML of the Checkpoints page: escaped text, inline CSS and an inline SVG chart.

Nothing is fetched from elsewhere (no CDN, no script): the page works on clusters without internet.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.ui import model
from airflow_checkpoint_provider.ui.model import Listing, storage_by_day

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1a202c}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #e2e8f0}
th{background:#f7fafc}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 .4rem;border-radius:.3rem;font-size:.8rem;margin-right:.2rem;background:#edf2f7}
.lkg{background:#2f855a;color:#fff}.verified,.drilled{background:#c6f6d5}.pinned{background:#2b6cb0;color:#fff}.bad{background:#c53030;color:#fff}
a.button,summary.button{display:inline-block;padding:.3rem .8rem;border-radius:.3rem;background:#2b6cb0;color:#fff;
text-decoration:none;margin-right:.5rem}
code{font-size:.85rem}.muted{color:#718096}
"""


def size(n: int | None) -> str:
    """Bytes for people: ``1.5 MiB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )


def _state(r: dict[str, Any]) -> str:
    state = r["state"]
    css = "bad" if state["state"] in ("corrupt", "drill_failed") else state["state"]
    title = f' title="{_e(state["reason"])}"' if state.get("reason") else ""
    return f'<span class="badge state {_e(css)}"{title}>{_e(state["label"])}</span>'


def _badges(r: dict[str, Any]) -> str:
    out = "".join(f"<span class=badge>{_e(t)}</span>" for t in r["tags"] if t)
    if r["pinned"]:
        out += '<span class="badge pinned">pinned</span>'
    if r["lkg"]:
        out += '<span class="badge lkg" data-lkg=1>LKG</span>'
    return out


def chart(days: list[tuple[str, int, int]], *, width: int = 720, height: int = 160) -> str:
    """Bars of bytes per day (labelled with the count), as an inline SVG."""
    if not days:
        return "<p class=muted>No checkpoints yet.</p>"
    top = max(b for _, b, _ in days) or 1
    step = width / len(days)
    bar = min(max(step * 0.8, 1.0), 48.0)
    parts = [
        f'<svg id=storage-chart xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" '
        f'role=img aria-label="bytes and checkpoints per day">'
    ]
    for i, (day, b, n) in enumerate(days):
        h = max(b / top * height, 1.0)
        x = i * step
        parts.append(
            f'<rect class=day x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
            f'fill="#2b6cb0"><title>{_e(day)}: {_e(size(b))} in {n} checkpoint(s)</title></rect>'
        )
        if len(days) <= 31 or i % max(len(days) // 12, 1) == 0:
            parts.append(f'<text x="{x:.1f}" y="{height + 14}" font-size="9">{_e(day[5:])}</text>')
    parts.append(f'<text x="0" y="{height + 28}" font-size="10">peak {_e(size(top))} per day</text></svg>')
    return "".join(parts)


def _health(ok: Any) -> str:
    return "-" if ok is None else ("healthy" if ok else "UNHEALTHY")


def _restores(records: list[dict[str, Any]], limit: int = 20) -> str:
    if not records:
        return "<p class=muted>No restores recorded.</p>"
    rows = "".join(
        f"<tr><td>{_e(str(r.get('recorded_at', ''))[:19].replace('T', ' '))}</td><td>{_e(r.get('status', ''))}</td>"
        f"<td>{_e(r.get('checkpoint_id') or r.get('requested_checkpoint') or '')}</td>"
        f"<td>{_e(','.join(map(str, r.get('components') or [])))}</td>"
        f"<td>{_e(_health((r.get('health') or {}).get('ok')))}</td>"
        f"<td>{_e(r.get('dag_id', ''))}/{_e(r.get('run_id', ''))}</td></tr>"
        for r in records[:limit]
    )
    return (
        "<table id=restores><tr><th>When (UTC)</th><th>Status</th><th>Checkpoint</th><th>Stores</th>"
        f"<th>Health</th><th>Run</th></tr>{rows}</table>"
    )


def _records(records: list[dict[str, Any]]) -> str:
    if not records:
        return "<p class=muted>Never verified or drilled since it was sealed.</p>"
    rows = "".join(
        f"<tr><td>{_e(r['recorded_at'][:19].replace('T', ' '))}</td><td>{_e(r['kind'])}</td>"
        f"<td>{_e(r.get('level') or '-')}</td><td>{_e(r['outcome'])}</td><td class=num>{_e(r['duration_ms'])} ms</td>"
        f"<td>{_e('; '.join(str(p.get('detail') or p) for p in r.get('problems') or []))}</td></tr>"
        for r in sorted(records, key=lambda r: r["recorded_at"], reverse=True)
    )
    return (
        "<table id=records><tr><th>When (UTC)</th><th>Kind</th><th>Level</th><th>Outcome</th><th>Took</th>"
        f"<th>Problems</th></tr>{rows}</table>"
    )


def _workflows(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class=muted>No workflow checkpoints.</p>"
    body = "".join(
        f"<tr><td><code>{_e(w.get('workflow_id', ''))}</code></td><td>{_e(w.get('status', ''))}</td>"
        f"<td class=num>{_e(w.get('states', ''))}</td><td>{_e(w.get('latest_step', ''))}</td>"
        f"<td>{_e(str(w.get('updated_at', ''))[:19].replace('T', ' '))}</td>"
        f"<td class=num>{_e(size(w.get('size')))}</td></tr>"
        for w in rows
    )
    return (
        "<table id=workflows><tr><th>Workflow</th><th>Status</th><th>States</th><th>Latest step</th>"
        f"<th>Updated (UTC)</th><th>Size</th></tr>{body}</table>"
    )


def list_page(
    data: Listing,
    *,
    base: str,
    total: int,
    workflows: list[dict[str, Any]] | None = None,
    days: list[tuple[str, int, int]] | None = None,
) -> str:
    """The list view: checkpoints, LKG history, restores and the storage chart (``days``: of every
    checkpoint, else of the rows shown)."""
    rows = "".join(
        f'<tr class=checkpoint data-id="{_e(r["checkpoint_id"])}"><td><a href="{_e(base)}/ui/'
        f'{quote(r["checkpoint_id"])}">{_e(r["checkpoint_id"])}</a></td>'
        f"<td>{_e(r['created_at'][:19].replace('T', ' '))}</td><td class=num>{_e(size(r['size']))}"
        + (
            f" <span class=muted>+ {_e(size(r['search_snapshot_bytes']))} search</span>"
            if r["search_snapshot_bytes"]
            else ""
        )
        + f"</td><td>{_e(', '.join(r['stores']))}</td><td>{_state(r)}</td><td class=num>{_e(r['skew_ms'])} ms</td>"
        f"<td>{_badges(r)}</td></tr>"
        for r in data.rows
    )
    damaged = "".join(
        f'<tr><td>{_e(d["checkpoint_id"])}</td><td colspan=6><span class="badge bad">damaged</span> '
        f"{_e(d['problem'])}</td></tr>"
        for d in data.damaged
    )
    lkg = data.lkg
    head = (
        f'<p>Last known good: <a id=lkg href="{_e(base)}/ui/{quote(lkg["checkpoint_id"])}">'
        f"{_e(lkg['checkpoint_id'])}</a> <span class=muted>set {_e(lkg['set_at'][:19])} "
        f"({_e(lkg['reason'])})</span></p>"
        if lkg
        else "<p>No last-known-good checkpoint yet.</p>"
    )
    shown = f"{len(data.rows)} of {total}" if total > len(data.rows) else str(total)
    history = "".join(
        f"<tr><td>{_e(p['set_at'][:19].replace('T', ' '))}</td><td>{_e(p['checkpoint_id'])}</td>"
        f"<td>{_e(p['reason'])}</td></tr>"
        for p in data.lkg_history[:20]
    )
    body = (
        f"<h1>Checkpoints</h1>{head}<p class=muted>{_e(shown)} checkpoint(s)</p>"
        "<table id=checkpoints><tr><th>Checkpoint</th><th>Created (UTC)</th><th>Size</th><th>Stores</th>"
        f"<th>State</th><th>Skew</th><th></th></tr>{rows}{damaged}</table>"
        f"<h2>Storage per day</h2>{chart(storage_by_day(data.rows) if days is None else days)}"
        f"<h2>Last-known-good history</h2><table id=lkg-history><tr><th>Set (UTC)</th><th>Checkpoint</th>"
        f"<th>Reason</th></tr>{history}</table>"
        f"<h2>Restores</h2>{_restores(data.restores)}"
        f"<h2>Workflow checkpoints</h2>{_workflows(workflows or [])}"
        f'<p><a id=rollbacks-link href="{_e(base)}/ui/rollbacks">Rollback copies in the live stores</a></p>'
    )
    return _page("Checkpoints", body)


def list_view(store: Store, *, base: str, rows: int) -> str:
    """The whole list view of ``store``: the newest ``rows`` checkpoints and workflows; the chart of all."""
    data = model.listing(store, limit=rows)
    return list_page(data, base=base, total=data.total, workflows=model.workflows(store)[:rows], days=data.days)


def rollbacks_page(copies: list[dict[str, Any]], problems: list[dict[str, Any]], *, base: str) -> str:
    """The rollback copies the restores left in the live stores, and the stores that could not be asked."""
    rows = "".join(
        f"<tr class=rollback><td>{_e(c['component'])}</td><td><code>{_e(c['name'])}</code></td>"
        f"<td><code>{_e(c['of'])}</code></td><td>{_e(c['checkpoint'])}</td>"
        f"<td>{_e(c['created_at'][:19].replace('T', ' '))}</td><td class=num>{_e(c['age_seconds'] // 3600)} h</td>"
        f"<td class=num>{_e(size(c['size']))}</td><td class=num>{_e('-' if c['items'] is None else c['items'])}</td></tr>"
        for c in copies
    )
    table = (
        "<table id=rollbacks><tr><th>Store</th><th>Copy</th><th>Of</th><th>Checkpoint</th><th>Created (UTC)</th>"
        f"<th>Age</th><th>Size</th><th>Keys / docs</th></tr>{rows}</table>"
        if copies
        else "<p id=rollbacks class=muted>No rollback copies in the stores that answered.</p>"
    )
    errors = "".join(
        f'<li class=unreachable data-component="{_e(p["component"])}"><b>{_e(p["component"])}</b> '
        f"(connection <code>{_e(p['conn_id'])}</code>): {_e(p['error'])}</li>"
        for p in problems
    )
    body = (
        f'<p><a href="{_e(base)}/ui/">← all checkpoints</a></p><h1>Rollback copies in the live stores</h1>'
        "<p class=muted>What each restore replaced, kept by <code>[checkpoint] rollback_keep</code>; drop them with "
        "<code>airflow-checkpoint rollbacks drop</code>.</p>"
        + (
            f'<div id=store-problems><p><span class="badge bad">not reachable</span></p><ul>{errors}</ul></div>'
            if errors
            else ""
        )
        + table
    )
    return _page("Rollback copies", body)


def detail_page(d: dict[str, Any], *, base: str) -> str:
    """One checkpoint: manifest fields, fingerprints per store, artifacts, restores, actions."""
    cid = d["checkpoint_id"]
    fields = [
        ("State", d["state"]["label"] + (f" ({d['state']['reason']})" if d["state"]["reason"] else "")),
        ("Created (UTC)", d["created_at"]),
        ("Archive size", size(d["size"])),
        ("Search snapshot", size(d["search_snapshot_bytes"])),
        ("Stores", ", ".join(d["stores"])),
        ("Engines", "; ".join(f"{k}: {v}" for k, v in d["engines"].items())),
        ("Capture window", f"{d['consistency']['window_start']} .. {d['consistency']['window_end']}"),
        ("Skew between stores", f"{d['skew_ms']} ms"),
        ("Config hash", d["config_hash"] or "-"),
        ("Format version", d["format_version"]),
    ]
    info = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in fields)
    prints = "".join(
        f"<h3>{_e(store)}</h3>"
        + "".join(f"<p><code>{_e(name)}</code></p>{_fingerprint_table(fp)}" for name, fp in sorted(arts.items()))
        for store, arts in sorted(d["fingerprints"].items())
    )
    arts = "".join(
        f"<tr><td><code>{_e(a['name'])}</code></td><td>{_e(a['kind'])}</td><td class=num>"
        f"{_e(size(a['size']))}</td><td class=num>{_e(size(a['raw_size']))}</td>"
        f"<td><code>{_e(a['sha256'][:16])}…</code></td></tr>"
        for a in d["artifacts"]
    )
    form = (
        f"<details id=restore><summary class=button id=restore-button>Restore…</summary>"
        f'<form method=post action="{_e(base)}/ui/{quote(cid)}/restore" target=_top>'
        f"<p>Restores <code>{_e(cid)}</code> side by side through <code>restore_checkpoint</code>; the current "
        "state is kept as a rollback copy. Type the checkpoint id to confirm.</p>"
        f'<p><input name=confirm id=restore-confirm size=40 placeholder="{_e(cid)}" autocomplete=off> '
        "<label><input type=checkbox name=dry_run value=true checked> dry run (plan only)</label> "
        "<button type=submit id=restore-submit>Start restore</button></p></form></details>"
    )
    levels = "".join(f"<option value={_e(lv)}>{_e(lv)}</option>" for lv in ("standard", "basic", "deep"))
    verify = (
        f'<form id=verify method=post action="{_e(base)}/ui/{quote(cid)}/verify" target=_top>'
        f"<select name=level id=verify-level>{levels}</select> "
        f"<button type=submit class=button id=verify-button>Verify now</button> <span class=muted>starts "
        f"<code>checkpoint_verify</code> for <code>{_e(cid)}</code> only</span></form>"
    )
    body = (
        f'<p><a href="{_e(base)}/ui/">← all checkpoints</a></p><h1 id=checkpoint-id>{_e(cid)} {_badges(d)}</h1>'
        f"{form}{verify}<table id=manifest>{info}</table>"
        f"<h2>Artifacts</h2><table id=artifacts><tr><th>Name</th><th>Kind</th><th>Stored</th><th>Raw</th>"
        f"<th>sha256</th></tr>{arts}</table><h2>Fingerprints</h2><div id=fingerprints>{prints}</div>"
        f"<h2>Verifications and drills</h2>{_records(d['records'])}"
        f"<h2>Restores of this checkpoint</h2>{_restores(d['restores'])}"
    )
    return _page(cid, body)


def _fingerprint_table(fp: dict[str, Any]) -> str:
    """A fingerprint as a table: one row per table / db / index with its counts."""
    rows = []
    for key, value in sorted(fp.items()):
        if isinstance(value, dict) and value:
            for name, sub in sorted(value.items(), key=lambda kv: str(kv[0])):
                text = (
                    ", ".join(f"{k}={v}" for k, v in sorted(sub.items()) if not isinstance(v, (dict, list)))
                    if isinstance(sub, dict)
                    else sub
                )
                rows.append(f"<tr><td>{_e(key)}</td><td><code>{_e(name)}</code></td><td>{_e(text)}</td></tr>")
        else:
            rows.append(f"<tr><td>{_e(key)}</td><td colspan=2>{_e(value)}</td></tr>")
    return f"<table class=fingerprint>{''.join(rows)}</table>"
