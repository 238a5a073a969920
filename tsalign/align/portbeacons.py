"""The guest TSC offset of an emulated VM, measured from port beacons (:mod:`tsalign.node.beacon`).

Guest: ``tsalign_beacon seq=N before=T1 after=T2`` marker lines (guest TSC). Host: the one-byte
``write``/``writev`` system calls the VMM made for them on the port's chardev (``syscalls:sys_enter_write``,
``sys_enter_writev`` of the VM's vCPU threads, host TSC H). Paired in order on the port's file descriptor: ``T1 - H <= offset <= T2 - H`` for every
pair; the intersection of all intervals is the answer (its width is the uncertainty).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..catalogue import PORT_WRITE_CALLS
from ..errors import InconsistentData, InvalidParameter
from ..numbers import MASK64
from .brackets import signed_diff

__all__ = ["BeaconOffset", "beacon_fd", "guest_beacons", "host_port_write_threads", "host_port_writes", "measure"]

_BEACON = re.compile(r"tsalign_beacon seq=(\d+) before=(\d+) after=(\d+)")
_FD = re.compile(r"\(fd: (0x[0-9a-f]+|\d+),")  # hex before 6.x, decimal after
#: how a VMM may write one byte to a chardev (QEMU's file chardev uses writev)
WRITE_CALLS = PORT_WRITE_CALLS


@dataclass(frozen=True)
class BeaconOffset:
    """Offset interval [lo, hi] (signed cycles) from ``pairs`` beacons; ``offset`` is its midpoint (u64)."""

    lo: int
    hi: int
    pairs: int
    fd: int

    @property
    def offset(self) -> int:
        return (self.lo + (self.hi - self.lo) // 2) & MASK64

    def to_dict(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "width_cycles": self.hi - self.lo, "pairs": self.pairs, "fd": self.fd,
                "offset": self.offset, "source": "port beacons"}


def guest_beacons(records: Iterable[Any]) -> list[tuple[int, int, int]]:
    """(seq, before, after) from guest records (``tracing_mark_write`` payloads), in seq order."""
    out = []
    for r in records:
        m = _BEACON.search(r.payload) if r.payload else None  # (None: a payload left in a spill, not a marker's)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return sorted(set(out))


def host_port_write_threads(records: Iterable[Any], vcpu_tids: set[int]) -> dict[int, list[tuple[int, int]]]:
    """fd -> (host TSC, thread id) of write system calls made by vCPU threads, in record order."""
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for r in records:
        if r.pid in vcpu_tids and r.event.split(":")[-1] in WRITE_CALLS:
            m = _FD.search(r.payload)
            if m:
                out[int(m.group(1), 0)].append((r.ts, r.pid))
    return out


def host_port_writes(records: Iterable[Any], vcpu_tids: set[int]) -> dict[int, list[int]]:
    """fd -> host TSCs of write system calls made by vCPU threads."""
    return {fd: [t for t, _ in w] for fd, w in host_port_write_threads(records, vcpu_tids).items()}


def beacon_fd(beacons: list[tuple[int, int, int]], writes: dict[int, list[Any]]) -> int:
    """The one fd that saw exactly as many writes as there are beacons (the beacon port's chardev); where several
    did (another chardev or a log written as often, seen in a TCG guest under load), the one whose writes pair with
    the beacons consistently — a single offset fits every beacon's bracket — if exactly one does (no offset is
    assumed: the pairing's own consistency decides)."""
    if not beacons:
        raise InvalidParameter("guest bundle", "(no tsalign_beacon markers)",
                               "beacons sent during the guest capture: run `tsalign beacons --port 0x2f8` in the guest "
                               "while `tsalign capture --role guest` runs")
    fds = [fd for fd, ts in writes.items() if len(ts) == len(beacons)]
    if len(fds) > 1:
        fds = [fd for fd in fds if _pairs_consistently(beacons, writes[fd])] or fds
    if len(fds) != 1:
        seen = {fd: len(ts) for fd, ts in writes.items()}
        raise InvalidParameter(
            "host bundle", f"writes by vCPU threads per fd {seen}",
            f"exactly one fd with {len(beacons)} writes (the beacon port's chardev): capture the host with "
            "--events ...,syscalls:sys_enter_write,syscalls:sys_enter_writev and give the port a chardev of its "
            "own (qemu -serial file:...)")
    return fds[0]


def _pairs_consistently(beacons: list[tuple[int, int, int]], writes: list[Any]) -> bool:
    """Whether the writes (host TSCs, or (host TSC, thread) pairs), in time order, paired with the beacons in seq
    order leave some offset inside every beacon's [before - write, after - write] bracket."""
    hs = sorted(w[0] if isinstance(w, tuple) else w for w in writes)
    lo = max(signed_diff(b, h) for (_, b, _), h in zip(beacons, hs))
    hi = min(signed_diff(a, h) for (_, _, a), h in zip(beacons, hs))
    return lo <= hi


def measure(beacons: list[tuple[int, int, int]], writes: dict[int, list[int]]) -> BeaconOffset:
    """Pair beacons with the writes on the fd that saw exactly that many; intersect the brackets."""
    fd = beacon_fd(beacons, writes)
    hs = sorted(writes[fd])
    lo = max(signed_diff(b, h) for (_, b, _), h in zip(beacons, hs))
    hi = min(signed_diff(a, h) for (_, _, a), h in zip(beacons, hs))
    if lo > hi:
        raise InconsistentData(f"port beacons disagree: the offset would be >= {lo} and <= {hi} cycles; "
                               "beacons and host writes are not paired correctly (lost writes?)")
    return BeaconOffset(lo, hi, len(beacons), fd)
