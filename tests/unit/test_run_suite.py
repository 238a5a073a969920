"""scripts/run-suite.sh (what `make test` runs) refuses to start on a disk without room, before it touches
anything: a full disk otherwise shows up as failures deep inside tests. Run for real here with a threshold above
this machine's free space (and a private TMPDIR: nothing may be written there)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_suite_refuses_to_start_without_room(tmp_path: Path) -> None:
    free_gb = shutil.disk_usage(tmp_path).free >> 30
    env = {**os.environ, "TMPDIR": str(tmp_path), "TSALIGN_SUITE_MIN_FREE_GB": str(free_gb + 2)}
    r = subprocess.run(["bash", "scripts/run-suite.sh", sys.executable, "--collect-only"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 28, r.stdout[-2000:] + r.stderr[-2000:]
    assert re.search(rf"run-suite: {re.escape(str(tmp_path))} has ({free_gb - 1}|{free_gb}|{free_gb + 1}) GB free; the "
                     rf"suite needs {free_gb + 2} GB", r.stderr), r.stderr
    assert "free some space, or set TSALIGN_SUITE_MIN_FREE_GB" in r.stderr
    assert list(tmp_path.iterdir()) == [] and r.stdout == ""  # (no pytest started, no log)
