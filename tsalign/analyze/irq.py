"""IRQ injection (host) -> guest handler entry, on the guest TSC axis.

Host injection events, in the order a request travels: ``kvm_set_irq`` (level 1; GSI), ``kvm_msi_set_irq``
(MSI; vector), ``kvm_pic_set_irq``, ``kvm_apic_accept_irq``, ``kvm_inj_virq``. The earliest family the host
capture holds is used (so one interrupt is not counted twice). Guest handlers: ``irq:irq_handler_entry``
or the micro-VM's ``tsalign_irq``. Each handler is matched to the latest earlier injection on the same
line (GSI == guest IRQ number for legacy lines; any line otherwise) that no earlier handler took.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..catalogue import IRQ_INJECTIONS
from ..clock.display import ns_or_none
from ..traces.payloads import kv
from .common import AnalysisResult, Needs, bare, dist, have

__all__ = ["HANDLERS", "INJECTIONS", "READS", "analyze_irq", "injection_line"]

INJECTIONS = IRQ_INJECTIONS
HANDLERS = ("irq_handler_entry", "tsalign_irq")
#: the events :func:`analyze_irq` reads, per side
READS = {"host": frozenset(INJECTIONS), "guest": frozenset(HANDLERS)}
#: beyond this (cycles) an injection is not the cause of a handler (10 ms at 2.5 GHz)
DEFAULT_WINDOW = 25_000_000


def injection_line(e: dict[str, Any]) -> tuple[str, int | None] | None:
    """The line of a host injection event: ("gsi", n) or ("vec", v); None for a line lowered (level 0)."""
    f = kv(e["payload"])
    name = bare(e)
    if name == "kvm_set_irq":
        return None if f.get("level", 1) == 0 else ("gsi", f.get("gsi"))
    if name == "kvm_pic_set_irq":
        return ("gsi", f.get("pin"))
    if name in ("kvm_msi_set_irq", "kvm_apic_accept_irq"):
        return ("vec", f.get("vec"))
    if name == "kvm_inj_virq":
        return ("vec", f.get("irq", f.get("IRQ")))
    return None


def analyze_irq(events: list[dict[str, Any]], tsc_khz: int, window: int = DEFAULT_WINDOW) -> AnalysisResult:
    """Latency distribution per line and per vCPU; unmatched injections and handlers counted."""
    res = AnalysisResult("irq")
    host_have = have(events, "host", INJECTIONS)
    guest_have = have(events, "guest", HANDLERS)
    if not host_have:
        res.needs.append(Needs("host", ["kvm:kvm_set_irq", "kvm:kvm_msi_set_irq", "kvm:kvm_inj_virq"],
                               "no host IRQ injection events (kvm_set_irq/kvm_msi_set_irq/... ) in the host capture"))
    if not guest_have:
        res.needs.append(Needs("guest", ["irq:irq_handler_entry"], "no guest IRQ handler events in the guest capture"))
    if res.needs:
        return res
    families = [n for n in INJECTIONS if n in host_have]
    use = {families[0]} | ({"kvm_msi_set_irq"} if families[0] == "kvm_set_irq" and "kvm_msi_set_irq" in host_have else set())
    inj = []
    for e in events:
        if e["side"] == "host" and bare(e) in use:
            line = injection_line(e)
            if line is not None:
                inj.append((e["guest_tsc"], line, e))
    handlers = [e for e in events if e["side"] == "guest" and bare(e) in HANDLERS]
    used = [False] * len(inj)
    by_line: dict[str, list[int]] = defaultdict(list)
    by_vcpu: dict[str, list[int]] = defaultdict(list)
    unmatched_handlers = 0
    start = 0
    for h in handlers:
        t = h["guest_tsc"]
        hf = kv(h["payload"])
        irq = hf.get("irq") if bare(h) == "irq_handler_entry" else None
        while start < len(inj) and inj[start][0] < t - window:
            start += 1
        best = None
        k = start
        while k < len(inj) and inj[k][0] <= t:
            if not used[k] and (irq is None or inj[k][1][0] != "gsi" or inj[k][1][1] == irq):
                best = k
            k += 1
        if best is None:
            unmatched_handlers += 1
            continue
        used[best] = True
        t0, line, src = inj[best]
        lat = t - t0
        lname = f"{line[0]} {line[1]}" if irq is None else f"irq {irq} ({line[0]} {line[1]})"
        by_line[lname].append(lat)
        by_vcpu[f"vcpu{h['cpu']}"].append(lat)
        res.rows.append({"injected_guest_tsc": t0, "handler_guest_tsc": t, "latency_cycles": lat,
                         "latency_ns": ns_or_none(lat, tsc_khz), "line": lname,
                         "vcpu": h["cpu"], "injection": bare(src), "handler": bare(h)})
        res.slices.append({"side": "guest", "track": f"vcpu{h['cpu']}", "name": f"irq latency {lname}",
                           "start": t0, "end": t})
    lat_all = [r["latency_cycles"] for r in res.rows]
    res.summary = {
        "injection_events": sorted(use), "handler_events": sorted(guest_have),
        "injections": len(inj), "handlers": len(handlers), "matched": len(res.rows),
        "unmatched_injections": used.count(False), "unmatched_handlers": unmatched_handlers,
        "latency": dist(lat_all, tsc_khz),
        "per_line": {k: dist(v, tsc_khz) for k, v in sorted(by_line.items())},
        "per_vcpu": {k: dist(v, tsc_khz) for k, v in sorted(by_vcpu.items())},
    }
    return res
