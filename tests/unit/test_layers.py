"""No two packages of tsalign import each other (a layer that runs both ways), read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "tsalign"


def _edges() -> set[tuple[str, str]]:
    edges = set()
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG).parts
        if len(rel) < 2:
            continue  # top-level modules (errors, numbers, verdicts...) are leaves
        src = rel[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                dst = node.module.split(".")[0]
                if (PKG / dst).is_dir() and dst != src:
                    edges.add((src, dst))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tsalign."):
                dst = node.module.split(".")[1]
                if (PKG / dst).is_dir() and dst != src:
                    edges.add((src, dst))
    return edges


def test_no_import_runs_both_ways() -> None:
    edges = _edges()
    assert ("capture", "node") in edges  # the reader sees real imports (it can find a loop)
    both = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert both == [], f"packages importing each other: {both}"
