"""Reading a real trace-cmd capture of >= 4 M events: tsalign vs `trace-cmd report`, side by side.

Records on this machine (root): a private x86-tsc tracefs instance with raw_syscalls:sys_exit, sched
and irq events while `dd bs=1` makes millions of syscalls, extracted with `trace-cmd extract` (v7, zstd).
Then, each in a fresh process, with its peak RSS (wait4):
  trace-cmd report FILE > /dev/null
  tsalign: read the .dat + convert every timestamp to guest TSC (the seed's offset) + merge per-CPU
           buffers into one time-ordered stream (chunked)
A second, 4x smaller capture and two chunk sizes show that memory follows the chunk size, not the
trace size. Goal (issue #6): tsalign >= 3x trace-cmd report's events/s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

GOAL = 3.0
SEED_OFFSET = "0xffee6aba03eccaac"
READ = r"""
import json, sys, time
import numpy as np
from tsalign.clock import vec
from tsalign.clock.kvm import TscParams
from tsalign.traces.datreader import DatTrace
path, block = sys.argv[1], int(sys.argv[2])
p = TscParams(sys.argv[3])
t0 = time.perf_counter()
t = DatTrace(path, block_bytes=block)
n = 0
last = 0
for c in t.chunks():
    g = vec.host_to_guest_tsc(c.ts, p)
    assert int(c.ts[0]) >= last
    last = int(c.ts[-1])
    n += len(c)
dt = time.perf_counter() - t0
print(json.dumps({"events": n, "seconds": dt, "warnings": t.info.warnings}))
"""


def record(path: str, syscalls: int) -> None:
    from tsalign.capture.tracefs import TraceSession

    with TraceSession(["raw_syscalls:sys_exit", "sched:sched_switch", "sched:sched_wakeup", "irq:*"],
                      buffer_kb=200_000) as s:
        s.start()
        subprocess.run(["taskset", "-c", "1", "dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={syscalls}"],
                       stderr=subprocess.DEVNULL, check=True)
        s.stop()
        lost = sum(x.lost for x in s.stats())
        subprocess.run(["trace-cmd", "extract", "-B", s.name, "-o", path], capture_output=True, check=True)
    if lost:
        print(f"note: {lost} events overwritten in the ring buffer while recording {path}")


def run(cmd: list[str], stdout: int | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one fresh process."""
    wall, rss, out, _ = run_cpu(cmd, stdout)
    return wall, rss, out


def run_cpu(cmd: list[str], stdout: int | None = None) -> tuple[float, int, str, float]:
    """Wall seconds, peak RSS (MiB), stdout and CPU seconds (user + system, all its threads) of one fresh process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read().decode() if p.stdout else ""
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed (exit {os.waitstatus_to_exitcode(status)})")
    return wall, ru.ru_maxrss // 1024, out, ru.ru_utime + ru.ru_stime


def tsalign(path: str, block: int) -> dict[str, float]:
    wall, rss, out = run([sys.executable, "-c", READ, path, str(block), SEED_OFFSET])
    doc = json.loads(out)
    return {"events": doc["events"], "wall_s": wall, "rss_mib": rss, "events_per_s": doc["events"] / wall}


def main() -> None:
    if os.geteuid() != 0 or not shutil.which("trace-cmd"):
        print(json.dumps({"skipped": "needs root and trace-cmd to record a real capture"}))
        return
    d = tempfile.mkdtemp(prefix="tsalign-bench-readers-")
    try:
        big, small = os.path.join(d, "big.dat"), os.path.join(d, "small.dat")
        record(big, 2_200_000)
        record(small, 550_000)
        tsalign(small, 8 << 20)  # warm-up: numba compiles the page walker once and caches it
        ours = tsalign(big, 8 << 20)
        n = int(ours["events"])
        with open(os.devnull, "wb") as null:
            tc_wall, tc_rss, _ = run(["trace-cmd", "report", big], stdout=null.fileno())
        tc = {"events": n, "wall_s": tc_wall, "rss_mib": tc_rss, "events_per_s": n / tc_wall}
        mem = {"small_8MiB": tsalign(small, 8 << 20), "big_2MiB": tsalign(big, 2 << 20), "big_32MiB": tsalign(big, 32 << 20)}
        size = os.path.getsize(big)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    speedup = ours["events_per_s"] / tc["events_per_s"]
    print(f"capture: {n} events, .dat {size / 2**20:.1f} MiB (v7 zstd)")
    print(f"{'':34}{'events/s':>12}{'wall s':>9}{'peak RSS MiB':>14}")
    print(f"{'trace-cmd report (text to null)':34}{tc['events_per_s']:>12,.0f}{tc['wall_s']:>9.2f}{tc['rss_mib']:>14}")
    print(f"{'tsalign read+guest TSC+merge':34}{ours['events_per_s']:>12,.0f}{ours['wall_s']:>9.2f}{ours['rss_mib']:>14}")
    print(f"speed-up {speedup:.1f}x (goal >= {GOAL:.0f}x: {'met' if speedup >= GOAL else 'NOT met'})")
    print("memory vs chunk size and trace size (tsalign):")
    for k, v in mem.items():
        print(f"  {k:12} {v['events']:>9} events  peak RSS {v['rss_mib']} MiB")
    print(json.dumps({"events": n, "trace_cmd": tc, "tsalign": ours, "speedup": round(speedup, 2),
                      "goal_met": speedup >= GOAL, "memory": mem}))


if __name__ == "__main__":
    main()
