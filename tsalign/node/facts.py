"""Identity and clock facts of this node, recorded in every capture bundle."""

from __future__ import annotations

import socket
from typing import Any

from . import dmesg
from .fs import Root

__all__ = ["node_facts"]


def node_facts(root: Root) -> dict[str, Any]:
    """hostname, kernel, boot_id, product_uuid (a VM's libvirt uuid), tsc_khz, clocksource, cmdline,
    sched_clock (from the kernel log: "kvm-clock" or None when the log does not say), kvm_sched_clock_offset_ns
    (a kvm-clock guest's sched_clock() = kvmclock ns minus this; from the kernel log, else None),
    sched_clock_stable (the kernel marked it stable: local_clock() = sched_clock() + a constant; None: unknown)."""
    log = dmesg.read_kernel_log(root)

    def rd(p: str) -> Any:
        v = root.read(p)
        return v.strip() if v else None

    return {
        "hostname": socket.gethostname() if root.is_live else rd("/etc/hostname"),
        "kernel": rd("/proc/sys/kernel/osrelease"),
        "boot_id": rd("/proc/sys/kernel/random/boot_id"),
        "product_uuid": rd("/sys/class/dmi/id/product_uuid"),
        "tsc_khz": dmesg.tsc_khz_from_log(log) if log else None,
        "clocksource": rd("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "cmdline": rd("/proc/cmdline"),
        "sched_clock": (dmesg.sched_clock_from_log(log) if log else None)
        or ("tsc" if "no-kvmclock" in (rd("/proc/cmdline") or "") else None),
        "kvm_sched_clock_offset_ns": dmesg.kvm_sched_offset_from_log(log) if log else None,
        "sched_clock_stable": dmesg.sched_clock_stable_from_log(log) if log else None,
    }
