"""No two packages of tsalign import each other (a layer that runs both ways), read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "tsalign"


def _edges(pkg: Path = PKG) -> set[tuple[str, str]]:
    edges = set()
    for f in pkg.rglob("*.py"):
        rel = f.relative_to(pkg).parts
        if len(rel) < 2:
            continue  # top-level modules (errors, numbers, verdicts...) are leaves
        src = rel[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                dst = node.module.split(".")[0]
                if (pkg / dst).is_dir() and dst != src:
                    edges.add((src, dst))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tsalign."):
                dst = node.module.split(".")[1]
                if (pkg / dst).is_dir() and dst != src:
                    edges.add((src, dst))
    return edges


def test_no_import_runs_both_ways() -> None:
    edges = _edges()
    assert ("capture", "node") in edges  # the reader sees real imports (it can find a loop)
    both = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert both == [], f"packages importing each other: {both}"


def test_the_layer_check_can_fail(tmp_path: Path) -> None:
    """A package built with a cycle — a module-level import one way, a function-level one back — is caught."""
    for f, text in {"__init__.py": "", "a/__init__.py": "", "a/x.py": "from ..b import y\n",
                    "b/__init__.py": "", "b/y.py": "def f():\n    from ..a import x\n    return x\n"}.items():
        (tmp_path / "tsalign" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tsalign" / f).write_text(text)
    edges = _edges(tmp_path / "tsalign")
    assert ("a", "b") in edges and ("b", "a") in edges
