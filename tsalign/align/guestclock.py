"""A guest side's timestamps on its TSC: exact where the guest recorded the TSC, else converted from
perf ns (the guest's perf page), kvm-clock ns or a kvm-clock guest's sched_clock ns (the host's traced
pvclock records, tsalign.offsets.pvclock) or ns of ``local``/``perf`` (a calibration measured in the guest,
tsalign.clock.calib), with how far each converted TSC may lie from the true one; and the cross-check of a
calibration against the pvclock route where both exist."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..clock import perf as perfclock
from ..errors import InvalidParameter
from ..offsets import PvclockTimeline
from ..traces.events import Events

__all__ = ["GuestOnTsc", "guest_events_on_tsc"]


@dataclass
class GuestOnTsc:
    """A guest's events with ts in guest TSC cycles, and what their conversion said."""

    events: Events
    notes: list[str] = field(default_factory=list)
    #: cycles a converted TSC may lie below the true one (0: exact)
    below: int = 0
    #: cycles a converted TSC may lie above the true one (a calibration's bound, pvclock records stepping back; 0: exact)
    above: int = 0
    #: host pvclock route against a guest calibration, per vCPU (None: not both available)
    cross_check: dict[str, Any] | None = None


def guest_events_on_tsc(guest: Any, pvclock: PvclockTimeline | None = None,
                        host_path: str = "the host bundle", events: Events | None = None) -> GuestOnTsc:
    """Guest events with ts in guest TSC cycles. Converts perf ns when the perf page allows, kvmclock ns
    with the host's pvclock records (``pvclock``), a kvm-clock guest's sched_clock ns (trace clock
    ``local``) with them and the guest's kvm_sched_clock_offset, and ns of ``local``/``perf`` with a guest
    calibration (``guest.calibration``); where both a pvclock route and a calibration exist, the pvclock
    route is used and the calibration is cross-checked against it per vCPU. ``events``: the guest's events when
    read already (default: read here)."""
    clock = guest.manifest.get("clock", {})
    domain = clock.get("domain")
    recs: Events = guest.events() if events is None else events
    cal = getattr(guest, "calibration", None)
    if domain == "guest_tsc":
        return GuestOnTsc(recs)
    if domain == "kvmclock_ns":
        return _kvmclock_events(recs, pvclock or PvclockTimeline(), guest.path, host_path)
    if domain == "perf_ns" and clock.get("convertible") and clock.get("perf_user_page"):
        page = clock["perf_user_page"]
        conv = perfclock.PerfTimeConv(page["time_zero"], page["time_mult"], page["time_shift"],
                                      page.get("time_cycles", 0), page.get("time_mask", 0),
                                      bool(page.get("cap_user_time_zero")), bool(page.get("cap_user_time_short")))
        tsc = [perfclock.perf_ns_to_tsc(t, conv) for t in recs.ts.tolist()]
        return GuestOnTsc(recs.with_ts(np.asarray(tsc, dtype=np.uint64)),
                          ["guest perf ns converted to guest TSC with the guest's perf user page"])
    if domain not in ("perf_ns", "sched_ns"):
        raise InvalidParameter("--guest", guest.path, f"a known clock domain (found {domain!r})")
    res = int(clock.get("resolution_ns") or 1)
    off = clock.get("kvm_sched_clock_offset_ns")
    pv = pvclock or PvclockTimeline()
    if domain == "sched_ns" and isinstance(off, int) and pv.updates:
        kvm = recs.with_ts(recs.ts + np.uint64(off % (1 << 64)))  # modulo 2^64, as the kernel adds
        out = _kvmclock_events(kvm, pv, guest.path, host_path, res)
        out.notes.insert(0, f"guest sched_clock ns = kvm-clock ns - kvm_sched_clock_offset ({off} ns, the guest's "
                            "kernel log)")
        if cal is not None:
            out.cross_check = _cross_check(recs, out.events, cal, clock.get("trace_clock", "local"), out.below,
                                           guest.path)
            verdict = "agree" if out.cross_check["agree"] else "DISAGREE"
            out.notes.append(f"guest calibration cross-checked against the host's pvclock records: {verdict} "
                             "(see kvmclock_cross_check)")
        return out
    if cal is not None:  # the calibration of the trace's own clock (a foreign trace may name another: refused)
        return _calibrated_events(recs, cal, clock.get("trace_clock") or ("perf" if domain == "perf_ns" else "local"),
                                   res, guest.path)
    if domain == "perf_ns":
        why = clock.get("reason") or "no perf user page recorded"
        fix = ("record with `tsalign capture --role guest` (trace clock x86-tsc), capture it with --clock local and "
               "the host's kvm_pvclock_update records, give --guest-calibration (tsalign calibrate in the guest), or "
               "boot the guest with no-kvmclock")
    elif isinstance(off, int):
        why = f"no kvm:kvm_pvclock_update of the guest's vCPUs in {host_path}"
        fix = ("record the host with kvm:kvm_pvclock_update (`tsalign capture` does by default; KVM writes a record on "
               "vCPU load without a stable master clock, on master clock updates and when the guest writes "
               "MSR_KVM_SYSTEM_TIME_NEW), or give --guest-calibration (tsalign calibrate in the guest)")
    else:
        why = clock.get("reason") or "the guest's kvm_sched_clock_offset is unknown"
        fix = "give --guest-calibration (tsalign calibrate in the guest), or capture the guest with --clock x86-tsc"
    raise InvalidParameter("--guest", guest.path, f"a guest bundle convertible to its TSC: this one holds {domain} "
                           f"({why}); {fix}")


