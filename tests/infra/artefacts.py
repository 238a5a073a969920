"""Where `make test` put the heavy cached test artefacts (scripts/build-*.sh), for the tests."""

from __future__ import annotations

import glob
import os

from tests.conftest import need

CACHE = os.environ.get("TSALIGN_CACHE", "/var/cache/tsalign")


def cached(env: str, pattern: str, what: str) -> str:
    """The artefact directory named by ``env`` (set by the Makefile), else the newest complete one
    matching ``pattern`` in the cache; skips (fails under TSALIGN_REQUIRE_REAL) when there is none."""
    path = os.environ.get(env)
    if path and os.path.exists(f"{path}/.complete"):
        return path
    found = sorted(glob.glob(f"{CACHE}/{pattern}/.complete"), key=os.path.getmtime)
    need(found, f"no {what} in {CACHE} (make test builds it)")
    return os.path.dirname(found[-1])
