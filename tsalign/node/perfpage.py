"""Open a perf event with perf_event_open(2) through ctypes and read its mmap user page
(struct perf_event_mmap_page): the caps and time_* fields that say whether perf time converts
to TSC. x86-64 only (syscall 298)."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["UserPage", "conversion_verdict", "read_user_page"]

SYS_perf_event_open = 298
PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_TASK_CLOCK = 1
PERF_EVENT_IOC_ENABLE = 0x2400


@dataclass(frozen=True)
class UserPage:
    """The fields of perf_event_mmap_page tsalign uses (times in ns, cycles as named)."""

    version: int
    capabilities: int
    cap_user_rdpmc: bool
    cap_user_time: bool
    cap_user_time_zero: bool
    cap_user_time_short: bool
    time_shift: int
    time_mult: int
    time_offset: int
    time_zero: int
    time_cycles: int
    time_mask: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["capabilities_hex"] = f"{self.capabilities:#x}"
        return d


def parse_user_page(buf: bytes) -> UserPage:
    """Parse the first 96 bytes of a perf user page (layout of include/uapi/linux/perf_event.h)."""
    version, = struct.unpack_from("<I", buf, 0)
    caps, = struct.unpack_from("<Q", buf, 40)
    # each field at its ABI offset: pmc_width u16 @48, time_shift u16 @50, time_mult u32 @52, ...
    time_shift, = struct.unpack_from("<H", buf, 50)
    time_mult, = struct.unpack_from("<I", buf, 52)
    time_offset, = struct.unpack_from("<Q", buf, 56)
    time_zero, = struct.unpack_from("<Q", buf, 64)
    time_cycles, time_mask = struct.unpack_from("<QQ", buf, 80)
    return UserPage(
        version=version, capabilities=caps,
        cap_user_rdpmc=bool(caps >> 2 & 1), cap_user_time=bool(caps >> 3 & 1),
        cap_user_time_zero=bool(caps >> 4 & 1), cap_user_time_short=bool(caps >> 5 & 1),
        time_shift=time_shift, time_mult=time_mult, time_offset=time_offset, time_zero=time_zero,
        time_cycles=time_cycles, time_mask=time_mask,
    )


def read_user_page(run_ms: float = 2.0) -> UserPage:
    """Open a task-clock software event on this thread, let it run ``run_ms``, read its user page.

    Raises OSError when perf_event_open is refused (perf_event_paranoid, seccomp, no perf).
    """
    attr = bytearray(128)
    struct.pack_into("<IIQ", attr, 0, PERF_TYPE_SOFTWARE, 128, PERF_COUNT_SW_TASK_CLOCK)
    # flags @40: disabled(bit0) | exclude_kernel(bit5) | exclude_hv(bit6)
    struct.pack_into("<Q", attr, 40, (1 << 0) | (1 << 5) | (1 << 6))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abuf = ctypes.create_string_buffer(bytes(attr), len(attr))
    fd = libc.syscall(SYS_perf_event_open, abuf, 0, -1, -1, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"perf_event_open: {os.strerror(err)}")
    try:
        page = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        try:
            libc.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
            end = time.monotonic() + run_ms / 1000
            while time.monotonic() < end:
                pass
            time.sleep(0)  # a reschedule makes the kernel refresh the page
            return parse_user_page(page[:96])
        finally:
            page.close()
    finally:
        os.close(fd)


def conversion_verdict(p: UserPage) -> str | None:
    """None when perf time converts to TSC, else why not (in the kernel's terms)."""
    if not p.cap_user_time:
        return (f"cap_user_time=0 (time_mult={p.time_mult}): the kernel publishes no TSC->perf time mapping; "
                "sched_clock is not the TSC (in a KVM guest: sched_clock runs on kvm-clock)")
    if not p.cap_user_time_zero:
        return "cap_user_time_zero=0: no time_zero, so perf time cannot be mapped back to TSC"
    return None
