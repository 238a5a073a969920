"""Docs that are generated from code must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_role_docs_match_argument_specs() -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts/gen-role-docs.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_role_defaults_are_declared_in_argument_specs() -> None:
    import yaml

    for defaults in REPO.glob("roles/*/defaults/main.yml"):
        role = defaults.parent.parent
        declared = set(yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"])
        assert set(yaml.safe_load(defaults.read_text()) or {}) <= declared, role.name
