"""Vectorised conversion throughput (timestamps/s) on one core.

Run by ``make bench``. Prints one line per conversion and a JSON summary on the last line.
Target (issue #2): >= 50 M timestamps/s for host TSC -> guest TSC on one core of this machine.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import numpy as np

from tsalign.clock import vec
from tsalign.clock.kvm import TscParams
from tsalign.clock.perf import PerfTimeConv
from tsalign.offsets import OffsetSnapshot, OffsetTimeline, OffsetWrite

N = int(os.environ.get("TSALIGN_BENCH_N", "10000000"))
TARGET = 50e6


def best_rate(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` throughput in items/s."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    rng = np.random.default_rng(42)
    host = np.sort(rng.integers(1 << 50, 1 << 52, N, dtype=np.uint64))
    seed = TscParams(offset=0xFFEE6ABA03ECCAAC)
    scaled = TscParams(offset=0xFFEE6ABA03ECCAAC, ratio=(3 << 48) // 2, frac_bits=48)
    conv = PerfTimeConv(time_zero=123456789, time_mult=827238823, time_shift=31)
    vcpus = rng.integers(0, 4, N)
    tl = OffsetTimeline.build(
        [OffsetSnapshot(0, v, seed) for v in range(4)],
        [OffsetWrite(int(host[N // 2]), 1, prev=seed.offset, next=seed.offset + 1000)],
    )
    cases: dict[str, Callable[[], object]] = {
        "host_tsc->guest_tsc (offset)": lambda: vec.host_to_guest_tsc(host, seed),
        "host_tsc->guest_tsc (scaled, 128-bit)": lambda: vec.host_to_guest_tsc(host, scaled),
        "host_tsc->perf_ns": lambda: vec.tsc_to_perf_ns(host, conv),
        "perf_ns->host_tsc": lambda: vec.perf_ns_to_tsc(host, conv),
        "timeline lookup + convert (4 vCPUs)": lambda: tl.host_to_guest_many(vcpus, host),
    }
    results = {}
    for name, fn in cases.items():
        rate = best_rate(fn, N)
        results[name] = rate
        print(f"{name:40s} {rate / 1e6:10.1f} M timestamps/s")
    headline = results["host_tsc->guest_tsc (scaled, 128-bit)"]
    ok = min(results["host_tsc->guest_tsc (offset)"], headline) >= TARGET
    print(f"target >= {TARGET / 1e6:.0f} M/s for host_tsc->guest_tsc: {'met' if ok else 'NOT met'}")
    print(json.dumps({"n": N, "rates_per_s": {k: round(v) for k, v in results.items()}, "target_met": ok}))


if __name__ == "__main__":
    main()
