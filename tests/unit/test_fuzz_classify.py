"""The fuzz harness tells a memory finding from an ok case when main turns the MemoryError into its own error (exit
4, "out of memory"): a real case run in a forked child under a real RLIMIT_AS with no room above what the harness
maps, on the shipped guest text made 300 times longer. Without the harness's check this case reads as "ok" (exit 4
is a documented code): the test fails then (checked). The harness runs in a fresh process, as `make fuzz` runs it:
inside pytest, memory freed by earlier tests gave the child room to finish."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tsalign.cli import OUT_OF_MEMORY

REPO = Path(__file__).resolve().parents[2]
_CASE = """
import json, sys, tempfile
from pathlib import Path
from tests.fuzz import harness
text = Path("examples/foreign/guest.txt").read_bytes()
work = Path(tempfile.mkdtemp(dir=sys.argv[1]))
harness.warm([harness.Seed("guest", "text", {"guest.txt": text})], work)  # imports before the forks, as a campaign
big = harness.Seed("guest-long", "text", {"guest.txt": text * 300})
print(json.dumps([harness.run_case(big, big.files, work, 120, mb) for mb in (0, 256)]))
"""


def test_mains_out_of_memory_error_is_a_memory_finding(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", _CASE, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    tight, room = json.loads(r.stdout)
    assert tight["code"] == 4 and OUT_OF_MEMORY in tight["stderr"], tight  # (main's error, not one escaping it)
    assert tight["result"] == "memory"
    assert room["result"] == "ok" and room["code"] == 6, room  # with room, the same case is ok
