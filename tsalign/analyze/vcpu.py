"""vCPU preemption on the host -> the guest task that was running on that vCPU.

For every interval a vCPU thread was switched out on the host (``sched_switch`` with prev_pid = the
vCPU thread, until the switch that runs it again), the guest task running on that vCPU at that moment
(the last guest ``sched_switch`` on guest CPU = vCPU id before it). Intervals outside the guest capture's
time span are counted, not attributed. ``prev_state`` R/R+ means the vCPU
was runnable and preempted; S/D means it blocked (guest idle in HLT, or waiting in the VMM).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

from ..clock.display import ns_or_none
from ..traces.payloads import sched_switch
from .common import AnalysisResult, Needs, bare, dist

__all__ = ["HELD", "READS", "analyze_vcpu"]


#: the events :func:`analyze_vcpu` reads, per side (and the guest capture's span: see ``guest_span``)
READS = {"host": frozenset({"sched_switch"}), "guest": frozenset({"sched_switch"})}
#: of those, the ones whose payloads are held as a long capture is read: the host's switches are chosen by their
#: pids (parsed as they are read) and only a vCPU thread's payload is read back (tsalign.analyze.run)
HELD = {"host": frozenset[str](), "guest": READS["guest"]}


def analyze_vcpu(events: list[dict[str, Any]], vcpu_tids: dict[int, int], tsc_khz: int, top: int = 10,
                 guest_span: tuple[int, int] | None = None, host_switches: int | None = None) -> AnalysisResult:
    """``vcpu_tids``: host thread id -> vCPU id (from node discovery, in the host bundle); ``guest_span``: the first
    and last guest event's guest TSC (default: of the guest events in ``events``); ``host_switches``: how many
    sched_switch the host capture holds where ``events`` holds only the vCPU threads' (default: those in it)."""
    res = AnalysisResult("vcpu")
    host_sw = [(e, sched_switch(e["payload"])) for e in events if e["side"] == "host" and bare(e) == "sched_switch"]
    guest_sw = [(e, sched_switch(e["payload"])) for e in events if e["side"] == "guest" and bare(e) == "sched_switch"]
    if not vcpu_tids:
        res.notes.append("the host bundle names no vCPU threads: capture with --vm NAME or --pid PID of the VM")
        res.needs.append(Needs("host", ["sched:sched_switch"], "no vCPU thread ids in the host bundle"))
    if not (len(host_sw) if host_switches is None else host_switches):
        res.needs.append(Needs("host", ["sched:sched_switch"], "no host sched_switch events"))
    if not guest_sw:
        res.needs.append(Needs("guest", ["sched:sched_switch"], "no guest sched_switch events"))
    if res.needs:
        return res
    # guest: per CPU, times and the task switched in
    runs: dict[int, tuple[list[int], list[tuple[str, int]]]] = defaultdict(lambda: ([], []))
    for e, s in guest_sw:
        if s is None:
            continue
        ts, who = runs[e["cpu"]]
        ts.append(e["guest_tsc"])
        who.append((s["next_comm"], s["next_pid"]))
    if guest_span is None:
        g_times = [e["guest_tsc"] for e in events if e["side"] == "guest"]
        guest_span = (min(g_times), max(g_times))
    g_first, g_last = guest_span
    outside = 0
    out_at: dict[int, tuple[int, str]] = {}
    intervals = []
    for e, s in host_sw:
        if s is None:
            continue
        t = e["guest_tsc"]
        if s["prev_pid"] in vcpu_tids:
            out_at[s["prev_pid"]] = (t, s["prev_state"])
        tid = s["next_pid"]
        if tid in vcpu_tids and tid in out_at:
            t0, state = out_at.pop(tid)
            if t0 < g_first or t > g_last:  # the guest capture did not see this moment: nothing to attribute
                outside += 1
                continue
            intervals.append((tid, t0, t, state))
    per_task: dict[str, list[int]] = defaultdict(list)
    preempted: list[int] = []
    blocked: list[int] = []
    for tid, t0, t1, state in intervals:
        vcpu = vcpu_tids[tid]
        ts, who = runs.get(vcpu, ([], []))
        i = bisect.bisect_right(ts, t0) - 1
        task = f"{who[i][0]}-{who[i][1]}" if i >= 0 else "(no guest sched_switch before)"
        is_pre = state.startswith("R")
        d = t1 - t0
        (preempted if is_pre else blocked).append(d)
        if is_pre:
            per_task[task].append(d)
        res.rows.append({"vcpu": vcpu, "tid": tid, "out_guest_tsc": t0, "in_guest_tsc": t1, "duration_cycles": d,
                         "duration_ns": ns_or_none(d, tsc_khz), "host_state": state,
                         "preempted": is_pre, "guest_task": task})
        if is_pre:
            res.slices.append({"side": "host", "track": f"vcpu{vcpu}", "name": f"preempted: {task}", "start": t0, "end": t1})
    ranking = sorted(per_task.items(), key=lambda kv: -sum(kv[1]))[:top]
    res.summary = {
        "vcpus": sorted(set(vcpu_tids.values())), "intervals": len(intervals), "outside_guest_capture": outside,
        "preempted": dist(preempted, tsc_khz), "blocked": dist(blocked, tsc_khz),
        "top_tasks": [{"task": t, "preemptions": len(v), "total_cycles": sum(v),
                       "total_ns": ns_or_none(sum(v), tsc_khz), "max_cycles": max(v),
                       "max_ns": ns_or_none(max(v), tsc_khz)}
                      for t, v in ranking],
    }
    if not intervals:
        res.notes.append("no vCPU thread was switched out and back in during the capture")
    return res
