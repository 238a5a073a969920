#!/usr/bin/env python3
"""Generate docs/roles.md from each role's meta/argument_specs.yml (so role docs never drift).

    python scripts/gen-role-docs.py            # rewrite docs/roles.md
    python scripts/gen-role-docs.py --check    # exit 1 when docs/roles.md is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def render() -> str:
    out = ["# Roles", "", "Generated from each role's `meta/argument_specs.yml` by `scripts/gen-role-docs.py`.", ""]
    for spec_file in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        role = spec_file.parent.parent.name
        spec = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"]
        out += [f"## {role}", "", spec["short_description"], ""]
        desc = spec.get("description", [])
        out += [" ".join(desc) if isinstance(desc, list) else str(desc), ""]
        opts = spec.get("options", {})
        if opts:
            out += ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
            for name, o in opts.items():
                default = o.get("default", "")
                typ = o.get("type", "str") + (f" of {o['elements']}" if o.get("elements") else "")
                if o.get("choices"):
                    typ += " (" + ", ".join(map(str, o["choices"])) + ")"
                d = o.get("description", "")
                d = " ".join(d) if isinstance(d, list) else d
                out.append(f"| `{name}` | {typ} | `{default}` | {d} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    target = REPO / "docs" / "roles.md"
    text = render()
    if "--check" in sys.argv:
        if not target.exists() or target.read_text() != text:
            print("docs/roles.md is stale: run python scripts/gen-role-docs.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
