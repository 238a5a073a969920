"""guest_tsc <-> kvmclock_ns (pvclock) and kvmclock_ns -> guest sched_clock ns.

kvmclock: ``system_time + scale(tsc - tsc_timestamp)`` with ``scale(d) = ((d << tsc_shift or
d >> -tsc_shift) * tsc_to_system_mul) >> 32`` (arch/x86/include/asm/pvclock.h,
pvclock_scale_delta(); 96-bit product truncated to u64, all mod 2**64).

In a kvmclock guest, sched_clock() is kvm_sched_clock_read() = kvmclock - kvm_sched_clock_offset,
and local_clock() (perf, ftrace "local"/"perf") adds __sched_clock_offset once the sched clock is
stable. Both offsets are in ns and come from the guest.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidParameter
from ..numbers import MASK64, check_u64

__all__ = [
    "Pvclock",
    "kvmclock_to_sched_ns",
    "kvmclock_to_tsc",
    "sched_ns_to_kvmclock",
    "tsc_to_kvmclock",
]


@dataclass(frozen=True)
class Pvclock:
    """One pvclock_vcpu_time_info record.

    system_time: ns, kvmclock at tsc_timestamp
    tsc_timestamp: guest TSC cycles at which system_time was sampled
    tsc_to_system_mul: 32.32 fixed-point ns-per-cycle multiplier (u32)
    tsc_shift: signed pre-shift of the TSC delta, -32..32 in practice (s8 in the ABI)
    """

    system_time: int
    tsc_timestamp: int
    tsc_to_system_mul: int
    tsc_shift: int

    def __post_init__(self) -> None:
        check_u64(self.system_time, "pvclock system_time")
        check_u64(self.tsc_timestamp, "pvclock tsc_timestamp")
        if not 0 < self.tsc_to_system_mul < (1 << 32):
            raise InvalidParameter(
                "pvclock tsc_to_system_mul", self.tsc_to_system_mul, "a non-zero u32"
            )
        if not -63 <= self.tsc_shift <= 63:
            raise InvalidParameter("pvclock tsc_shift", self.tsc_shift, "a signed shift -63..63")


def _scale_delta(delta: int, pv: Pvclock) -> int:
    if pv.tsc_shift < 0:
        delta >>= -pv.tsc_shift
    else:
        delta = (delta << pv.tsc_shift) & MASK64
    return ((delta * pv.tsc_to_system_mul) >> 32) & MASK64


def tsc_to_kvmclock(guest_tsc: int, pv: Pvclock) -> int:
    """guest TSC cycles -> kvmclock ns (mod 2**64), as __pvclock_read_cycles()."""
    delta = (guest_tsc - pv.tsc_timestamp) & MASK64
    return (pv.system_time + _scale_delta(delta, pv)) & MASK64


def kvmclock_to_tsc(kvmclock_ns: int, pv: Pvclock) -> int:
    """kvmclock ns -> the smallest guest TSC whose kvmclock is >= kvmclock_ns (mod 2**64)."""
    d = (kvmclock_ns - pv.system_time) & MASK64
    # ceil: the smallest scaled delta reaching d, taken mod 2**64 like the vectorised twin
    pre = (-((-(d << 32)) // pv.tsc_to_system_mul)) & MASK64
    if pv.tsc_shift < 0:
        delta = pre << -pv.tsc_shift
    else:
        delta = -((-pre) >> pv.tsc_shift)
    return (pv.tsc_timestamp + delta) & MASK64


def kvmclock_to_sched_ns(kvmclock_ns: int, kvm_sched_clock_offset: int, sched_clock_offset: int = 0) -> int:
    """kvmclock ns -> guest sched_clock/local_clock ns.

    kvm_sched_clock_offset: ns, the guest's kvm_sched_clock_offset (kvmclock at boot)
    sched_clock_offset: ns, the guest's __sched_clock_offset (0 for plain sched_clock(), the
      value local_clock() adds once the sched clock is stable)
    """
    return (kvmclock_ns - kvm_sched_clock_offset + sched_clock_offset) & MASK64


def sched_ns_to_kvmclock(sched_ns: int, kvm_sched_clock_offset: int, sched_clock_offset: int = 0) -> int:
    """Inverse of :func:`kvmclock_to_sched_ns` (exact)."""
    return (sched_ns + kvm_sched_clock_offset - sched_clock_offset) & MASK64
