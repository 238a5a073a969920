"""Per-vCPU kvm-clock (pvclock) timelines from the host's ``kvm:kvm_pvclock_update`` events, and the
conversion of a kvm-clock guest's timestamps (kvmclock ns) to its TSC.

KVM writes each vCPU's pvclock record (``kvm_guest_time_update``) on vCPU load when the master clock
is not in use, on master clock updates and when the guest writes MSR_KVM_SYSTEM_TIME(_NEW), and
traces every write. A guest reads ``ns = system_time + scale(tsc - tsc_timestamp)`` with the record
in force (:mod:`tsalign.clock.pvclock`). Going back, a kvmclock ns is turned into the smallest guest
TSC whose kvmclock reaches it, with the record whose ``system_time`` is the latest not after it; the
true TSC lies in ``[that, that + step)`` where ``step`` (cycles per ns, rounded up) is reported as
the rounding bound. A record whose ``system_time`` lies below what the previous record read at its
``tsc_timestamp`` (a backward step of the clock, as KVM's records on an unstable TSC make) leaves ns that
both records produce: a reading made with the older record is then converted with the newer one, up to
the step's cycles above the true TSC (``above_cycles``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..clock.pvclock import Pvclock, kvmclock_to_tsc, tsc_to_kvmclock

__all__ = ["PVCLOCK_TSC_STABLE", "PvclockTimeline", "PvclockUpdate", "parse_pvclock_update"]

PVCLOCK_TSC_STABLE = 1
_UPDATE = re.compile(r"vcpu_id (\d+), pvclock \{ version (\d+), tsc_timestamp 0x([0-9a-f]+), system_time 0x([0-9a-f]+), "
                     r"tsc_to_system_mul 0x([0-9a-f]+), tsc_shift (-?\d+), flags 0x([0-9a-f]+) \}")


@dataclass(frozen=True)
class PvclockUpdate:
    """One traced pvclock write: host TSC of the trace event, vCPU, the record's version and flags."""

    host_tsc: int
    vcpu: int
    version: int
    pv: Pvclock
    flags: int


def parse_pvclock_update(host_tsc: int, payload: str) -> PvclockUpdate | None:
    """A ``kvm_pvclock_update`` payload as the kernel prints it; None for another text."""
    m = _UPDATE.match(payload)
    if m is None or not 0 < int(m[5], 16) < 1 << 32 or not -63 <= int(m[6]) <= 63:
        return None
    return PvclockUpdate(host_tsc, int(m[1]), int(m[2]),
                         Pvclock(int(m[4], 16) & ((1 << 64) - 1), int(m[3], 16) & ((1 << 64) - 1), int(m[5], 16),
                                 int(m[6])), int(m[7], 16))


def _step(pv: Pvclock) -> int:
    """Guest TSC cycles per kvmclock ns, rounded up: how far a converted TSC can lie below the true one."""
    per_ns = -(-(1 << 32) // pv.tsc_to_system_mul)
    return per_ns << -pv.tsc_shift if pv.tsc_shift < 0 else max(1, -(-per_ns >> pv.tsc_shift))


def _above(a: Pvclock, b: Pvclock) -> int:
    """Cycles a TSC converted with record ``b`` may lie above the true one for a reading made with the record
    ``a`` before it: ``a`` read beyond ``b``'s system_time at ``b``'s tsc_timestamp (0: no overlap)."""
    ns = tsc_to_kvmclock(b.tsc_timestamp, a)
    if ns <= b.system_time or not 0 <= b.tsc_timestamp - a.tsc_timestamp < 1 << 62:
        return 0
    return kvmclock_to_tsc(ns, b) - b.tsc_timestamp


@dataclass
class PvclockTimeline:
    """Every traced pvclock record per vCPU, ordered by ``system_time``."""

    updates: dict[int, list[PvclockUpdate]] = field(default_factory=dict)

    @classmethod
    def build(cls, updates: list[PvclockUpdate]) -> PvclockTimeline:
        by: dict[int, list[PvclockUpdate]] = {}
        for u in sorted(updates, key=lambda u: (u.vcpu, u.pv.system_time, u.host_tsc)):
            by.setdefault(u.vcpu, []).append(u)
        return cls(by)

    def record_for(self, vcpu: int, kvmclock_ns: int) -> tuple[PvclockUpdate, bool] | None:
        """The record in force at ``kvmclock_ns`` on ``vcpu`` and whether the time is before every
        traced record (then the first one is extended back); None when the vCPU has none."""
        ups = self.updates.get(vcpu)
        if not ups:
            return None
        lo, hi = 0, len(ups)
        while lo < hi:  # the last update with system_time <= kvmclock_ns
            mid = (lo + hi) // 2
            if ups[mid].pv.system_time <= kvmclock_ns:
                lo = mid + 1
            else:
                hi = mid
        return (ups[lo - 1], False) if lo else (ups[0], True)

    def to_tsc(self, vcpu: int, kvmclock_ns: int) -> tuple[int, bool] | None:
        """Guest TSC of ``kvmclock_ns`` on ``vcpu`` (the smallest that reaches it) and whether it was
        before the first traced record; None without a record for the vCPU."""
        found = self.record_for(vcpu, kvmclock_ns)
        if found is None:
            return None
        return kvmclock_to_tsc(kvmclock_ns, found[0].pv), found[1]

    def summary(self) -> dict[str, Any]:
        """Per vCPU: updates, whether versions increase write by write (a lost event or a second writer
        would show), TSC_STABLE on all, rounding bound (cycles)."""
        out: dict[str, Any] = {}
        for v, ups in self.updates.items():
            by_time = sorted(ups, key=lambda u: u.host_tsc)
            versions = [u.version for u in by_time]
            out[f"vcpu{v}"] = {
                "updates": len(ups),
                "versions_increasing": all(b > a for a, b in zip(versions, versions[1:])),
                "tsc_stable": all(u.flags & PVCLOCK_TSC_STABLE for u in ups),
                "rounding_cycles": max(_step(u.pv) for u in ups),
                "above_cycles": max((_above(a.pv, b.pv) for a, b in zip(by_time, by_time[1:])), default=0),
                "tsc_to_system_mul": sorted({u.pv.tsc_to_system_mul for u in ups})[:4],
                "tsc_shift": sorted({u.pv.tsc_shift for u in ups}),
            }
        return out
