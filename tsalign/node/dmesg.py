"""The kernel log, and the clock facts tsalign reads from it."""

from __future__ import annotations

import os
import re

from .fs import Root

__all__ = ["kvm_sched_offset_from_log", "read_kernel_log", "sched_clock_from_log", "sched_clock_stable_from_log",
           "tsc_khz_from_log"]

_REFINED = re.compile(r"tsc: Refined TSC clocksource calibration: (\d+)\.(\d{3}) MHz")
_DETECTED = re.compile(r"tsc: Detected (\d+)\.(\d{3}) MHz")
#: printed once at boot by kvm_sched_clock_init(); the value is kvm_sched_clock_offset, in ns (kvmclock at
#: boot), whatever the message says
_SCHED_OFFSET = re.compile(r"kvm-clock: using sched offset of (\d{1,20}) cycles")


def read_kernel_log(root: Root) -> str | None:
    """The kernel log: /dev/kmsg on the live machine (root only), ``/var/log/dmesg`` in a recorded
    tree (or when /dev/kmsg is unreadable). None when neither can be read."""
    if root.is_live:
        try:
            fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            fd = -1
        if fd >= 0:
            lines = []
            try:
                while True:
                    try:
                        rec = os.read(fd, 8192)
                    except BlockingIOError:
                        break
                    except OSError:  # EPIPE: a record was overwritten while reading; go on
                        continue
                    if not rec:
                        break
                    text = rec.decode("utf-8", "replace")
                    lines.append(text.split(";", 1)[-1].split("\n", 1)[0])
            finally:
                os.close(fd)
            return "\n".join(lines)
    return root.read("/var/log/dmesg")


def tsc_khz_from_log(log: str) -> int | None:
    """TSC frequency in kHz: the last refined calibration when present, else the detected one."""
    found = _REFINED.findall(log) or _DETECTED.findall(log)
    if not found:
        return None
    mhz, frac = found[-1]
    return int(mhz) * 1000 + int(frac)


def sched_clock_from_log(log: str) -> str | None:
    """``kvm-clock`` when the guest kernel put sched_clock on kvmclock ("kvm-clock: using sched
    offset of ..."), else None (the log does not say)."""
    if "kvm-clock: using sched offset" in log:
        return "kvm-clock"
    return None


def kvm_sched_offset_from_log(log: str) -> int | None:
    """The guest's ``kvm_sched_clock_offset`` in ns (sched_clock() = kvmclock ns minus it), from the line
    kvm_sched_clock_init() prints at boot ("kvm-clock: using sched offset of N cycles": N is ns); None
    when the log lacks it (a guest not on kvm-clock, or a log rotated past boot)."""
    found = _SCHED_OFFSET.findall(log)
    if not found or len(set(found)) != 1 or int(found[0]) >= 1 << 64:
        return None
    return int(found[0])


def sched_clock_stable_from_log(log: str) -> bool | None:
    """Whether the kernel marked sched_clock stable (kernel/sched/clock.c prints "sched_clock: Marking stable"
    at late init when it is, "sched_clock: Marking unstable" when a stable one is given up): the last of the two.
    A log that holds the boot ("Linux version" at its start) without either: False (cleared before late init,
    e.g. by kvm-clock without PVCLOCK_TSC_STABLE_BIT, it is never marked). Else None (a log rotated past boot).
    Where it is not stable, local_clock() -- perf's clock, ftrace's ``perf`` -- is not sched_clock() plus a
    constant but re-anchored to the timekeeping clock at every tick and held at most one tick past it."""
    marks: list[str] = re.findall(r"sched_clock: Marking (stable|unstable)", log)
    if marks:
        return marks[-1] == "stable"
    head = log.lstrip().split("\n", 1)[0]
    return False if "Linux version" in head else None
