"""Plots of analysis results as inline SVG (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["plots_for"]


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _fig(w: float = 7.0, h: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h))


def _us(cycles: list[int], khz: int) -> list[float]:
    return [c * 1000.0 / khz for c in cycles] if khz else [float(c) for c in cycles]


def histogram(values: list[int], khz: int, title: str, log: bool = False) -> str:
    fig, ax = _fig()
    ax.hist(_us(values, khz), bins=min(60, max(5, len(values) // 3)), color="#3b7dd8", log=log)
    ax.set_xlabel("µs" if khz else "cycles")
    ax.set_ylabel("count")
    ax.set_title(title)
    return _svg(fig)


def timeline(slices: list[dict[str, Any]], khz: int, title: str, limit: int = 12) -> str:
    """Slices (start/end on the guest TSC axis) of a short window, one row per side/track."""
    if not slices:
        return ""
    part = sorted(slices, key=lambda s: s["start"])[:limit]
    t0 = part[0]["start"]
    rows = sorted({f"{s['side']} {s['track']}" for s in part})
    fig, ax = _fig(8, 0.5 + 0.45 * len(rows))
    colors = {"host": "#d9534f", "guest": "#5cb85c"}
    for s in part:
        y = rows.index(f"{s['side']} {s['track']}")
        x = (s["start"] - t0) * 1000.0 / khz if khz else s["start"] - t0
        w = max((s["end"] - s["start"]) * 1000.0 / khz if khz else s["end"] - s["start"], 1e-3)
        ax.broken_barh([(x, w)], (y - 0.35, 0.7), color=colors.get(s["side"], "#777"))
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("µs from the first slice" if khz else "cycles")
    ax.set_title(title)
    return _svg(fig)


def stacked(rows: list[dict[str, Any]], khz: int, title: str, limit: int = 40) -> str:
    rows = [r for r in rows if "host_cycles" in r][:limit]
    if not rows:
        return ""
    fig, ax = _fig()
    x = list(range(len(rows)))
    a = _us([r["guest_to_host_cycles"] for r in rows], khz)
    b = _us([r["host_cycles"] for r in rows], khz)
    c = _us([r["host_to_guest_cycles"] for r in rows], khz)
    ax.bar(x, a, label="guest -> host", color="#5cb85c")
    ax.bar(x, b, bottom=a, label="host IO", color="#d9534f")
    ax.bar(x, c, bottom=[p + q for p, q in zip(a, b)], label="host -> guest", color="#f0ad4e")
    ax.set_xlabel("request")
    ax.set_ylabel("µs" if khz else "cycles")
    ax.legend()
    ax.set_title(title)
    return _svg(fig)


def plots_for(result: dict[str, Any], rows: list[dict[str, Any]], slices: list[dict[str, Any]], khz: int) -> list[str]:
    """The SVG figures for one analysis result (``to_dict()`` form)."""
    kind = result["analysis"]
    out = []
    if kind == "irq" and rows:
        out.append(histogram([r["latency_cycles"] for r in rows], khz, "IRQ injection -> guest handler latency"))
    elif kind == "vcpu" and rows:
        pre = [r["duration_cycles"] for r in rows if r["preempted"]]
        if pre:
            out.append(histogram(pre, khz, "vCPU preemption durations (log count)", log=True))
    elif kind == "io" and rows:
        out.append(histogram([r["total_cycles"] for r in rows], khz, "guest block request latency (issue -> complete)"))
        out.append(stacked(rows, khz, "per request: guest -> host -> guest"))
    out.append(timeline(slices, khz, "timeline excerpt (guest TSC axis)"))
    return [s for s in out if s]
