"""Terminal summary of an analysis with rich tables."""

from __future__ import annotations

from typing import Any

__all__ = ["render_terminal"]


def render_terminal(result: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    kind = result["analysis"]
    if result["needs"]:
        con.print(f"[bold yellow]tsalign analyze {kind}: events missing[/]")
        for n in result["needs"]:
            con.print(f"  {n['side']}: {n['why']}\n    record with: {n['capture']}", soft_wrap=True)
        return
    s = result["summary"]
    t = Table(title=f"tsalign analyze {kind}")
    t.add_column("what")
    t.add_column("count", justify="right")
    for q in ("min", "median", "p99", "max"):
        t.add_column(f"{q} µs", justify="right")

    def add(name: str, d: dict[str, Any]) -> None:
        ns = d["ns"]
        t.add_row(name, str(d["count"]), *("-" if ns[q] is None else f"{ns[q] / 1000:.1f}" for q in ("min", "median", "p99", "max")))

    for k, v in s.items():
        if isinstance(v, dict) and "ns" in v and "count" in v:
            add(k, v)
        elif isinstance(v, dict) and v and all(isinstance(x, dict) and "ns" in x for x in v.values()):
            for name, x in v.items():
                add(f"{k} {name}", x)
    con.print(t)
    counts = {k: v for k, v in s.items() if isinstance(v, (int, str)) or (isinstance(v, list) and v and not isinstance(v[0], dict))}
    con.print("  " + "  ".join(f"{k}={v}" for k, v in counts.items()))
    if kind == "vcpu" and s.get("top_tasks"):
        tt = Table(title="guest tasks hurt most by preemption")
        for c in ("task", "preemptions", "total µs", "max µs"):
            tt.add_column(c, justify="left" if c == "task" else "right")
        for r in s["top_tasks"]:
            tt.add_row(r["task"], str(r["preemptions"]), "-" if r["total_ns"] is None else f"{r['total_ns'] / 1000:.1f}",
                       "-" if r["max_ns"] is None else f"{r['max_ns'] / 1000:.1f}")
        con.print(tt)
    for note in result.get("notes", []):
        con.print(f"  note: {note}")
