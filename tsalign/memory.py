"""How much memory an alignment will need, and how much this process may use.

An alignment holds its trace in memory (``docs/architecture.md``, "Memory of an alignment"): measured on this
project's benchmark pairs, up to ~290 MiB of runtime (the shipped selftest capture, 3.5 k events, peaks at 285 MiB
with every output) and ~100-115 bytes an event more at the peak (5.1 M events: 817 MiB; 56 M: 6.1 GiB). Before
the events are read, their number is only known from the inputs' sizes; the estimate takes each input's densest
known encoding, so it errs high:

- a trace-cmd .dat of format 7 (compressed: the micro-VM's zstd pages hold an event in ~6.3 bytes): 6 bytes an
  event; of format 6 (uncompressed, 16-40 bytes an event): 16;
- text (ftrace, trace-cmd report, perf script, a bundle's per-CPU files and events.jsonl): 60 bytes a line (the
  benchmark's guest text: 69).

What the process may use: the kernel's MemAvailable, and where the process's memory cgroup (v2 ``memory.max`` -
``memory.current``, v1 ``memory.limit_in_bytes`` - ``memory.usage_in_bytes``, each plus the inactive file pages it
counts) or one above it leaves less, that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BYTES_PER_EVENT", "RUNTIME_BYTES", "Estimate", "available_bytes", "cgroup_room", "estimate_alignment",
           "events_in", "meminfo_available"]

#: the alignment's resident memory with next to no event (numpy, pyarrow, numba, the compiled loops, the writers)
RUNTIME_BYTES = 300 << 20
#: bytes an event at the alignment's peak (both sides read, merged, the verdict's temporaries)
BYTES_PER_EVENT = 120
#: input bytes an event, per encoding: the densest measured (so events are over-counted, not under)
DAT_V7_BYTES, DAT_V6_BYTES, TEXT_BYTES = 6, 16, 60
_DAT_MAGIC = b"\x17\x08\x44tracing"


@dataclass(frozen=True)
class Estimate:
    """An alignment's inputs as events (an upper estimate) and the peak memory they need (bytes)."""

    events: int
    bytes: int


def events_in(path: str) -> int:
    """An upper estimate of the events in ``path`` (a trace file or a bundle directory) from its size; 0 where it
    cannot be read (the alignment itself then says what is wrong with it)."""
    if os.path.isdir(path):  # a bundle: the data files its manifest lists (Bundle.open checks it)
        from .errors import InvalidParameter
        from .traces.bundle import Bundle
        from .traces.manifest import check_data_file

        try:
            b = Bundle.open(path)
            return sum(events_in(check_data_file(path, n)) for n in b.manifest.get("data", {}).get("files", []))
        except InvalidParameter:
            return 0
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(len(_DAT_MAGIC) + 1)
    except OSError:
        return 0
    if head.startswith(_DAT_MAGIC):
        return size // (DAT_V6_BYTES if head[len(_DAT_MAGIC):] == b"6" else DAT_V7_BYTES)
    return size // TEXT_BYTES


def estimate_alignment(host: str, guest: str) -> Estimate:
    """The memory ``tsalign align --host HOST --guest GUEST`` needs at its peak (an upper estimate)."""
    n = events_in(host) + events_in(guest)
    return Estimate(n, RUNTIME_BYTES + BYTES_PER_EVENT * n)


def meminfo_available(text: str) -> int | None:
    """MemAvailable of a /proc/meminfo text, in bytes (None where it is not given)."""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def cgroup_room(proc_cgroup: str, root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes the memory cgroup of a process (its /proc/PID/cgroup text) still allows, the tightest of it and its
    ancestors (v2: ``memory.max`` - ``memory.current``; v1: ``memory.limit_in_bytes`` - ``memory.usage_in_bytes``);
    None where none sets a limit or none can be read."""
    rooms: list[int] = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # v2: the unified hierarchy
            base, limit, usage = Path(root), "memory.max", "memory.current"
            if (base / "unified").is_dir() and not (base / "cgroup.controllers").exists():
                base = base / "unified"  # (a hybrid host mounts v2 there)
        elif "memory" in controllers.split(","):
            base, limit, usage = Path(root) / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        d = base / rel.lstrip("/")
        while True:
            room = _room(d / limit, d / usage, d / "memory.stat")
            if room is not None:
                rooms.append(room)
            if d == base or base not in d.parents:
                break
            d = d.parent
    return min(rooms) if rooms else None


def _room(limit: Path, usage: Path, stat: Path) -> int | None:
    """``limit`` - ``usage`` of one cgroup, plus the inactive file pages its usage counts (the kernel reclaims
    those before it kills: ``memory.stat``'s ``inactive_file``, v1's ``total_inactive_file``); None without a limit
    ("max", or v1's near-2^63 "no limit")."""
    try:
        lim, used = limit.read_text().strip(), usage.read_text().strip()
    except OSError:
        return None
    if not lim.isdigit() or not used.isdigit() or int(lim) >= 1 << 62:
        return None
    cache = 0
    try:
        for line in stat.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k in ("inactive_file", "total_inactive_file") and v.strip().isdigit():
                cache = max(cache, int(v))
    except OSError:
        pass
    return max(0, int(lim) - int(used) + min(cache, int(used)))


def available_bytes() -> int | None:
    """Bytes this process may still use: MemAvailable, or less where its memory cgroup says so (None where neither
    can be read)."""
    found: list[int] = []
    for path, parse in (("/proc/meminfo", meminfo_available), ("/proc/self/cgroup", cgroup_room)):
        try:
            with open(path) as f:
                v = parse(f.read())
        except OSError:
            continue
        if v is not None:
            found.append(v)
    return min(found) if found else None