def _kvmclock_events(recs: Events, pvclock: PvclockTimeline, guest_path: str,
                      host_path: str, resolution_ns: int = 1) -> GuestOnTsc:
    """kvmclock ns -> guest TSC per vCPU with the pvclock record in force (tsalign.offsets.pvclock); a
    timestamp printed at ``resolution_ns`` stands for ns up to ``resolution_ns - 1`` later."""
    missing = sorted(set(np.unique(recs.cpu).tolist()) - set(pvclock.updates))
    if missing:
        raise InvalidParameter(
            "--host", host_path,
            f"kvm:kvm_pvclock_update events of vCPU(s) {missing} for the guest's kvm-clock timestamps ({guest_path}); "
            "KVM writes a vCPU's pvclock record on vCPU load (without a stable master clock), on master clock "
            "changes and when the guest writes MSR_KVM_SYSTEM_TIME_NEW: capture the host with "
            "kvm:kvm_pvclock_update from before the guest starts (or migrate it, or write the MSR again) — "
            "`tsalign capture` records it by default")
    out, early, spread = [], 0, 0
    for cpu, ts in zip(recs.cpu.tolist(), recs.ts.tolist()):
        tsc, before = pvclock.to_tsc(cpu, ts)  # type: ignore[misc]
        early += before
        if resolution_ns > 1:  # the true ns lies in [ts, ts + resolution): its TSC up to this much later
            spread = max(spread, (pvclock.to_tsc(cpu, ts + resolution_ns - 1) or (tsc, 0))[0] - tsc)
        out.append(tsc)
    summary = pvclock.summary()
    bound = max(v["below_cycles"] for v in summary.values()) + spread
    above = max(v["above_cycles"] for v in summary.values())
    records = sum(len(u) for u in pvclock.updates.values())
    notes = [(f"guest kvm-clock ns converted to guest TSC with {records} traced pvclock record(s); each converted TSC "
              f"lies at most {bound} cycles below the true one"
              + (f" (timestamps at {resolution_ns} ns resolution)" if resolution_ns > 1 else "")
              + (f" and at most {above} cycles above it (the records step back in ns: a reading near a step is "
                 "converted with a newer record)" if above else ""))]
    if not all(v["tsc_stable"] for v in summary.values()):
        notes.append("the guest's pvclock is not TSC-stable: its kernel keeps kvm-clock readings monotonic across "
                     "vCPUs (the last value read anywhere), so a reading can lie above its own vCPU's record; the "
                     "evidence judges the result")
    if early:
        notes.append(f"{early} guest events precede every traced pvclock record: converted with the first one "
                     "(right if the record did not change between them)")
    return GuestOnTsc(recs.with_ts(np.asarray(out, dtype=np.uint64)), notes, bound, above)


