"""Two minutes of the fuzz harness (tests/fuzz/harness.py) in the suite: seeded mutations of real inputs for
every reader (.dat v6 / v7 zstd / v7 uncompressed, tracefs text with and without irq-info, trace-cmd report,
perf script default and --ns, bundles through align, split BTF), each case in a forked child with a time and
memory limit. Goal: 0 tracebacks, 0 hangs, 0 runaway memory, 0 crashes by signal. `make fuzz` runs longer."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.conftest import need
from tests.fuzz import harness


def test_fuzz_every_reader(tmp_path: Path) -> None:
    need(os.geteuid() == 0 and os.path.isdir("/sys/kernel/tracing/instances"), "needs root and tracefs (seed recording)")
    need(shutil.which("trace-cmd") and shutil.which("perf"), "needs trace-cmd and perf (make deps)")
    (tmp_path / "seeds").mkdir()
    seeds = harness.seeds(tmp_path / "seeds")
    assert {s.kind for s in seeds} == {"dat", "text", "bundle", "aligndat", "dwarf", "btf", "calibration",
                                          "kernels"}, [s.name for s in seeds]
    seconds = float(os.environ.get("TSALIGN_FUZZ_SECONDS", "120"))
    figures = harness.campaign(seeds, seconds, 20261201, tmp_path, timeout=30, mem_mb=1024)
    print(json.dumps(figures, indent=1))
    findings = sorted(p.name for p in (tmp_path / "corpus").iterdir())
    assert figures["totals"] == {"ok": figures["cases"]} and figures["cases"] > 300, (figures["totals"], findings)
    assert all(n > 10 for c in figures["per_seed"].values() for n in c.values()), figures["per_seed"]
