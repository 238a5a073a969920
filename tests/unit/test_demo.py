"""`tsalign demo --shipped`: the main job on the real capture shipped in examples/selftest (no root needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_on_shipped_bundles_includes_irq_analysis(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "tsalign", "demo", "--shipped", "--out", str(out), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "pass" and rep["source"].startswith("shipped bundle")
    html = Path(rep["artifacts"]["analysis_irq"])
    assert html.is_file() and "IRQ injection" in html.read_text()
    irq = json.loads((out / "analysis-irq" / "report.json").read_text())
    assert irq["summary"]["matched"] == irq["summary"]["injections"] == 20
