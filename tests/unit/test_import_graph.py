"""tsalign's package import graph has no loops: no two of its packages (or top-level modules) import each other,
directly or through others. Read from the source with `ast` (every import, also those inside functions), so a
loop that only a lazy import hides still counts."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "tsalign"


def _node(root: Path, parts: list[str]) -> str | None:
    """The graph node of a module path inside the tree (its package, or the top-level module itself)."""
    if not parts:
        return None
    return parts[0] if (root / parts[0]).is_dir() else parts[0].removesuffix(".py")


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Node -> the nodes it imports (relative and absolute imports of tsalign, anywhere in a file)."""
    edges: dict[str, set[str]] = {}
    for f in root.rglob("*.py"):
        rel = list(f.relative_to(root).parts)
        src = _node(root, rel)
        assert src
        for n in ast.walk(ast.parse(f.read_text(), str(f))):
            targets: list[list[str]] = []
            if isinstance(n, ast.ImportFrom) and n.level:
                base = rel[:-1][: len(rel) - n.level] if n.level > 1 else rel[:-1]
                mod = n.module.split(".") if n.module else []
                targets += [base + mod] if mod else [base + [a.name] for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "tsalign":
                mod = n.module.split(".")[1:]
                targets += [mod] if mod else [[a.name] for a in n.names]
            elif isinstance(n, ast.Import):
                targets += [a.name.split(".")[1:] for a in n.names if a.name.split(".")[0] == "tsalign"]
            for t in targets:
                dst = _node(root, t)
                if dst and dst != src:
                    edges.setdefault(src, set()).add(dst)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def test_no_import_loops_between_packages() -> None:
    g = import_graph()
    assert {"align", "analyze", "capture", "traces", "verify", "cli"} <= set(g), sorted(g)  # the walk saw them
    assert cycles(g) == [], cycles(g)


def test_the_check_sees_a_loop(tmp_path: Path) -> None:
    """A tree where two packages import each other (one lazily, inside a function) is caught."""
    for pkg, body in (("a", "from ..b import x\n"), ("b", "def f():\n    from tsalign.a import y\n")):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "m.py").write_text(body)
    assert cycles(import_graph(tmp_path)) == [["a", "b"]]
