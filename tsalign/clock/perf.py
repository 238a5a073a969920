"""perf_ns <-> TSC through the perf mmap user page (struct perf_event_mmap_page).

Formulas are those of include/uapi/linux/perf_event.h and tools/perf/util/tsc.c: a
quotient/remainder split keeps every product inside 64 bits, all arithmetic is mod 2**64 exactly
as the kernel's u64 arithmetic, and ``cap_user_time_short`` widens a short counter with
``time_cycles``/``time_mask`` first (in v5.12, commit 6c0246a4ff8a for arm64; x86 leaves it 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidParameter, Unavailable
from ..numbers import MASK64, check_u64

__all__ = ["PerfTimeConv", "perf_ns_to_tsc", "tsc_to_perf_ns"]


@dataclass(frozen=True)
class PerfTimeConv:
    """The time fields of a perf user page.

    time_zero:  ns; perf time of TSC 0 (meaningful only with cap_user_time_zero)
    time_mult:  ns per cycle as a fixed-point multiplier (ns = cycles * time_mult >> time_shift)
    time_shift: bits of the fixed-point fraction, 0..63
    time_cycles, time_mask: cycles; base and mask of a short counter (cap_user_time_short)
    cap_user_time_zero: the kernel publishes time_zero, so perf time maps to TSC
    cap_user_time_short: the counter is short and must be widened with time_cycles/time_mask
    """

    time_zero: int
    time_mult: int
    time_shift: int
    time_cycles: int = 0
    time_mask: int = 0
    cap_user_time_zero: bool = True
    cap_user_time_short: bool = False

    def __post_init__(self) -> None:
        check_u64(self.time_zero, "time_zero")
        check_u64(self.time_cycles, "time_cycles")
        check_u64(self.time_mask, "time_mask")
        if not 0 < self.time_mult < (1 << 32):
            raise InvalidParameter(
                "time_mult", self.time_mult,
                "a non-zero 32-bit multiplier (time_mult 0 means the kernel offers no TSC "
                "conversion: cap_user_time=0)",
            )
        if not 0 <= self.time_shift <= 63:
            raise InvalidParameter("time_shift", self.time_shift, "an integer 0..63")
        if self.cap_user_time_short and self.time_mask == 0:
            raise InvalidParameter(
                "time_mask", self.time_mask, "a non-zero mask when cap_user_time_short is set"
            )

    def require_zero(self) -> None:
        """Raise Unavailable unless time_zero may be used (cap_user_time_zero=1)."""
        if not self.cap_user_time_zero:
            raise Unavailable(
                "perf user page has cap_user_time_zero=0: perf time cannot be converted to TSC "
                "on this kernel (\"TSC conversion is not supported\"); in a guest, boot with "
                "no-kvmclock so sched_clock runs on the TSC"
            )


def tsc_to_perf_ns(tsc: int, conv: PerfTimeConv) -> int:
    """TSC cycles -> perf ns (mod 2**64), as the kernel computes perf time from rdtsc."""
    conv.require_zero()
    cyc = tsc & MASK64
    if conv.cap_user_time_short:
        cyc = (conv.time_cycles + ((cyc - conv.time_cycles) & conv.time_mask)) & MASK64
    quot = cyc >> conv.time_shift
    rem = cyc & ((1 << conv.time_shift) - 1)
    return (
        conv.time_zero + ((quot * conv.time_mult) & MASK64) + (((rem * conv.time_mult) & MASK64) >> conv.time_shift)
    ) & MASK64


def perf_ns_to_tsc(ns: int, conv: PerfTimeConv) -> int:
    """perf ns -> TSC cycles (mod 2**64), as perf's perf_time_to_tsc(); exact floor division,
    so tsc_to_perf_ns(perf_ns_to_tsc(t)) is within ceil(time_mult / 2**time_shift) ns of t
    (within 1 ns whenever the TSC runs at >= 1 GHz)."""
    conv.require_zero()
    t = (ns - conv.time_zero) & MASK64
    quot, rem = divmod(t, conv.time_mult)
    return ((quot << conv.time_shift) + ((rem << conv.time_shift) // conv.time_mult)) & MASK64
