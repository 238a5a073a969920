"""``tsalign fleet report``: the ready views as one self-contained HTML page with plots (inline SVG) and JSON."""

from __future__ import annotations

import html
import json
import os
from typing import Any

from ..outdir import make_dir
from ..report.html import _CSS, _table
from ..report.plots import _fig, _svg
from .query import READY_VIEWS, engine

__all__ = ["write_report"]


_COLOURS = {"pass": "#2e9d4a", "warn": "#e8a33d", "unverified": "#8c8c8c", "fail": "#d0413e"}


def _bars(labels: list[str], series: dict[str, list[float]], title: str, ylabel: str, log: bool = False) -> str:
    fig, ax = _fig(7.0, max(2.4, 0.28 * len(labels) + 1.2))
    left = [0.0] * len(labels)
    for name, vals in series.items():
        ax.barh(labels, vals, left=left, label=name, color=_COLOURS.get(name, "#3b7dd8"))
        left = [a + b for a, b in zip(left, vals)]
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _svg(fig)


def _plots(views: dict[str, list[dict[str, Any]]], verdicts: list[dict[str, Any]]) -> list[str]:
    out = []
    per_node: dict[str, dict[str, int]] = {}
    for r in verdicts:
        per_node.setdefault(r["node"], {}).setdefault(r["verdict"], 0)
        per_node[r["node"]][r["verdict"]] += 1
    if per_node:
        nodes = sorted(per_node)[:60]
        out.append(_bars(nodes, {v: [float(per_node[n].get(v, 0)) for n in nodes] for v in ("pass", "warn", "unverified", "fail")},
                         "alignments per host node and verdict", "alignments"))
    lat = sorted(views["latency_per_node"], key=lambda r: -(r["latency_ns_p99"] or 0))[:40]
    if lat:
        out.append(_bars([r["node"] for r in lat], {"p99": [float(r["latency_ns_p99"] or 0) / 1000 for r in lat]},
                         "IRQ injection -> guest handler latency, p99 per host node (worst first)", "µs", log=True))
    pre = sorted(views["preemption_per_node"], key=lambda r: -(r["preempted_ns_total"] or 0))[:40]
    if pre:
        out.append(_bars([r["node"] for r in pre], {"preempted": [float(r["preempted_ns_total"] or 0) / 1e6 for r in pre]},
                         "vCPU time preempted per host node (most first)", "ms", log=True))
    eb = views["error_bounds"]
    if eb:
        out.append(_bars([r["kernel"] or "?" for r in eb], {"max": [float(r["error_bound_ns_max"] or 0) for r in eb]},
                         "alignment error bound per host kernel (max)", "ns", log=True))
    return out


def write_report(dataset: str, out: str, engine_name: str = "duckdb", master: str | None = None) -> dict[str, Any]:
    """report.html and report.json (every ready view's rows, and the verdicts) in ``out``; returns the document."""
    with engine(dataset, engine_name, master) as e:
        views: dict[str, list[dict[str, Any]]] = {}
        for name in READY_VIEWS:
            cols, rows = e.run(f"SELECT * FROM {name} ORDER BY 1")
            views[name] = [dict(zip(cols, r)) for r in rows]
        cols, rows = e.run("SELECT node, vm, run, verdict, error_bound_ns, kernel FROM verdicts ORDER BY node, vm, run")
        verdicts = [dict(zip(cols, r)) for r in rows]
    make_dir(out, "-o/--out")
    where = os.path.abspath(dataset)
    paths = {"json": os.path.join(out, "report.json"), "html": os.path.join(out, "report.html")}
    doc: dict[str, Any] = {"dataset": where, "alignments": len(verdicts), "views": views, "artifacts": paths}
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(doc | {"verdicts": verdicts}, f, indent=1, default=str)
    parts = [f"<h1>tsalign fleet report</h1><p>{len(verdicts)} alignments in <code>{html.escape(where)}</code></p>"]
    parts += [f'<div class="fig">{svg}</div>' for svg in _plots(views, verdicts)]
    for name, rows in views.items():
        parts.append(f"<h2>{html.escape(name)}</h2>{_table(rows)}")
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(f"<!doctype html><html><head><meta charset='utf-8'><title>tsalign fleet</title><style>{_CSS}</style>"
                f"</head><body>{''.join(parts)}</body></html>")
    return doc
