"""``tsalign align``: host bundle + guest bundle -> one timeline on the guest TSC axis + verdict."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..capture.bundle import Bundle
from ..clock import perf as perfclock
from ..clock.kvm import TscParams, host_to_guest_tsc
from ..errors import InconsistentData, InvalidParameter
from ..offsets import OffsetSnapshot, OffsetTimeline, OffsetWrite
from ..traces.ftrace_text import Record, parse_kvm_payload
from . import brackets

__all__ = ["Aligned", "align", "guest_records_on_tsc", "select_vm", "verdict_of", "write_outputs"]

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass
class Aligned:
    """The merged timeline (dicts sorted by guest_tsc) and what was learnt building it."""

    events: list[dict[str, Any]]
    timeline: OffsetTimeline
    vm: dict[str, Any]
    tsc_khz: int
    host_count: int
    guest_count: int
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    lost_events: dict[str, int] = field(default_factory=dict)


def select_vm(host: Bundle, guest: Bundle) -> dict[str, Any]:
    """The host bundle's VM that the guest bundle was recorded in; errors name both bundles."""
    vms: list[dict[str, Any]] = host.manifest.get("vm", [])
    gid = guest.manifest.get("vm", {}) if isinstance(guest.manifest.get("vm"), dict) else {}
    hnode, gnode = host.manifest.get("node", {}), guest.manifest.get("node", {})
    if gid.get("host_boot_id") and hnode.get("boot_id") and gid["host_boot_id"] != hnode["boot_id"]:
        raise InconsistentData(
            f"bundles of different machines: guest bundle {guest.path} was recorded in a VM of host boot "
            f"{gid['host_boot_id']}, host bundle {host.path} on boot {hnode['boot_id']}; "
            "capture host and guest at the same time (playbooks/capture.yml or tsalign selftest)")
    if not vms:
        raise InvalidParameter("--host", host.path, "a host bundle with the VM's offsets (tsalign capture --vm NAME)")
    for vm in vms:
        if gid.get("pid") == vm.get("pid") and gid.get("vm_fd") == vm.get("vm_fd"):
            return vm
        if gnode.get("product_uuid") and vm.get("uuid") and gnode["product_uuid"].lower() == vm["uuid"].lower():
            return vm
    if len(vms) == 1 and not gid and not (gnode.get("product_uuid") and vms[0].get("uuid")):
        return vms[0]
    raise InconsistentData(
        f"guest bundle {guest.path} matches none of the {len(vms)} VM(s) in host bundle {host.path} "
        f"(guest identity {gid or gnode.get('product_uuid')}; host VMs "
        f"{[(v.get('name'), v.get('uuid'), v.get('pid')) for v in vms]}): bundles of different machines or VMs")


def guest_records_on_tsc(guest: Bundle) -> tuple[list[Record], list[str]]:
    """Guest records with ts in guest TSC cycles; converts perf ns when the perf page allows."""
    clock = guest.manifest.get("clock", {})
    domain = clock.get("domain")
    recs = list(guest.records())
    if domain == "guest_tsc":
        return recs, []
    if domain == "perf_ns":
        page = clock.get("perf_user_page")
        if not clock.get("convertible") or not page:
            raise InvalidParameter(
                "--guest", guest.path,
                "a guest bundle on the TSC: this one holds perf ns that cannot be converted "
                f"({clock.get('reason') or 'no perf user page recorded'}); record with "
                "`tsalign capture --role guest` (trace clock x86-tsc) or boot the guest with no-kvmclock")
        conv = perfclock.PerfTimeConv(page["time_zero"], page["time_mult"], page["time_shift"],
                                      page.get("time_cycles", 0), page.get("time_mask", 0),
                                      bool(page.get("cap_user_time_zero")), bool(page.get("cap_user_time_short")))
        return [Record(perfclock.perf_ns_to_tsc(r.ts, conv), r.cpu, r.pid, r.comm, r.event, r.payload, r.tgid)
                for r in recs], ["guest perf ns converted to guest TSC with the guest's perf user page"]
    if domain == "kvmclock_ns":
        if not clock.get("pvclock"):
            raise InvalidParameter(
                "--guest", guest.path,
                "a guest bundle with pvclock data for its kvm-clock timestamps (none recorded); "
                "record with `tsalign capture --role guest` (trace clock x86-tsc) instead")
        raise InvalidParameter("--guest", guest.path, "guest_tsc or perf_ns timestamps (kvmclock_ns is not supported yet)")
    raise InvalidParameter("--guest", guest.path, f"a known clock domain (found {domain!r})")


