"""Wall time of `tsalign selftest --beacons 1000` (fresh process: capture + micro-VM + align +
verify + Perfetto). Target (issue #5): < 30 s on this machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time

TARGET_S = 30.0


def main() -> None:
    out = tempfile.mkdtemp(prefix="tsalign-bench-")
    try:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "tsalign", "selftest", "--beacons", "1000", "--json", "--out", out],
                           capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode not in (0, 6):
            print(f"selftest failed (exit {r.returncode}): {r.stderr.strip()}")
            print(json.dumps({"selftest_wall_s": None, "error": r.stderr.strip()}))
            return
        rep = json.loads(r.stdout)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rc = rep["beacons"]["residual_cycles"]
    print(f"tsalign selftest --beacons 1000: {wall:.2f} s wall ({rep['beacons']['count']} beacons, "
          f"median residual {rc['median']} cycles, verdict {rep['verdict']})")
    print(f"target < {TARGET_S:.0f} s: {'met' if wall < TARGET_S else 'NOT met'}")
    print(json.dumps({"selftest_wall_s": round(wall, 3), "beacons": rep["beacons"]["count"],
                      "residual_median_cycles": rc["median"], "target_met": wall < TARGET_S}))


if __name__ == "__main__":
    main()
