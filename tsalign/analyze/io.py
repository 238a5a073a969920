"""Guest block IO -> host IO of the VM process -> guest completion, per request.

Guest: ``block:block_rq_issue`` and ``block:block_rq_complete`` (same device and sector). Host: the
VM process's IO system calls (``syscalls:sys_enter_*``/``sys_exit_*`` of pread/pwrite/preadv/pwritev/
io_uring_enter/fdatasync...), from threads whose TGID is the VM's pid (or whose comm is a QEMU thread).
Each host call that falls inside a request's [issue, complete] window is attributed to it (to every such
request: QEMU merges adjacent guest requests into one host call). Breakdown: guest -> host (issue to the first host call), host (first call start to last
call end), host -> guest (last end to completion).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..traces.payloads import block_rq
from .common import AnalysisResult, Needs, bare, dist

__all__ = ["HELD", "HOST_IO_CALLS", "READS", "analyze_io"]

#: system calls that count as the VM process's disk IO
HOST_IO_CALLS = ("pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "io_uring_enter", "io_submit",
                 "fdatasync", "fsync")
HOST_EVENTS = [f"syscalls:sys_{d}_{c}" for c in ("pread64", "pwrite64", "preadv", "pwritev", "io_uring_enter", "fdatasync")
               for d in ("enter", "exit")]


#: the events :func:`analyze_io` reads (with its default ``calls``), per side
READS = {"host": frozenset(f"sys_{d}_{c}" for c in HOST_IO_CALLS for d in ("enter", "exit")),
         "guest": frozenset({"block_rq_issue", "block_rq_complete"})}
#: of those, the ones whose payloads are held as a long capture is read: the host's calls are chosen by their TGID
#: and only the VM process's payloads are read back (tsalign.analyze.run)
HELD = {"host": frozenset[str](), "guest": READS["guest"]}


def _call(e: dict[str, Any]) -> tuple[str, str] | None:
    n = bare(e)
    for d in ("enter", "exit"):
        p = f"sys_{d}_"
        if n.startswith(p):
            return d, n[len(p):]
    return None


def analyze_io(events: list[dict[str, Any]], vm_pid: int | None, tsc_khz: int, exclude_tids: frozenset[int] = frozenset(),
               calls: tuple[str, ...] = HOST_IO_CALLS) -> AnalysisResult:
    """``vm_pid``: the VM process (host TGID); ``exclude_tids``: threads whose calls are not disk IO
    (e.g. the vCPU threads' own writes)."""
    res = AnalysisResult("io")
    issues = [(e, block_rq(e["payload"])) for e in events if e["side"] == "guest" and bare(e) == "block_rq_issue"]
    completes = [(e, block_rq(e["payload"])) for e in events if e["side"] == "guest" and bare(e) == "block_rq_complete"]
    host_calls = []
    for e in events:
        if e["side"] != "host":
            continue
        c = _call(e)
        if c is None or c[1] not in calls or e["pid"] in exclude_tids:
            continue
        if vm_pid is not None and e.get("tgid", -1) not in (vm_pid, -1):
            continue
        host_calls.append((e, c))
    if not issues or not completes:
        res.needs.append(Needs("guest", ["block:block_rq_issue", "block:block_rq_complete"],
                               "no guest block request issue/complete events"))
    if not host_calls:
        res.needs.append(Needs("host", HOST_EVENTS, "no host IO system calls of the VM process"))
    if res.needs:
        return res
    # guest requests: issue -> first completion of the same dev+sector after it
    pending: dict[tuple[Any, int], list[dict[str, Any]]] = defaultdict(list)
    reqs: list[dict[str, Any]] = []
    guest = sorted([(e["guest_tsc"], 0, e, f) for e, f in issues if f] + [(e["guest_tsc"], 1, e, f) for e, f in completes if f],
                   key=lambda x: (x[0], x[1]))
    unmatched_complete = 0
    for t, kind, _e, f in guest:
        key = (f["dev"], f["sector"])
        if kind == 0:
            r = {"issue": t, "complete": None, "dev": f"{f['dev'][0]},{f['dev'][1]}", "sector": f["sector"],
                 "nr_sector": f["nr"], "rwbs": f["rwbs"], "host_calls": []}
            pending[key].append(r)
            reqs.append(r)
        elif pending[key]:
            pending[key].pop(0)["complete"] = t
        else:
            unmatched_complete += 1
    done = [r for r in reqs if r["complete"] is not None]
    # host calls: enter/exit pairs per thread
    open_calls: dict[tuple[int, str], int] = {}
    spans = []
    for e, (d, name) in sorted(host_calls, key=lambda x: x[0]["guest_tsc"]):
        k = (e["pid"], name)
        if d == "enter":
            open_calls[k] = e["guest_tsc"]
        elif k in open_calls:
            spans.append((open_calls.pop(k), e["guest_tsc"], name, e["pid"]))
    unattributed = 0
    for s0, s1, name, tid in spans:
        # every request whose window holds the call: the VMM may merge adjacent guest requests into one call
        owners = [r for r in done if r["issue"] <= s0 and s1 <= r["complete"]]
        if not owners:
            unattributed += 1
        for r in owners:
            r["host_calls"].append((s0, s1, name, tid))
    g2h, host, h2g, total = [], [], [], []
    no_host = 0
    for r in done:
        r_total = r["complete"] - r["issue"]
        total.append(r_total)
        row = {k: r[k] for k in ("dev", "sector", "nr_sector", "rwbs")}
        row.update({"issue_guest_tsc": r["issue"], "complete_guest_tsc": r["complete"], "total_cycles": r_total,
                    "host_calls": len(r["host_calls"])})
        if r["host_calls"]:
            first = min(c[0] for c in r["host_calls"])
            last = max(c[1] for c in r["host_calls"])
            parts = (first - r["issue"], last - first, r["complete"] - last)
            g2h.append(parts[0])
            host.append(parts[1])
            h2g.append(parts[2])
            row.update({"guest_to_host_cycles": parts[0], "host_cycles": parts[1], "host_to_guest_cycles": parts[2],
                        "calls": sorted({c[2] for c in r["host_calls"]})})
            res.slices.append({"side": "host", "track": "io", "name": f"host IO {r['rwbs']} {r['sector']}",
                               "start": first, "end": last})
        else:
            no_host += 1
        res.rows.append(row)
        res.slices.append({"side": "guest", "track": "io", "name": f"guest rq {r['rwbs']} {r['sector']}+{r['nr_sector']}",
                           "start": r["issue"], "end": r["complete"]})
    res.summary = {
        "requests": len(reqs), "completed": len(done), "unmatched_completions": unmatched_complete,
        "with_host_io": len(done) - no_host, "without_host_io": no_host, "host_calls": len(spans),
        "host_calls_unattributed": unattributed,
        "total": dist(total, tsc_khz), "guest_to_host": dist(g2h, tsc_khz), "host": dist(host, tsc_khz),
        "host_to_guest": dist(h2g, tsc_khz),
    }
    return res
