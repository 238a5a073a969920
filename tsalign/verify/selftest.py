"""``tsalign selftest``: on this host, without any prepared VM, run tsalign's micro-VM while
capturing host events, align, and prove the alignment with beacons and IRQ injections."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..align import brackets
from ..align.merge import align, write_outputs
from ..capture.capture import Capture
from ..capture.microvm import BEACON_PORT_LO, IRQ_PORT_LO, MSR_BEACON, MicroVM
from ..errors import Unavailable
from ..node import kvmvms
from ..node.facts import node_facts
from ..node.fs import Root
from ..numbers import to_signed64
from ..traces.bundle import Bundle, write_manifest
from ..verdicts import FAIL, PASS, WARN, worst

__all__ = ["SELFTEST_EVENTS", "evaluate", "run_selftest"]

#: the offset's sources and every kind of evidence the micro-VM gives: beacons (kvm_pio), MSR writes
#: (kvm_msr), IRQ injections, and its vCPU thread's runs (sched_switch; kvm_entry/kvm_exit where they fire)
SELFTEST_EVENTS = ("kvm:kvm_write_tsc_offset", "kvm:kvm_pio", "kvm:kvm_msr", "kvm:kvm_set_irq", "kvm:kvm_pic_set_irq",
                   "kvm:kvm_entry", "kvm:kvm_exit", "sched:sched_switch", "sched:sched_waking")
DEFAULT_REQUEST = -(10**12)  # ask KVM for guest TSC = host TSC - 1e12 cycles


def _guest_bundle(path: str, vm: MicroVM, res: Any, host_boot_id: str | None, tsc_khz: int | None) -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "events.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"ts": b.guest_tsc, "cpu": 0, "pid": 0, "comm": "microvm", "event": "tsalign_beacon",
                                "payload": f"seq={b.seq} port={BEACON_PORT_LO:#x}"}) + "\n" for b in res.beacons)
        f.writelines(json.dumps({"ts": b.guest_tsc, "cpu": 0, "pid": 0, "comm": "microvm", "event": "tsalign_irq",
                                "payload": f"seq={b.seq} port={IRQ_PORT_LO:#x}"}) + "\n" for b in res.irq_beacons)
        # the guest wrote each beacon's TSC to MSR_BEACON right after reading it (before its `out`)
        f.writelines(json.dumps({"ts": b.guest_tsc, "cpu": 0, "pid": 0, "comm": "microvm", "event": "tsalign_msr",
                                "payload": f"msr={MSR_BEACON:#x} value={b.guest_tsc:#x}"}) + "\n" for b in res.beacons)
    write_manifest(path, {
        "role": "guest",
        "node": {"kind": "tsalign micro-VM (real-mode guest on /dev/kvm)", "tsc_khz": tsc_khz},
        "clock": {"trace_clock": "rdtsc", "domain": "guest_tsc", "convertible": True},
        "events": ["tsalign_beacon", "tsalign_irq", "tsalign_msr"],
        "vm": {"host_boot_id": host_boot_id, "pid": os.getpid(), "vm_fd": vm.vm_fd},
        "data": {"format": "jsonl", "files": ["events.jsonl"]},
        "lost_events": 0,
        "run": {"exits": res.exits, "irqs_raised": res.irqs_raised, "wall_s": round(res.wall_s, 6)},
    })


def run_selftest(out: str, beacons: int = 1000, irqs: int = 50, request_offset: int | None = DEFAULT_REQUEST,
                 buffer_kb: int = 8192, judge: bool = True) -> dict[str, Any]:
    """Capture + micro-VM + align + verify; returns the report (also written to out/report.json).

    ``judge=False``: record the two bundles only (standard library: runs on a KVM host that has no
    numpy, e.g. a nested one; align them elsewhere with ``tsalign align``)."""
    t0 = time.monotonic()
    host_dir, guest_dir, aligned_dir = (os.path.join(out, d) for d in ("host", "guest", "aligned"))
    for d in (host_dir, guest_dir):
        if os.path.exists(os.path.join(d, "manifest.json")):
            raise Unavailable(f"{out} already holds a selftest; choose a new --out directory")
    facts = node_facts(Root())
    requested_error = None
    with Capture(host_dir, "host", SELFTEST_EVENTS, "x86-tsc", buffer_kb) as cap, MicroVM() as vm:
        vm.run(beacons=1)  # the vCPU thread is known to KVM (debugfs vcpu0/pid) after its first KVM_RUN
        found = [v for v in kvmvms.discover_vms(Root(), os.getpid()) if v.vm_fd == vm.vm_fd]
        if not found:
            raise Unavailable("the micro-VM is not visible in debugfs kvm/: mount debugfs (tsalign precheck --mount)")
        cap.vms = found
        cap.start()
        if request_offset is not None:
            requested_error = vm.request_tsc_offset(request_offset)
        res = vm.run(beacons=beacons, irqs=irqs)
        cap.stop()
        cap.finish({"workload": {"kind": "tsalign micro-VM", "beacons": beacons, "irqs": irqs}})
        _guest_bundle(guest_dir, vm, res, facts.get("boot_id"), facts.get("tsc_khz") or vm.tsc_khz())
    if not judge:
        return {"verdict": None, "artifacts": {"host_bundle": host_dir, "guest_bundle": guest_dir},
                "run": {"beacons": len(res.beacons), "irqs": len(res.irq_beacons), "exits": res.exits,
                        "requested_error": requested_error}}
    from .judge import verdict_of  # numpy

    host, guest = Bundle.open(host_dir, "--host"), Bundle.open(guest_dir, "--guest")
    aligned = align(host, guest)
    verdict = verdict_of(aligned)
    artifacts = write_outputs(aligned, verdict, aligned_dir)
    report = evaluate(verdict, aligned.tsc_khz, host, request_offset, requested_error)
    report["artifacts"] = {**artifacts, "host_bundle": host_dir, "guest_bundle": guest_dir,
                           "report": os.path.join(out, "report.json")}
    report["timing"] = {"wall_s": round(time.monotonic() - t0, 3), "vm_run_s": round(res.wall_s, 3),
                        "vm_exits": res.exits}
    with open(report["artifacts"]["report"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report


def evaluate(verdict: dict[str, Any], tsc_khz: int, host: Bundle, request_offset: int | None,
             requested_error: str | None) -> dict[str, Any]:
    """The selftest report from an alignment verdict: beacons, offsets, irq, overall verdict."""
    details = verdict["_details"]
    b = details.get("pio_beacon", {})
    irq = details.get("irq_injection", {})
    res = brackets.distribution(b.get("residuals", []))
    lat = brackets.distribution(irq.get("latencies", []))
    vcpu0 = next((v for v in verdict["evidence"]["per_vcpu"] if v["vcpu"] == 0), None)
    lo, hi = (vcpu0 or {}).get("offset_interval") or [None, None]
    snaps = host.snapshots()
    debugfs_vals = sorted({to_signed64(s.params.offset) for s in snaps})
    debugfs = debugfs_vals[0] if len(debugfs_vals) == 1 else None
    measured_agrees = debugfs is not None and lo is not None and hi is not None and lo <= debugfs <= hi
    requested_applied = request_offset is not None and debugfs == request_offset and measured_agrees
    notes: list[str] = []
    if request_offset is not None:
        if requested_error:
            notes.append(f"requesting TSC offset {request_offset} failed: {requested_error}")
        elif requested_applied:
            notes.append(f"requested TSC offset {request_offset} was applied: debugfs, tracepoint and evidence agree")
        else:
            notes.append(
                f"requested TSC offset {request_offset} was NOT applied: kvm_write_tsc_offset reported it, but "
                f"debugfs reads {debugfs} and the evidence allows [{lo}, {hi}]; this hypervisor (e.g. PVM, nested) "
                "ignores TSC offset writes, so tsalign trusts debugfs and the evidence, not the tracepoint")
    status = verdict["verdict"]
    reasons = list(verdict["reasons"])
    if status == PASS and not measured_agrees:
        status = FAIL
        reasons.append(f"debugfs offset {debugfs_vals} is outside the interval the evidence allows [{lo}, {hi}]")
    if b.get("matched", 0) < b.get("beacons", 0):
        reasons.append(f"{b['beacons'] - b['matched']} beacons had no host kvm_pio event (ring buffer too small?)")
        status = worst(status, WARN)
    return {
        "verdict": status,
        "reasons": reasons,
        "tsc_khz": tsc_khz,
        "beacons": {"count": b.get("matched", 0), "sent": b.get("beacons", 0),
                    "residual_cycles": res.to_dict(), "residual_ns": res.to_ns(tsc_khz),
                    "violations": ((vcpu0 or {}).get("evidence", {}).get("pio_beacon") or {}).get("violated", 0)},
        "offsets": {"debugfs": debugfs, "debugfs_values": debugfs_vals, "requested": request_offset,
                    "requested_error": requested_error, "requested_applied": requested_applied,
                    "measured_interval": [lo, hi], "debugfs_equals_measured": measured_agrees,
                    "issues": verdict["offsets"]["issues"]},
        "evidence": verdict["evidence"],
        "irq": {"count": lat.count, "injections": irq.get("injections", 0), "latency_cycles": lat.to_dict(),
                "latency_ns": lat.to_ns(tsc_khz)},
        "alignment": {k: v for k, v in verdict.items() if not k.startswith("_")},
        "notes": notes,
    }
