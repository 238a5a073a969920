"""Per-vCPU kvm-clock (pvclock) timelines from the host's ``kvm:kvm_pvclock_update`` events, and the
conversion of a kvm-clock guest's timestamps (kvmclock ns) to its TSC.

KVM writes each vCPU's pvclock record (``kvm_guest_time_update``) on vCPU load when the master clock
is not in use, on master clock updates and when the guest writes MSR_KVM_SYSTEM_TIME(_NEW), and
traces every write. A guest reads ``ns = system_time + scale(tsc - tsc_timestamp)`` with the record
in force (:mod:`tsalign.clock.pvclock`). Going back, a kvmclock ns is turned into the smallest guest
TSC whose kvmclock reaches it, with the record whose ``system_time`` is the latest not after it; the
true TSC lies in ``[that, that + step)`` where ``step`` (cycles per ns, rounded up) is reported as
the rounding bound. A record whose ``system_time`` lies below what an earlier record read at its
``tsc_timestamp`` (a backward step of the clock, as KVM's records on an unstable TSC make) leaves ns that
both records produce: a reading made with the older record is then converted with the newer one, above
the true TSC; steps that add up over several records reach further, and a record stepping back below an
earlier record's ``system_time`` has its own readings converted with that earlier one, below the truth.
:meth:`PvclockTimeline.summary` bounds both from the records alone: each record's readings span the ns it
produces from its ``tsc_timestamp`` up to the next write, and every record those ns are converted with is
compared with it (``above_cycles``, ``below_cycles``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from ..clock.pvclock import Pvclock, kvmclock_to_tsc, tsc_to_kvmclock
from ..numbers import MASK64, to_signed64

__all__ = ["PVCLOCK_TSC_STABLE", "PvclockTimeline", "PvclockUpdate", "conversion_bounds", "parse_pvclock_update"]

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


def _gap(ns: int, read: Pvclock, used: Pvclock) -> int:
    """Cycles between the TSCs two records give ``ns`` (``used``'s minus ``read``'s, signed)."""
    return to_signed64((kvmclock_to_tsc(ns, used) - kvmclock_to_tsc(ns, read)) & MASK64)


def conversion_bounds(records: list[PvclockUpdate], until_ns: int | None = None) -> tuple[int, int]:
    """(below, above): cycles a TSC converted back from a kvmclock ns with the record whose system_time is the
    latest not after it (``records`` ordered so, as :meth:`PvclockTimeline.record_for` uses them) may lie below
    (``0 <= truth - converted < below``) and above (``converted - truth <= above``) the TSC the guest read.

    A record written at guest TSC ``T`` is read until the next write (by host time): its readings are the ns from
    its system_time to what it gives one cycle before the next ``tsc_timestamp`` (the last record's: on), none
    beyond ``until_ns`` (the latest ns converted; by default the latest system_time of any record). Every record
    those ns are converted with is compared with it at both ends of the ns they share (the lines are straight but
    for each record's rounding, added): where it gives a later TSC, the conversion lies above the truth; an
    earlier one, below."""
    if not records:
        return 0, 0
    starts = [u.pv.system_time for u in records]
    written = sorted(records, key=lambda u: u.host_tsc)
    end = max(starts) if until_ns is None else until_ns
    below = max(_step(u.pv) for u in records)
    above = 0
    for k, a in enumerate(written):
        lo = a.pv.system_time
        hi = end
        if k + 1 < len(written):
            span = (written[k + 1].pv.tsc_timestamp - a.pv.tsc_timestamp) & MASK64
            hi = min(end, tsc_to_kvmclock(a.pv.tsc_timestamp + span - 1, a.pv) if 0 < span < 1 << 62 else lo)
        j = bisect_right(starts, lo) - 1  # >= a's own place: a's system_time is lo
        while j < len(records) and starts[j] <= hi:
            used = records[j].pv
            first, last = max(lo, starts[j]), min(hi, starts[j + 1] - 1) if j + 1 < len(records) else hi
            if used != a.pv and first <= last:
                slack = _step(a.pv) + _step(used)  # each conversion rounds up by less than its step
                for ns in (first, last):
                    gap = _gap(ns, a.pv, used)
                    above = max(above, gap + slack)
                    below = max(below, slack - gap)
            j += 1
    return below, above


@dataclass
class PvclockTimeline:
    """Every traced pvclock record per vCPU, ordered by ``system_time``."""

    updates: dict[int, list[PvclockUpdate]] = field(default_factory=dict)
    #: the latest kvmclock ns :meth:`to_tsc` converted (None: none yet): the bounds' horizon
    converted_until: int | None = None

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
        if self.converted_until is None or kvmclock_ns > self.converted_until:
            self.converted_until = kvmclock_ns
        return kvmclock_to_tsc(kvmclock_ns, found[0].pv), found[1]

    def summary(self, until_ns: int | None = None) -> dict[str, Any]:
        """Per vCPU: updates, whether versions increase write by write (a lost event or a second writer
        would show), TSC_STABLE on all, the rounding (cycles per ns) and the conversion's bounds
        (:func:`conversion_bounds`; ``until_ns``: the latest kvmclock ns converted, for the last record's span;
        by default the latest :meth:`to_tsc` converted)."""
        until_ns = self.converted_until if until_ns is None else until_ns
        out: dict[str, Any] = {}
        for v, ups in self.updates.items():
            by_time = sorted(ups, key=lambda u: u.host_tsc)
            below, above = conversion_bounds(ups, until_ns)
            versions = [u.version for u in by_time]
            out[f"vcpu{v}"] = {
                "updates": len(ups),
                "versions_increasing": all(b > a for a, b in zip(versions, versions[1:])),
                "tsc_stable": all(u.flags & PVCLOCK_TSC_STABLE for u in ups),
                "rounding_cycles": max(_step(u.pv) for u in ups),
                "below_cycles": below,
                "above_cycles": above,
                "tsc_to_system_mul": sorted({u.pv.tsc_to_system_mul for u in ups})[:4],
                "tsc_shift": sorted({u.pv.tsc_shift for u in ups}),
            }
        return out
