"""The verdict of an alignment: every piece of evidence of the catalogue, intersected per vCPU.

``pass``: on every vCPU with guest events, evidence was checked, none contradicts the offset in
use, and it bounds the offset error from both sides. ``fail``: some evidence contradicts it (the
vCPU, the kind and the distance are named). ``unverified``: no evidence at all (the capture
options that would give some are listed). ``warn``: evidence holds but is one-sided or missing
for some vCPU, offset sources disagree, or events were lost or dropped.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from ..align.merge import write_timeline, write_verdict
from ..catalogue import CATALOGUE, needed_events
from ..heap import release_freed_memory
from ..numbers import to_signed64
from ..progress import Step
from ..verdicts import FAIL, PASS, UNVERIFIED, WARN, worst
from .evidence import extract_all
from .intervals import Brackets, VcpuEvidence, judge_vcpu

__all__ = ["capture_hint", "judge_and_write", "verdict_of"]


def capture_hint() -> dict[str, str]:
    """The ``tsalign capture`` options that record every kind of evidence, per side."""
    ev = needed_events()
    return {"host": f"tsalign capture --role host --vm NAME --events {','.join(ev['host'])} --out HOST_BUNDLE",
            "guest": f"tsalign capture --role guest --events {','.join(ev['guest'])} --out GUEST_BUNDLE"}


def _sources(a: Any, vcpu: int, ev: VcpuEvidence, used: list[int]) -> dict[str, Any]:
    """Offsets of one vCPU from every source, and whether each lies in the measured interval."""
    def agrees(v: int) -> bool | None:
        return None if len(used) != 1 else ev.allows(v - used[0])

    out: dict[str, Any] = {}
    for s in a.snapshots:
        if s.vcpu == vcpu:
            out.setdefault(s.source, {"values": []})["values"].append(s.params.signed_offset)
    writes = [to_signed64(w.next) for w in a.writes if w.vcpu == vcpu]
    if writes:
        out["kvm_write_tsc_offset"] = {"values": sorted(set(writes)), "count": len(writes)}
    for src in out.values():
        vals = sorted(set(src["values"]))
        src["values"] = vals
        src["agrees_with_evidence"] = [agrees(v) for v in vals] if len(vals) <= 16 else None
    return out


def _outside_host_window(a: Any) -> int:
    """Guest events outside [start, stop] of the host capture (each converted with its vCPU's offset)."""
    start, stop = a.host_window
    if start is None or stop is None:
        return 0
    n = 0
    c = a.columns
    for v in a.timeline.vcpus:
        lo, hi = a.timeline.host_to_guest(v, start), a.timeline.host_to_guest(v, stop)
        g = c.guest_tsc[~c.is_host & (c.cpu == v)]
        n += int(((g < np.uint64(lo)) | (g > np.uint64(hi))).sum())
    return n


def verdict_of(a: Any) -> dict[str, Any]:
    """The evidence-backed verdict of an alignment (``tsalign.align.merge.Aligned``), JSON-ready."""
    found = extract_all(a)
    if a.guest_rounding:  # guest TSCs converted from ns lie up to this far below (and guest_above above) the truth
        found.brackets = [b.widened(a.guest_rounding, a.guest_above) for b in found.brackets]
        found.notes.append(f"guest timestamps converted from ns: every upper bound widened by {a.guest_rounding} "
                           f"cycles, every lower bound by {a.guest_above} (their conversion's bound)")
    by_vcpu: dict[int, list[Brackets]] = defaultdict(list)
    for b in found.brackets:
        by_vcpu[b.vcpu].append(b)
    guest_vcpus = sorted(set(np.unique(a.columns.cpu[~a.columns.is_host]).tolist()) & set(a.timeline.vcpus))
    reasons: list[str] = []
    status = PASS
    per_vcpu = []
    checked = violated = 0
    for v in sorted(set(guest_vcpus) | set(by_vcpu)):
        ev = judge_vcpu(v, by_vcpu.get(v, []), a.tsc_khz)
        used = sorted({s.params.signed_offset for s in a.timeline.segments.get(v, [])})
        d = ev.to_dict(a.tsc_khz, used)
        d["offset_in_use"] = {"values": used[:16], "distinct": len(used),
                              "sources": sorted({s.source for s in a.timeline.segments.get(v, [])}),
                              "chosen_because": a.offset_choice}
        d["sources"] = _sources(a, v, ev, used)
        per_vcpu.append(d)
        if ev.unsearched:
            found.notes.append(f"vcpu{v}: the offsets the vCPU runs allow between the pairs' bounds were too many to "
                               f"enumerate: [{ev.lo}, {ev.hi}] is the interval around the offset judged, and offsets "
                               "farther away may be allowed by all evidence too")
        checked += ev.checked
        violated += ev.violated
        if ev.violated:
            w = ev.worst or {}
            status = FAIL
            empty = ev.satisfiable is False
            reasons.append(
                f"vcpu{v}: {ev.violated} of {ev.checked} evidence items contradict the offset in use: it is at least "
                f"{w.get('cycles')} cycles" + (f" ({w['ns']} ns)" if w.get("ns") is not None else "")
                + f" too {w.get('offset_in_use_is_too')} by {w.get('kind')}"
                + (f" (guest TSC {w['guest_tsc']})" if w.get("guest_tsc") is not None else "")
                + f"; the evidence allows [{ev.lo}, {ev.hi}] cycles around it"
                + (f" in {ev.pieces} separate intervals (the vCPU's runs leave gaps between them; the true offset "
                   "lies in one)" if ev.pieces and ev.pieces > 1 else "")
                + ("; no single offset satisfies all of it (did the offset change during the capture without being "
                   "recorded?)" if empty else ""))
        elif not ev.checked:
            status = worst(status, WARN)
            reasons.append(f"vcpu{v}: no evidence for this vCPU's events")
        elif not ev.bounded:
            status = worst(status, WARN)
            side = "above" if ev.hi is None else "below"
            reasons.append(f"vcpu{v}: evidence bounds the offset from one side only: an error {side} it of any "
                           f"size would go unnoticed (kinds: {', '.join(ev.per_kind)})")
    if checked == 0:
        status = worst(status, UNVERIFIED) if status != FAIL else status
        hint = capture_hint()
        reasons.append("no evidence to check the alignment against: record it with "
                       f"`{hint['host']}` and `{hint['guest']}`")
    outside = _outside_host_window(a)
    if outside:
        status = worst(status, WARN) if status not in (FAIL, UNVERIFIED) else status
        reasons.append(f"{outside} of {a.guest_count} guest events lie outside the host capture on the guest axis: "
                       "the two captures did not run at the same time (start the host capture first and stop it "
                       "after the guest's, as capture.yml does)")
    issues = [i.__dict__ for i in a.timeline.issues]
    # vCPUs with different offsets are no contradiction (each is converted with its own); sources that
    # disagree about one vCPU are
    if any(i["kind"] in ("unexplained_change", "prev_mismatch") for i in issues) and status == PASS:
        status = WARN
        reasons.append("offset sources disagree (see offsets.issues)")
    cross = a.cross_check
    if cross is not None and not cross["agree"]:
        status = FAIL
        for v, d in cross["per_vcpu"].items():
            if not d["agree"]:
                reasons.append(f"{v}: the guest calibration and the host's pvclock records disagree: {d['beyond']} of "
                               f"{d['events']} guest events converted {d['min_cycles']}..{d['max_cycles']} cycles apart "
                               f"(allowed {cross['allowed_cycles'][0]}..{cross['allowed_cycles'][1]}): the calibration "
                               "no longer holds (a migration, another boot, or a clock that steps between vCPU loads)")
    if a.dropped.get("host_no_offset"):
        status = worst(status, WARN) if status != UNVERIFIED else status
        reasons.append(f"{a.dropped['host_no_offset']} host events had no offset and were dropped")
    if a.axis_spreads and a.axis_spreads[-1]:
        bound = max((d["width_cycles"] or 0 for d in per_vcpu), default=0)
        median = a.axis_spreads[len(a.axis_spreads) // 2]
        text = (f"{len(a.axis_spreads)} host events not on a vCPU thread were placed with vcpu{a.axis_vcpu}'s offset; "
                f"the vCPUs' offsets differed there by {median} cycles (median; max {a.axis_spreads[-1]}): "
                "their uncertainty")
        if median > bound:
            status = worst(status, WARN) if status not in (FAIL, UNVERIFIED) else status
            reasons.append(text + f", more than the evidence's error bound ({bound} cycles)")
        else:
            found.notes.append(text + f", within the evidence's error bound ({bound} cycles)")
    kinds_found = sorted({b.kind for b in found.brackets if len(b)})
    snaps = {(s.params.offset, s.params.ratio) for segs in a.timeline.segments.values() for s in segs}
    return {
        "verdict": status,
        "reasons": reasons,
        "evidence": {"per_vcpu": per_vcpu, "kinds_found": kinds_found,
                     "kinds_missing": [k.name for k in CATALOGUE if k.name not in kinds_found],
                     "vcpu_run_source": found.details.get("vcpu_run", {}).get("run_source", {}),
                     "notes": found.notes, "capture_for_all_kinds": capture_hint()},
        "offsets": {"sources": sorted({s.source for segs in a.timeline.segments.values() for s in segs}
                                      | {s.source for s in a.snapshots} | ({"kvm_write_tsc_offset"} if a.writes else set())),
                    "distinct_values": len(snaps), "issues": issues,
                    "changes_seen": sum(max(0, len(segs) - 1) for segs in a.timeline.segments.values()),
                    "timeline": a.timeline.to_dict()},
        "kvmclock": a.pvclock.summary(),
        "kvmclock_cross_check": cross,
        "guest_conversion": {"below_cycles": a.guest_rounding, "above_cycles": a.guest_above},
        "brackets": {"checked": checked, "violated": violated},
        "events": {"host": a.host_count, "guest": a.guest_count, "merged": len(a.columns), "dropped": a.dropped,
                   "lost_in_ring_buffers": a.lost_events},
        "vm": {k: a.vm.get(k) for k in ("pid", "vm_fd", "name", "uuid")},
        "notes": a.notes,
        "_details": found.details,
    }


def payload_policies(also: dict[str, frozenset[str]] | None = None) -> tuple[Any, Any]:
    """(host, guest) :class:`tsalign.traces.spill.PayloadPolicy`: the payloads an alignment and its verdict read
    (offset sources, evidence), and ``also`` those of these events per side (an analysis' ``READS``); the others
    wait in spills until the outputs are written."""
    from ..align.merge import OFFSET_EVENTS, OFFSET_PREFIXES
    from ..traces.spill import PayloadPolicy
    from .evidence import BINARY_FIELDS, FIELDS, MARKERS, READS

    more = also or {}
    # the payloads whose fields the evidence reads are parsed as they are read: those fields are kept, not the text
    return (PayloadPolicy((READS["host"] - set(FIELDS["host"])) | OFFSET_EVENTS | more.get("host", frozenset()),
                          OFFSET_PREFIXES, (), FIELDS["host"], binary=BINARY_FIELDS["host"]),
            PayloadPolicy((READS["guest"] - set(FIELDS["guest"])) | more.get("guest", frozenset()), (), MARKERS,
                          FIELDS["guest"]))


def judge_and_write(a: Any, out: str, outputs: tuple[str, ...] | None = None, progress: Step | None = None,
                    rows: tuple[Any, dict[str, Any]] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The verdict of ``a`` (:func:`verdict_of`), then its outputs in ``out`` (``tsalign.align.merge.write_timeline``
    with ``outputs``, then verdict.json). One after the other: judged beside the outputs (threads), the 2.4 M-event
    benchmark pair took 0.5 s less but peaked ~100 MiB higher. Returns (verdict, paths of the files written).
    ``progress``: told as the verdict and the outputs start (:mod:`tsalign.progress`). ``rows``: the rows the
    timeline's files hold and what chose them (:func:`tsalign.align.selection.selected_rows`; the verdict judges every
    row and records the choice as ``timeline_selection``)."""
    if progress:
        progress(f"merged {len(a.columns):,} events; judging the alignment by its evidence")
    verdict = verdict_of(a)
    release_freed_memory()  # the evidence's temporaries, before the outputs'
    if progress:
        progress(f"verdict {verdict['verdict']} ({verdict['brackets']['checked']:,} evidence items checked); "
                 f"writing the outputs in {out}")
    if rows is not None:
        verdict["timeline_selection"] = rows[1]
        if "note" in rows[1]:
            verdict.setdefault("notes", []).append(rows[1]["note"])
    paths, notes = write_timeline(a, out, outputs, rows[0] if rows is not None else None)
    if notes:
        verdict.setdefault("notes", []).extend(notes)
    return verdict, write_verdict(verdict, paths, out)
