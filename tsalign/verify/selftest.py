"""``tsalign selftest``: on this host, without any prepared VM, run tsalign's micro-VM while
capturing host events, align, and prove the alignment with beacons and IRQ injections."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..align import brackets
from ..align.merge import align
from ..capture.capture import Capture, event_exists
from ..capture.microvm import BEACON_PORT_LO, IRQ_PORT_LO, MSR_BEACON, MicroVM
from ..catalogue import KPROBE_EVENTS, SELFTEST_EVENTS
from ..clock.pvclock import Pvclock, tsc_to_kvmclock
from ..errors import Unavailable
from ..node import kvmvms
from ..node.facts import node_facts
from ..node.fs import Root
from ..numbers import to_signed64
from ..traces.bundle import Bundle, write_manifest
from ..traces.payloads import kv
from ..verdicts import FAIL, PASS, WARN, worst

__all__ = ["SELFTEST_EVENTS", "evaluate", "run_selftest"]

DEFAULT_REQUEST = -(10**12)  # ask KVM for guest TSC = host TSC - 1e12 cycles


def _kvmclock_ns(b: Any) -> int:
    """The kvm-clock ns a guest reads at beacon ``b``'s TSC, with the pvclock record then in its memory."""
    if b.pvclock is None or b.pvclock[0] % 2:
        raise Unavailable(f"beacon {b.seq}: no settled pvclock record in guest memory (kvm-clock not enabled?)")
    _, tsc_ts, system_time, mul, shift, _ = b.pvclock
    return tsc_to_kvmclock(b.guest_tsc, Pvclock(system_time, tsc_ts, mul, shift))


def _record_precedes(b: Any) -> bool:
    """Whether beacon ``b``'s pvclock record (read at its exit) was in force at its TSC reading: written at a
    guest TSC not after it (modulo 2^64)."""
    return b.pvclock is not None and (b.guest_tsc - b.pvclock[1]) % (1 << 64) < 1 << 63


def _guest_bundle(path: str, vm: MicroVM, res: Any, host_boot_id: str | None, tsc_khz: int | None,
                  kvmclock: bool = False) -> None:
    """The micro-VM's events as a guest bundle: stamped with the guest TSC, or (``kvmclock``) with the
    kvm-clock ns the guest computes from its pvclock record, as a kvm-clock Linux guest's trace is."""
    os.makedirs(path, exist_ok=True)
    ts = _kvmclock_ns if kvmclock else (lambda b: b.guest_tsc)
    beacons, irqs = res.beacons, res.irq_beacons
    notes = []
    if kvmclock:
        # the record is read from guest memory at the beacon's first exit: where KVM rewrote it between the
        # guest's rdtsc and its `out` (the vCPU preempted and loaded again with a new offset), it postdates the
        # reading and is not the one a guest would have used: such beacons are not stamped
        beacons, irqs = [b for b in beacons if _record_precedes(b)], [b for b in irqs if _record_precedes(b)]
        skipped = len(res.beacons) + len(res.irq_beacons) - len(beacons) - len(irqs)
        if skipped:
            notes.append(f"{skipped} beacons not stamped in kvm-clock ns: their pvclock record was rewritten between "
                         "the guest's TSC reading and its exit")
    with open(os.path.join(path, "events.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"ts": ts(b), "cpu": 0, "pid": 0, "comm": "microvm", "event": "tsalign_beacon",
                                "payload": f"seq={b.seq} port={BEACON_PORT_LO:#x}"}) + "\n" for b in beacons)
        f.writelines(json.dumps({"ts": ts(b), "cpu": 0, "pid": 0, "comm": "microvm", "event": "tsalign_irq",
                                "payload": f"seq={b.seq} port={IRQ_PORT_LO:#x}"}) + "\n" for b in irqs)
        # the guest wrote each beacon's TSC to MSR_BEACON right after reading it (before its `out`)
        f.writelines(json.dumps({"ts": ts(b), "cpu": 0, "pid": 0, "comm": "microvm", "event": "tsalign_msr",
                                "payload": f"msr={MSR_BEACON:#x} value={b.guest_tsc:#x}"}) + "\n" for b in beacons)
    clock = ({"trace_clock": "kvm-clock", "domain": "kvmclock_ns", "convertible": True} if kvmclock else
             {"trace_clock": "rdtsc", "domain": "guest_tsc", "convertible": True})
    write_manifest(path, {
        "role": "guest",
        "node": {"kind": "tsalign micro-VM (real-mode guest on /dev/kvm)", "tsc_khz": tsc_khz},
        "clock": clock,
        "events": ["tsalign_beacon", "tsalign_irq", "tsalign_msr"],
        "vm": {"host_boot_id": host_boot_id, "pid": os.getpid(), "vm_fd": vm.vm_fd},
        "data": {"format": "jsonl", "files": ["events.jsonl"]},
        "lost_events": 0,
        "notes": notes,
        "run": {"exits": res.exits, "irqs_raised": res.irqs_raised, "wall_s": round(res.wall_s, 6)},
    })


