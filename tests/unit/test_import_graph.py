"""No import runs both ways between two of tsalign's packages (issue #10): every import of the package,
at module level or inside a function, is read from the source with ast (not by importing), resolved to
the sub-package it names, and the graph of sub-packages must have no pair that imports each other."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "tsalign"


def _unit(parts: list[str]) -> str | None:
    """The sub-package (or top-level module) a dotted tsalign name belongs to: tsalign.align.merge -> align."""
    return parts[1] if len(parts) >= 2 and parts[0] == "tsalign" else None


def _is_module(pkg: Path, parts: list[str]) -> bool:
    p = pkg.parent.joinpath(*parts)
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """sub-package -> the sub-packages it imports (tsalign's, or a tree laid out like it under ``pkg``)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg.parent).with_suffix("")
        parts = list(rel.parts)
        here = _unit(parts)
        package = parts[:-1]  # the package a relative import starts from (for __init__ too: its own directory)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[list[str]] = []
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                mod = base + (node.module.split(".") if node.module else [])
                # `from .. import x`: x is a module of that package, or a name defined in it (kept as the package)
                targets = [mod] if node.module else [
                    mod + [a.name] if _is_module(pkg, mod + [a.name]) else mod for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".") for a in node.names]
            for t in targets:
                there = _unit(t)
                if there and here and there != here:
                    edges[here].add(there)
    return edges


def test_no_two_packages_import_each_other() -> None:
    edges = graph()
    assert not both_ways(edges), f"packages importing each other: {both_ways(edges)}"
    # the graph is read, not empty: the CLI reaches the layers below it
    assert {"align", "verify", "traces", "capture"} <= edges["cli"]
    assert "cli" not in {b for a in edges if a != "__main__" for b in edges[a]}, "nothing below the CLI imports it"


def both_ways(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a in edges for b in edges[a] if a < b and a in edges.get(b, set()))


def test_the_check_can_fail(tmp_path: Path) -> None:
    """A package laid out like tsalign where one module imports another package at module level and that
    package imports back inside a function (``from ..a import x``): caught."""
    for f, text in {"__init__.py": "", "a/__init__.py": "", "a/x.py": "from ..b import y\n",
                    "b/__init__.py": "", "b/y.py": "def f():\n    from ..a import x\n    return x\n",
                    "c/__init__.py": "from .. import a\n"}.items():
        (tmp_path / "tsalign" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tsalign" / f).write_text(text)
    edges = graph(tmp_path / "tsalign")
    assert both_ways(edges) == [("a", "b")] and edges["c"] == {"a"}