def align(host: Bundle, guest: Bundle, guest_offset: TscParams | None = None) -> Aligned:
    """Merge both bundles' events on the guest TSC axis using the per-vCPU offset timeline.

    ``guest_offset``: parameters known from elsewhere (beacons, or an emulated VM whose TSC offset KVM
    does not hold); they are used for every vCPU in place of the bundle's snapshots."""
    if host.role != "host" or host.domain != "host_tsc":
        raise InvalidParameter("--host", host.path,
                               f"a host bundle in host_tsc (found role {host.role}, domain {host.domain}); "
                               "record it with `tsalign capture --role host`")
    if guest.role != "guest":
        raise InvalidParameter("--guest", guest.path, f"a guest bundle (found role {guest.role})")
    vm = select_vm(host, guest)
    tid_to_vcpu = {v["tid"]: v["id"] for v in vm.get("vcpus", []) if v.get("tid")}
    vm_threads = set(tid_to_vcpu) | {vm.get("pid")}
    host_recs = list(host.records())
    writes = []
    for r in host_recs:
        if r.event == "kvm_write_tsc_offset" and r.pid in vm_threads:
            f = parse_kvm_payload(r.event, r.payload)
            writes.append(OffsetWrite(r.ts, f["vcpu"], f["prev"], f["next"]))
    snaps = host.snapshots()
    if guest_offset is not None:
        ids = [v["id"] for v in vm.get("vcpus", [])] or [0]
        start = int(host.manifest.get("started_host_tsc", 0))
        snaps = [OffsetSnapshot(start, i, guest_offset, "given") for i in ids]
        writes = []
    elif not snaps and vm.get("vm_fd") is None:
        raise InvalidParameter("--guest-offset", "(none)",
                               f"the guest TSC offset for VM pid {vm.get('pid')}: it is emulated (no KVM offset); "
                               "measure it with beacons (see tsalign analyze --help) and pass it")
    timeline = OffsetTimeline.build(snaps, writes)
    khz = int(host.manifest.get("node", {}).get("tsc_khz") or guest.manifest.get("node", {}).get("tsc_khz") or 0)
    out: list[dict[str, Any]] = []
    dropped = {"host_no_offset": 0}
    for r in host_recs:
        vcpu = tid_to_vcpu.get(r.pid)
        try:
            params = timeline.params_at(vcpu, r.ts) if vcpu is not None else timeline.vm_params_at(r.ts)
        except InconsistentData:
            dropped["host_no_offset"] += 1
            continue
        out.append({"guest_tsc": host_to_guest_tsc(r.ts, params), "side": "host", "host_tsc": r.ts, "cpu": r.cpu,
                    "pid": r.pid, "tgid": r.tgid, "comm": r.comm, "event": r.event, "payload": r.payload, "vcpu": vcpu,
                    "track": f"vcpu{vcpu}" if vcpu is not None else f"cpu{r.cpu}"})
    grecs, notes = guest_records_on_tsc(guest)
    for r in grecs:
        out.append({"guest_tsc": r.ts, "side": "guest", "cpu": r.cpu, "pid": r.pid, "tgid": r.tgid, "comm": r.comm,
                    "event": r.event, "payload": r.payload, "track": f"vcpu{r.cpu}"})
    out.sort(key=lambda e: (e["guest_tsc"], e["side"] != "guest"))
    lost = {"host": int(host.manifest.get("lost_events", 0)), "guest": int(guest.manifest.get("lost_events", 0))}
    return Aligned(out, timeline, vm, khz, len(host_recs), len(grecs), dropped, notes, lost)


def _on_axis(a: Aligned, side: str, event: str) -> list[dict[str, Any]]:
    return [e for e in a.events if e["side"] == side and e["event"] == event]


def beacon_brackets(a: Aligned) -> dict[str, Any]:
    """Brackets from micro-VM beacons (guest ``tsalign_beacon``) and the host ``kvm_pio`` exits
    they caused; empty when the guest bundle has no beacons."""
    beacons = sorted(_on_axis(a, "guest", "tsalign_beacon"), key=lambda e: e["guest_tsc"])
    if not beacons:
        return {}
    pios = [(parse_kvm_payload("kvm_pio", e["payload"]), e) for e in a.events
            if e["side"] == "host" and e["event"] == "kvm_pio"]
    lo_exits = [(f["val"], e) for f, e in pios if f["port"] == 0x10]
    hi_exits = [(f["val"], e) for f, e in pios if f["port"] == 0x11]
    idx = brackets.match_by_value([b["guest_tsc"] for b in beacons], [(v, e["guest_tsc"]) for v, e in lo_exits])
    idx_hi = brackets.match_by_value([b["guest_tsc"] >> 32 for b in beacons], [(v, e["guest_tsc"]) for v, e in hi_exits])
    residuals, backward, raw_fwd, raw_bwd = [], [], [], []
    for i, b in enumerate(beacons):
        k = idx[i]
        if k is None:
            continue
        host_ev = lo_exits[k][1]
        residuals.append(brackets.signed_diff(host_ev["guest_tsc"], b["guest_tsc"]))
        raw_fwd.append((b["guest_tsc"], host_ev["host_tsc"]))
        kh = idx_hi[i]
        if kh is not None and i + 1 < len(beacons):
            hev = hi_exits[kh][1]
            backward.append(brackets.signed_diff(beacons[i + 1]["guest_tsc"], hev["guest_tsc"]))
            raw_bwd.append((hev["host_tsc"], beacons[i + 1]["guest_tsc"]))
    lo, hi = brackets.offset_interval(raw_fwd, raw_bwd)
    return {"beacons": len(beacons), "matched": len(residuals), "residuals": residuals, "backward": backward,
            "measured_offset_interval": [lo, hi]}


