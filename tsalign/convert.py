"""Chained conversions between named time domains, used by ``tsalign convert``.

Domains form a chain: ``perf`` (host perf ns) <-> ``tsc`` (host TSC) <-> ``guest-tsc`` <->
``kvmclock`` (guest kvmclock ns) <-> ``guest-sched`` (guest sched_clock ns); ``cycles`` <-> ``ns``
are durations converted with tsc_khz for display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

from .clock import display, kvm, perf, pvclock
from .errors import InvalidParameter, MissingParameter

__all__ = ["CALIBRATED", "CHAIN", "DOMAINS", "DURATIONS", "ConvParams", "convert", "plan"]

CHAIN = ["perf", "tsc", "guest-tsc", "kvmclock", "guest-sched"]
#: with a calibration measured in the guest (tsalign calibrate): guest-tsc <-> guest-sched (ftrace ``local``,
#: sched_clock) or guest-perf (perf's local_clock) directly, without the pvclock parameters
CALIBRATED = {"guest-sched": "local", "guest-perf": "perf"}
DURATIONS = ["cycles", "ns"]
DOMAINS = CHAIN + ["guest-perf"] + DURATIONS


@dataclass
class ConvParams:
    """Everything a conversion may need; None = not given."""

    perf: perf.PerfTimeConv | None = None
    tsc: kvm.TscParams | None = None
    pvclock: pvclock.Pvclock | None = None
    kvm_sched_clock_offset: int | None = None
    sched_clock_offset: int = 0
    tsc_khz: int | None = None
    #: clock (``local``, ``perf``) -> its calibration (tsalign.clock.calib)
    calibration: dict[str, Any] | None = None


Step = Callable[[int], int]


def _need(value: object, name: str, step: str, hint: str) -> None:
    if value is None:
        raise MissingParameter(name, step, hint)


def _step(a: str, b: str, p: ConvParams) -> Step:
    pair = f"{a} -> {b}"
    if {a, b} == {"perf", "tsc"}:
        _need(p.perf, "--time-zero/--time-mult/--time-shift", pair,
              "read them from the perf user page (tsalign precheck shows them)")
        assert p.perf is not None
        p.perf.require_zero()
        conv = p.perf
        return (lambda v: perf.perf_ns_to_tsc(v, conv)) if a == "perf" else (lambda v: perf.tsc_to_perf_ns(v, conv))
    if {a, b} == {"tsc", "guest-tsc"}:
        _need(p.tsc, "--tsc-offset", pair, "e.g. --tsc-offset 0xffee6aba03eccaac (tsalign offsets shows it)")
        assert p.tsc is not None
        t = p.tsc
        return (lambda v: kvm.host_to_guest_tsc(v, t)) if a == "tsc" else (lambda v: kvm.guest_to_host_tsc(v, t))
    if {a, b} == {"guest-tsc", "kvmclock"}:
        _need(p.pvclock, "--pvclock-system-time/--pvclock-tsc-timestamp/--pvclock-mul/--pvclock-shift",
              pair, "read the guest's pvclock_vcpu_time_info")
        assert p.pvclock is not None
        pv = p.pvclock
        return (lambda v: pvclock.tsc_to_kvmclock(v, pv)) if a == "guest-tsc" else (lambda v: pvclock.kvmclock_to_tsc(v, pv))
    if {a, b} == {"kvmclock", "guest-sched"}:
        _need(p.kvm_sched_clock_offset, "--kvm-sched-clock-offset", pair,
              "the guest's kvm_sched_clock_offset in ns")
        assert p.kvm_sched_clock_offset is not None
        k, s = p.kvm_sched_clock_offset, p.sched_clock_offset
        if a == "kvmclock":
            return lambda v: pvclock.kvmclock_to_sched_ns(v, k, s)
        return lambda v: pvclock.sched_ns_to_kvmclock(v, k, s)
    if {a, b} & set(CALIBRATED) and "guest-tsc" in {a, b}:
        clock = CALIBRATED[b if a == "guest-tsc" else a]
        _need(p.calibration, "--calibration", pair, "measure one in the guest: tsalign calibrate -o FILE")
        assert p.calibration is not None
        if clock not in p.calibration:
            raise MissingParameter("--calibration", pair, f"a calibration of the {clock} clock (this file has "
                                   f"{', '.join(sorted(p.calibration))})")
        cal = p.calibration[clock]
        if a == "guest-tsc":
            return lambda v: int(cal.to_ns([v])[0])
        return lambda v: int(cal.to_tsc([v])[0][0])
    if {a, b} == {"cycles", "ns"}:
        _need(p.tsc_khz, "--tsc-khz", pair, "e.g. --tsc-khz 2596000")
        assert p.tsc_khz is not None
        khz = p.tsc_khz
        return (lambda v: display.cycles_to_ns(v, khz)) if a == "cycles" else (lambda v: display.ns_to_cycles(v, khz))
    raise InvalidParameter("--from/--to", pair, f"two domains of the chain {' <-> '.join(CHAIN)}, or cycles <-> ns")


def plan(src: str, dst: str, calibrated: bool = False) -> list[str]:
    """The domains visited converting ``src`` to ``dst`` (inclusive); ``calibrated``: a guest calibration is
    given, so guest-sched and guest-perf are one step from guest-tsc."""
    for name in (src, dst):
        if name not in DOMAINS:
            raise InvalidParameter("--from/--to", name, f"one of {', '.join(DOMAINS)}")
    if src in DURATIONS or dst in DURATIONS:
        if not (src in DURATIONS and dst in DURATIONS):
            raise InvalidParameter("--from/--to", f"{src} -> {dst}",
                                   "cycles <-> ns (durations) or two timestamp domains of the chain")
        return [src, dst] if src != dst else [src]
    ends = {src, dst}
    if "guest-perf" in ends or (calibrated and "guest-sched" in ends and "kvmclock" not in ends):
        if src == dst:
            return [src]
        if ends == {"guest-sched", "guest-perf"}:
            return [src, "guest-tsc", dst]
        chain = CHAIN[:3] + [next(iter(ends & set(CALIBRATED)))]
        if "kvmclock" in ends:
            raise InvalidParameter("--from/--to", f"{src} -> {dst}", "guest-perf with the domains "
                                   f"{' <-> '.join(chain)} (a calibration does not give kvmclock)")
    else:
        chain = CHAIN
    i, j = chain.index(src), chain.index(dst)
    return chain[i:j + 1] if i <= j else chain[j:i + 1][::-1]


def convert(values: Sequence[int], src: str, dst: str, p: ConvParams) -> list[int]:
    """Convert ``values`` from domain ``src`` to ``dst`` step by step along the chain."""
    path = plan(src, dst, p.calibration is not None)
    steps = [_step(a, b, p) for a, b in zip(path, path[1:])]
    out = []
    for v in values:
        for f in steps:
            v = f(v)
        out.append(v)
    return out
