"""Wall time of `tsalign precheck` (a fresh process, BTF reading included), best of 5.
Target (issue #3): < 1 s on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time

TARGET_S = 1.0


def main() -> None:
    times = []
    verdict = None
    for _ in range(5):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "tsalign", "precheck", "--json"], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        verdict = json.loads(r.stdout)["verdict"]
    best, worst = min(times), max(times)
    print(f"tsalign precheck wall time: best {best:.3f} s, worst {worst:.3f} s (verdict {verdict})")
    print(f"target < {TARGET_S:.1f} s: {'met' if best < TARGET_S else 'NOT met'}")
    print(json.dumps({"precheck_wall_s": {"best": round(best, 3), "worst": round(worst, 3)}, "target_met": best < TARGET_S}))


if __name__ == "__main__":
    main()