def irq_brackets(a: Aligned) -> dict[str, Any]:
    """Host injection -> guest handler TSC (``tsalign_irq`` events): the IRQ analysis' matching, as
    backward brackets (latencies in cycles); empty when the guest bundle has no handler events."""
    from ..analyze.irq import analyze_irq

    if not _on_axis(a, "guest", "tsalign_irq"):
        return {}
    r = analyze_irq(a.events, a.tsc_khz)
    return {"handlers": r.summary.get("handlers", 0), "injections": r.summary.get("injections", 0),
            "latencies": [row["latency_cycles"] for row in r.rows]}


def verdict_of(a: Aligned) -> dict[str, Any]:
    """The evidence-backed verdict of an alignment (JSON-ready)."""
    b = beacon_brackets(a)
    irq = irq_brackets(a)
    checked = len(b.get("residuals", [])) + len(b.get("backward", []))
    violated = sum(1 for r in b.get("residuals", []) if r < 0) + sum(1 for r in b.get("backward", []) if r < 0)
    issues = [i.__dict__ for i in a.timeline.issues]
    snaps = {(s.params.offset, s.params.ratio) for segs in a.timeline.segments.values() for s in segs}
    reasons = []
    status = PASS
    if violated:
        status = FAIL
        reasons.append(f"{violated} causality bracket(s) violated: the offset in use is wrong")
    if any(i["kind"] in ("unexplained_change", "vcpus_disagree", "prev_mismatch") for i in issues) and status == PASS:
        status = WARN
        reasons.append("offset sources disagree (see offsets.issues)")
    if a.dropped.get("host_no_offset"):
        status = WARN if status == PASS else status
        reasons.append(f"{a.dropped['host_no_offset']} host events had no offset and were dropped")
    if any(a.lost_events.values()):
        status = WARN if status == PASS else status
        reasons.append(f"ring buffers lost events: {a.lost_events}")
    if not checked:
        reasons.append("no causality brackets in these bundles (only offsets were checked)")
    return {
        "verdict": status,
        "reasons": reasons,
        "offsets": {"sources": sorted({s.source for segs in a.timeline.segments.values() for s in segs}),
                    "distinct_values": len(snaps), "issues": issues,
                    "changes_seen": sum(max(0, len(segs) - 1) for segs in a.timeline.segments.values()),
                    "timeline": a.timeline.to_dict()},
        "brackets": {"checked": checked, "violated": violated},
        "events": {"host": a.host_count, "guest": a.guest_count, "merged": len(a.events), "dropped": a.dropped,
                   "lost_in_ring_buffers": a.lost_events},
        "vm": {k: a.vm.get(k) for k in ("pid", "vm_fd", "name", "uuid")},
        "notes": a.notes,
        "_beacons": b, "_irq": irq,
    }


def write_outputs(a: Aligned, verdict: dict[str, Any], out: str) -> dict[str, str]:
    """timeline.jsonl, timeline.parquet (pyarrow), trace.perfetto-trace (perfetto) and verdict.json in ``out``."""
    os.makedirs(out, exist_ok=True)
    paths = {"timeline": os.path.join(out, "timeline.jsonl"), "verdict": os.path.join(out, "verdict.json")}
    with open(paths["timeline"], "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e, sort_keys=True) + "\n" for e in a.events)
    try:
        from ..traces.export import write_aligned_parquet

        paths["parquet"] = os.path.join(out, "timeline.parquet")
        write_aligned_parquet(paths["parquet"], a.events, {"axis": "guest_tsc", "tsc_khz": a.tsc_khz, "vm": a.vm.get("name")})
    except ImportError:
        verdict.setdefault("notes", []).append("pyarrow not installed: no Parquet timeline written")
    if a.tsc_khz:
        try:
            from ..report.perfetto import write_perfetto

            paths["perfetto"] = os.path.join(out, "trace.perfetto-trace")
            write_perfetto(paths["perfetto"], a.events, a.tsc_khz)
        except ImportError:
            verdict.setdefault("notes", []).append("perfetto package not installed: no Perfetto trace written")
    public = {k: v for k, v in verdict.items() if not k.startswith("_")}
    public["artifacts"] = paths
    with open(paths["verdict"], "w", encoding="utf-8") as f:
        json.dump(public, f, indent=2, sort_keys=True)
    return paths