def _calibrated_events(recs: Events, cals: dict[str, Any], clock: str, resolution_ns: int,
                        path: str) -> GuestOnTsc:
    """ns of ``clock`` -> guest TSC with the guest's calibration of that clock (tsalign.clock.calib); a timestamp
    printed at ``resolution_ns`` stands for ns up to ``resolution_ns - 1`` later."""
    cal = _calibration_of(cals, clock, path)
    tsc, outside = cal.to_tsc(recs.ts)
    tsc = np.asarray(tsc, dtype=np.uint64)
    spread = 0
    if resolution_ns > 1 and len(recs):
        later, _ = cal.to_tsc(np.minimum(recs.ts, np.uint64(2**64 - resolution_ns)) + np.uint64(resolution_ns - 1))
        spread = int((np.asarray(later, dtype=np.uint64) - tsc).view(np.int64).max())
    out = recs.with_ts(tsc)
    note = (f"guest {clock} ns converted to guest TSC with the calibration measured in the guest (tsalign calibrate, "
            f"{len(cal.pieces)} piece(s)): each converted TSC lies within {cal.bound_cycles} cycles of the true one"
            + (f", plus up to {spread} below it (timestamps at {resolution_ns} ns resolution)" if spread else "")
            + (f"; {outside} events outside the calibrated range (converted with the nearest piece)" if outside else ""))
    return GuestOnTsc(out, [note, *(f"guest {clock} calibration: {n}" for n in cal.notes)], cal.bound_cycles + spread,
                      cal.bound_cycles)


def _calibration_of(cals: dict[str, Any], clock: str, path: str) -> Any:
    if clock not in cals:
        raise InvalidParameter("--guest-calibration", path,
                               f"a calibration of the trace's clock ({clock!r}); the file holds {sorted(cals)}")
    return cals[clock]


def _cross_check(recs: Events, pv_recs: Events, cals: dict[str, Any], clock: str, pv_below: int,
                 path: str) -> dict[str, Any]:
    """The guest calibration's TSC for each event minus the host pvclock route's, per vCPU: they agree when
    every difference lies within what both bounds allow (the calibration's either way, the pvclock route's
    rounding below; the timestamps' resolution is the same for both and cancels)."""
    cal = _calibration_of(cals, clock, path)
    tsc, _ = cal.to_tsc(recs.ts)
    by: dict[int, list[int]] = {}
    for t, pv, cpu in zip(np.asarray(tsc, dtype=np.uint64).tolist(), pv_recs.ts.tolist(), pv_recs.cpu.tolist()):
        by.setdefault(cpu, []).append(t - pv)
    allowed_lo, allowed_hi = -(cal.bound_cycles + pv_below), cal.bound_cycles + pv_below
    per = {}
    for cpu, d in sorted(by.items()):
        d.sort()
        beyond = sum(1 for x in d if not allowed_lo <= x <= allowed_hi)
        per[f"vcpu{cpu}"] = {"events": len(d), "min_cycles": d[0], "median_cycles": d[len(d) // 2],
                             "max_cycles": d[-1], "beyond": beyond, "agree": beyond == 0}
    return {"clock": clock, "calibration_bound_cycles": cal.bound_cycles, "pvclock_below_cycles": pv_below,
            "allowed_cycles": [allowed_lo, allowed_hi], "calibration_boot_id": cal.boot_id,
            "per_vcpu": per, "agree": all(v["agree"] for v in per.values())}
