"""Measure pairs (ns clock, TSC bracket) on this machine for ``tsalign calibrate`` (math:
:mod:`tsalign.clock.calib`).

Four private tracefs instances record the same tracepoint hits — this process's ``getppid`` system
calls (``raw_syscalls:sys_enter`` filtered by pid and syscall number) — each with its own trace clock,
created in the order x86-tsc, local, perf, x86-tsc. A tracepoint hit is written into every instance
in turn, each reading its own clock, so the ns clocks' readings lie between the two TSC readings of
the same hit: a bracket about as wide as writing one event. The binary buffers are read
(``per_cpu/cpuN/trace_pipe_raw``: the text prints ``local`` in microseconds). The measuring thread is
pinned to one CPU, so every instance holds the hits of that CPU in the same order.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import InvalidParameter, Unavailable
from ..traces.eventformat import parse_header_page
from ..traces.rawpage import page_timestamps
from .tracefs import TraceSession

__all__ = ["CLOCKS", "PAIRS_FORMAT", "load_pairs", "measure", "save_pairs"]

#: the ns clocks calibrated: ftrace/sched_clock ``local`` and perf's local_clock
CLOCKS = ("local", "perf")
_GETPPID = 110  # x86-64 syscall number
_EVENT = "raw_syscalls:sys_enter"


def _read_raw(session: TraceSession, cpu: int) -> tuple[list[int], int]:
    """Timestamps (raw clock units) of the events in CPU ``cpu``'s buffer, and the lost-page count."""
    with open(os.path.join(session.path, "events", "header_page"), encoding="utf-8") as f:
        hp = parse_header_page(f.read(), f"{session.path}/events/header_page")
    page = os.sysconf("SC_PAGE_SIZE")
    chunks = []
    path = os.path.join(session.path, "per_cpu", f"cpu{cpu}", "trace_pipe_raw")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                b = os.read(fd, page)
            except BlockingIOError:
                break
            if not b:
                break
            chunks.append(b.ljust(page, b"\0"))
    finally:
        os.close(fd)
    try:
        return page_timestamps(b"".join(chunks), page, hp.data_offset, hp.commit_size, path)
    except InvalidParameter as e:
        raise Unavailable(f"a ring-buffer page tsalign cannot walk: {e}") from None