def run_selftest(out: str, beacons: int = 1000, irqs: int = 50, request_offset: int | None = DEFAULT_REQUEST,
                 buffer_kb: int = 8192, judge: bool = True, kvmclock: bool = False, memory: str = "auto",
                 kprobe: bool = False) -> dict[str, Any]:
    """Capture + micro-VM + align + verify; returns the report (also written to out/report.json).

    ``judge=False``: record the two bundles only (standard library: runs on a KVM host that has no
    numpy, e.g. a nested one; align them elsewhere with ``tsalign align``). ``kvmclock``: the micro-VM
    gets a kvm-clock and its bundle is stamped in kvm-clock ns, as a kvm-clock Linux guest's trace is
    (the TSC-stamped truth goes to ``out/guest-tsc``); align converts it back with the host's traced
    pvclock records and the report says how far each converted TSC lies from the truth. ``memory``: read the
    offsets from kernel memory too (Capture.memory); ``kprobe``: record tsalign's registered kprobe, whose
    hits become offset snapshots (an error when it is not registered)."""
    t0 = time.monotonic()
    host_dir, guest_dir, aligned_dir = (os.path.join(out, d) for d in ("host", "guest", "aligned"))
    for d in (host_dir, guest_dir):
        if os.path.exists(os.path.join(d, "manifest.json")):
            raise Unavailable(f"{out} already holds a selftest; choose a new --out directory")
    facts = node_facts(Root())
    requested_error = None
    events = SELFTEST_EVENTS
    if kprobe:
        if not event_exists(KPROBE_EVENTS):
            raise Unavailable("--kprobe: tsalign's kprobe is not registered; run `tsalign kprobe register` "
                              "(or the host role of setup.yml) first")
        events = (*SELFTEST_EVENTS, KPROBE_EVENTS)
    with Capture(host_dir, "host", events, "x86-tsc", buffer_kb, memory=memory) as cap, MicroVM() as vm:
        vm.run(beacons=1)  # the vCPU thread is known to KVM (debugfs vcpu0/pid) after its first KVM_RUN
        found = [v for v in kvmvms.discover_vms(Root(), os.getpid()) if v.vm_fd == vm.vm_fd]
        if not found:
            raise Unavailable("the micro-VM is not visible in debugfs kvm/: mount debugfs (tsalign precheck --mount)")
        cap.vms = found
        cap.start()
        if request_offset is not None:
            requested_error = vm.request_tsc_offset(request_offset)
        if kvmclock:
            vm.enable_kvmclock()  # traced by the capture: KVM writes the record on the next entry
        res = vm.run(beacons=beacons, irqs=irqs)
        cap.stop()
        cap.finish({"workload": {"kind": "tsalign micro-VM", "beacons": beacons, "irqs": irqs,
                                 "guest_clock": "kvm-clock" if kvmclock else "tsc"}})
        khz = facts.get("tsc_khz") or vm.tsc_khz()
        _guest_bundle(guest_dir, vm, res, facts.get("boot_id"), khz, kvmclock)
        if kvmclock:
            _guest_bundle(os.path.join(out, "guest-tsc"), vm, res, facts.get("boot_id"), khz)
    if not judge:
        return {"verdict": None, "artifacts": {"host_bundle": host_dir, "guest_bundle": guest_dir},
                "run": {"beacons": len(res.beacons), "irqs": len(res.irq_beacons), "exits": res.exits,
                        "requested_error": requested_error}}
    from .judge import judge_and_write  # numpy

    host, guest = Bundle.open(host_dir, "--host"), Bundle.open(guest_dir, "--guest")
    aligned = align(host, guest)
    verdict, artifacts = judge_and_write(aligned, aligned_dir)
    report = evaluate(verdict, aligned.tsc_khz, host, request_offset, requested_error)
    if kvmclock:
        _judge_kvmclock(report, aligned, res)
    report["artifacts"] = {**artifacts, "host_bundle": host_dir, "guest_bundle": guest_dir,
                           "report": os.path.join(out, "report.json")}
    report["timing"] = {"wall_s": round(time.monotonic() - t0, 3), "vm_run_s": round(res.wall_s, 3),
                        "vm_exits": res.exits}
    with open(report["artifacts"]["report"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report


def _judge_kvmclock(report: dict[str, Any], aligned: Any, res: Any) -> None:
    """How far each guest event's TSC, converted back from kvm-clock ns with the host's traced pvclock
    records, lies below the TSC the guest really read (0 <= error < the rounding bound, or fail)."""
    truth = {("tsalign_irq" if b.irq else "tsalign_beacon", b.seq): b.guest_tsc for b in [*res.beacons, *res.irq_beacons]}
    errors = []
    for e in aligned.columns.select(host=(), guest=("tsalign_beacon", "tsalign_irq")).rows():
        if e["event"] in ("tsalign_beacon", "tsalign_irq"):
            seq = kv(e["payload"])["seq"]
            errors.append(to_signed64((truth[(e["event"], seq)] - e["guest_tsc"]) % (1 << 64)))
    summary = aligned.pvclock.summary()
    bound = max((v["below_cycles"] for v in summary.values()), default=0)
    above = max((v["above_cycles"] for v in summary.values()), default=0)
    ok = bool(errors) and min(errors) >= -above and max(errors) < bound
    report["kvmclock"] = {"events": len(errors), "error_cycles": {"min": min(errors, default=None),
                                                                   "max": max(errors, default=None)},
                          "below_bound_cycles": bound, "above_bound_cycles": above, "pvclock": summary, "ok": ok}
    if not ok:
        report["verdict"] = FAIL
        report["reasons"].append(f"kvm-clock: converted guest TSCs lie {min(errors, default=None)}..{max(errors, default=None)} "
                                 f"cycles below the TSCs the guest read; the pvclock records allow {-above}..{bound - 1}")


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
    pieces = (vcpu0 or {}).get("allowed_offset_intervals") or [[lo, hi]]  # (the runs may leave gaps in [lo, hi])
    measured_agrees = debugfs is not None and lo is not None and hi is not None \
        and any(a <= debugfs <= b for a, b in pieces)
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
