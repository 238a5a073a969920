"""pahole as the independent reference for struct layouts (it reads DWARF or BTF itself)."""

from __future__ import annotations

import re
import subprocess

__all__ = ["members"]

_MEMBER = re.compile(r"^\s+.*?\b(\w+)(?:\[\d+\])*(?:\s*:\s*\d+)?(?:\s+__attribute__\(\(.*?\)\))?;\s+"
                     r"/\*\s+(\d+)(?::\s*\d+)?\s+\d+\s+\*/")
_SIZE = re.compile(r"/\* size: (\d+),")


def members(obj: str, struct: str, fmt: str | None = None, base: str | None = None) -> dict[str, int]:
    """member -> byte offset of ``struct``'s top-level members as pahole prints them (``/* offset size */``,
    bitfields ``offset:bits``), and ``"sizeof"`` -> the struct's size. ``fmt``: pahole -F (dwarf, btf);
    ``base``: the base BTF of a split ``obj``."""
    args = ["pahole", *(["-F", fmt] if fmt else []), *(["--btf_base", base] if base else []), "-C", struct, obj]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120).stdout
    assert out, f"pahole printed nothing for {struct} in {obj}"
    found: dict[str, int] = {}
    depth = 0
    for line in out.splitlines():
        depth += line.count("{") - line.count("}")
        m = _MEMBER.match(line)
        if m and depth == 1:
            found[m[1]] = int(m[2])
        if depth == 1 and (s := _SIZE.search(line)):  # the last one is the struct's own
            found["sizeof"] = int(s[1])
    return found
