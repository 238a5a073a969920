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

import numpy as np

from ..errors import InvalidParameter, Unavailable
from ..traces.eventformat import parse_header_page
from ..traces.ringbuf import walk_pages
from .tracefs import TraceSession

__all__ = ["CLOCKS", "measure"]

#: the ns clocks calibrated: ftrace/sched_clock ``local`` and perf's local_clock
CLOCKS = ("local", "perf")
_GETPPID = 110  # x86-64 syscall number
_EVENT = "raw_syscalls:sys_enter"


def _read_raw(session: TraceSession, cpu: int) -> tuple[np.ndarray, int]:
    """Timestamps (raw clock units) of the events in CPU ``cpu``'s buffer, and the lost-page count."""
    with open(os.path.join(session.path, "events", "header_page"), encoding="utf-8") as f:
        hp = parse_header_page(f.read(), f"{session.path}/events/header_page")
    page = os.sysconf("SC_PAGE_SIZE")
    chunks = []
    fd = os.open(os.path.join(session.path, "per_cpu", f"cpu{cpu}", "trace_pipe_raw"), os.O_RDONLY | os.O_NONBLOCK)
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
    raw = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    npages = len(chunks)
    cap = max(1, raw.shape[0] // 8)
    ts = np.empty(cap, dtype=np.uint64)
    off = np.empty(cap, dtype=np.int64)
    ln = np.empty(cap, dtype=np.int32)
    info = np.zeros((max(npages, 1), 4), dtype=np.int64)
    n = int(walk_pages(raw, page, hp.data_offset, hp.commit_size, ts, off, ln, info)) if npages else 0
    if npages and bool(np.any(info[:, 2])):
        raise Unavailable(f"{session.path}: a ring-buffer page tsalign cannot walk (error {int(info[:, 2].max())})")
    return ts[:n], int(info[:, 1].sum())


def measure(pairs: int = 20_000, seconds: float = 2.0, cpu: int | None = None) -> dict[str, Any]:
    """``pairs`` tracepoint hits spread over ``seconds``: {"ns": {clock: uint64 array}, "lo", "hi" (TSC brackets),
    "cpu", "bracket_order"} — lo/hi are the two x86-tsc instances' readings, in whichever order the kernel
    wrote them."""
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
    first = int(np.count_nonzero(t1 <= t2))
    lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
    return {"ns": {c: got[1 + i][0] for i, c in enumerate(CLOCKS)}, "lo": lo, "hi": hi, "cpu": cpu,
            "hits": counts[0], "bracket_order": "created order" if first * 2 >= counts[0] else "reverse order"}