def measure(pairs: int = 20_000, seconds: float = 2.0, cpu: int | None = None) -> dict[str, Any]:
    """``pairs`` tracepoint hits spread over ``seconds``: {"ns": {clock: list of ns}, "lo", "hi" (TSC brackets,
    cycles), "cpu", "hits", "bracket_order"} — lo/hi are the two x86-tsc instances' readings, in whichever order
    the kernel wrote them. Standard library only (a guest's node code measures; the fit may run elsewhere)."""
    if not 16 <= pairs <= 2_000_000:
        raise InvalidParameter("--pairs", pairs, "16 to 2000000 hits")
    if not 0 < seconds <= 3600:
        raise InvalidParameter("--seconds", seconds, "a duration from 0 to 3600 seconds")
    old = os.sched_getaffinity(0)
    cpu = min(old) if cpu is None else cpu
    if cpu not in old:
        raise InvalidParameter("--cpu", cpu, f"a CPU this process may run on ({sorted(old)})")
    # each instance's buffer must hold every hit (raw_syscalls:sys_enter: 8 + 56 bytes + header per hit)
    buffer_kb = max(1024, pairs * 80 // 1024 + 256)
    sessions = [TraceSession([], clock=c, buffer_kb=buffer_kb) for c in ("x86-tsc", *CLOCKS, "x86-tsc")]
    try:
        for s in sessions:
            s.open()
            system, _, name = _EVENT.partition(":")
            ev = os.path.join(s.path, "events", system, name)
            if not os.path.isdir(ev):
                raise Unavailable(f"{_EVENT} is not an event of this kernel: calibration needs it (CONFIG_FTRACE_SYSCALLS)")
            with open(os.path.join(ev, "filter"), "w", encoding="utf-8") as f:
                f.write(f"common_pid == {os.getpid()} && id == {_GETPPID}")
            with open(os.path.join(ev, "enable"), "w", encoding="utf-8") as f:
                f.write("1")
        os.sched_setaffinity(0, {cpu})
        for s in sessions:
            s.start()
        bursts = max(1, min(200, pairs // 100))
        per = pairs // bursts
        gap = seconds / bursts
        getppid = os.getppid
        t0 = time.monotonic()
        for b in range(bursts):
            for _ in range(per if b < bursts - 1 else pairs - per * (bursts - 1)):
                getppid()
            left = t0 + gap * (b + 1) - time.monotonic()
            if left > 0:
                time.sleep(left)
        for s in sessions:
            s.stop()
        got = [_read_raw(s, cpu) for s in sessions]
    finally:
        os.sched_setaffinity(0, old)
        for s in sessions:
            s.close()
    counts = [len(ts) for ts, _ in got]
    if len(set(counts)) != 1 or any(lost for _, lost in got) or counts[0] == 0:
        raise Unavailable(f"the instances recorded {counts} hits (lost pages {[lost for _, lost in got]}), not the same "
                          f"{pairs}: another tracer filled the buffers? retry with fewer --pairs")
    t1, t2 = got[0][0], got[-1][0]
    first = sum(1 for a, b in zip(t1, t2) if a <= b)
    lo, hi = [min(a, b) for a, b in zip(t1, t2)], [max(a, b) for a, b in zip(t1, t2)]
    return {"ns": {c: got[1 + i][0] for i, c in enumerate(CLOCKS)}, "lo": lo, "hi": hi, "cpu": cpu,
            "hits": counts[0], "bracket_order": "created order" if first * 2 >= counts[0] else "reverse order"}


#: a file of measured pairs (``tsalign calibrate --pairs-out``), fitted elsewhere (``--from-pairs``)
PAIRS_FORMAT = "tsalign-calibration-pairs"
_MAX_PAIRS_BYTES = 256 << 20


def save_pairs(path: str, m: dict[str, Any], facts: dict[str, Any], seconds: float) -> None:
    """Write a measurement (:func:`measure`) and the node facts a fit needs (tsc_khz, boot_id) to ``path``."""
    from ..jsonfile import save_json

    save_json(path, {"format": PAIRS_FORMAT, "version": 1, "tsc_khz": facts.get("tsc_khz"),
                     "boot_id": facts.get("boot_id"),
                     "measured": {"hits": m["hits"], "cpu": m["cpu"], "seconds": seconds,
                                  "bracket_order": m["bracket_order"], "clocksource": facts.get("clocksource"),
                                  "sched_clock": facts.get("sched_clock"),
                                  "sched_clock_stable": facts.get("sched_clock_stable")},
                     "ns": m["ns"], "lo": m["lo"], "hi": m["hi"]}, "--pairs-out")


def load_pairs(path: str) -> dict[str, Any]:
    """A pairs file back as :func:`measure` returned it, plus ``tsc_khz``, ``boot_id`` and ``measured``; every
    field checked (counts equal, 16 to 2000000 pairs, u64 integers, lo <= hi)."""
    from ..jsonfile import load_json

    doc = load_json(path, "--from-pairs", "a pairs file (tsalign calibrate --pairs-out FILE)", _MAX_PAIRS_BYTES)
    if not isinstance(doc, dict) or doc.get("format") != PAIRS_FORMAT or doc.get("version") != 1:
        raise InvalidParameter("--from-pairs", path, "a tsalign pairs file (tsalign calibrate --pairs-out FILE)")
    ns, lo, hi = doc.get("ns"), doc.get("lo"), doc.get("hi")
    if not isinstance(ns, dict) or set(ns) != set(CLOCKS):
        raise InvalidParameter("--from-pairs", path, f"ns stamps of the clocks {', '.join(CLOCKS)}")
    cols = [lo, hi, *(ns[c] for c in CLOCKS)]
    if not isinstance(lo, list) or not isinstance(hi, list) or not all(isinstance(c, list) for c in cols) \
            or len({len(c) for c in cols}) != 1 or not 16 <= len(lo) <= 2_000_000:
        raise InvalidParameter("--from-pairs", path, "lo, hi and every clock's ns: lists of one length, 16 to "
                               "2000000 pairs")
    if not all(type(v) is int and 0 <= v < 1 << 64 for c in cols for v in c):
        raise InvalidParameter("--from-pairs", path, "unsigned 64-bit integers (cycles, ns)")
    if any(a > b for a, b in zip(lo, hi)):
        raise InvalidParameter("--from-pairs", path, "brackets with lo <= hi")
    khz, boot, measured = doc.get("tsc_khz"), doc.get("boot_id"), doc.get("measured")
    if not (khz is None or (type(khz) is int and 0 < khz < 1 << 32)) or not (boot is None or isinstance(boot, str)) \
            or not isinstance(measured, dict):
        raise InvalidParameter("--from-pairs", path, "tsc_khz a positive integer or null, boot_id a string or null, "
                               "measured an object")
    return {"ns": ns, "lo": lo, "hi": hi, "hits": len(lo), "tsc_khz": khz, "boot_id": boot,
            "measured": {str(k)[:40]: v for k, v in list(measured.items())[:20] if isinstance(v, (str, int, float))
                         or v is None}}
