"""`make lint` as part of the suite: ruff over the code, tests, benchmarks and the Ansible modules, and mypy
(strict, pyproject.toml) over tsalign. Both are installed by `make test` (the venv's test extra)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN))
    need(path, f"{name} not installed in the venv (make test installs it)")
    return str(path)


def test_ruff() -> None:
    r = subprocess.run([_tool("ruff"), "check", "--no-cache", "tsalign", "tests", "benchmarks", "roles"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]


def test_mypy() -> None:
    r = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0 and "Success" in r.stdout, r.stdout[-5000:] + r.stderr[-2000:]
