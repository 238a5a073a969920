"""A self-contained HTML report of one analysis: summary, missing events, plots (inline SVG), rows."""

from __future__ import annotations

import html
import json
from typing import Any

from .plots import plots_for

__all__ = ["render_html"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.needs{background:#fff3cd;padding:1em;border:1px solid #e0c36a}
code{background:#f6f6f6;padding:2px 4px}.fig{margin:1em 0}"""


def _table(rows: list[dict[str, Any]], limit: int = 50) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    cols = [c for c in rows[0] if not isinstance(rows[0][c], (list, dict))]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows[:limit])
    more = f"<p>{len(rows) - limit} more rows in report.json</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _dist_table(summary: dict[str, Any]) -> str:
    rows = []
    for k, v in summary.items():
        if isinstance(v, dict) and "ns" in v and "count" in v:
            rows.append({"distribution": k, "count": v["count"], **{f"{q} ns": v["ns"][q] for q in ("min", "median", "p99", "max")}})
        elif isinstance(v, dict) and all(isinstance(x, dict) and "ns" in x for x in v.values()):
            rows += [{"distribution": f"{k} {name}", "count": x["count"],
                      **{f"{q} ns": x["ns"][q] for q in ("min", "median", "p99", "max")}} for name, x in v.items()]
    return _table(rows)


def render_html(result: dict[str, Any], rows: list[dict[str, Any]], slices: list[dict[str, Any]], khz: int,
                inputs: dict[str, Any]) -> str:
    """The report page; everything inline so it opens from disk."""
    kind = result["analysis"]
    titles = {"irq": "IRQ injection → guest handler", "vcpu": "vCPU preemption → guest task",
              "io": "guest IO → host IO → completion"}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tsalign {kind}</title><style>{_CSS}</style></head><body>",
             f"<h1>tsalign analyze {kind}: {html.escape(titles.get(kind, kind))}</h1>",
             "<p>" + " · ".join(f"{html.escape(k)}: <code>{html.escape(str(v))}</code>" for k, v in inputs.items()) + "</p>"]
    if result["needs"]:
        parts.append("<div class='needs'><h2>Missing events</h2><ul>")
        for n in result["needs"]:
            parts.append(f"<li>{html.escape(n['why'])}: record with <code>{html.escape(n['capture'])}</code></li>")
        parts.append("</ul></div>")
    else:
        scalars = {k: v for k, v in result["summary"].items() if not isinstance(v, (dict, list))}
        parts.append("<h2>Summary</h2>" + _table([scalars]))
        parts.append(_dist_table(result["summary"]))
        if kind == "vcpu" and result["summary"].get("top_tasks"):
            parts.append("<h2>Guest tasks hurt most by preemption</h2>" + _table(result["summary"]["top_tasks"]))
        for svg in plots_for(result, rows, slices, khz):
            parts.append(f"<div class='fig'>{svg}</div>")
        parts.append("<h2>Rows</h2>" + _table(rows))
    for note in result.get("notes", []):
        parts.append(f"<p>note: {html.escape(note)}</p>")
    parts.append(f"<details><summary>summary JSON</summary><pre>{html.escape(json.dumps(result['summary'], indent=1))}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)
