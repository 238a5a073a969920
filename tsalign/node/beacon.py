"""Guest-side TSC beacons through an I/O port, for VMs whose TSC offset is not KVM's to report (TCG).

Each beacon runs ``rdtsc; out PORT, al; rdtsc`` (x86-64 machine code in an executable mapping, port
access from ``ioperm``): the VMM handles the ``out`` — QEMU writes the byte to the port's chardev with a
host system call — between the two reads. A host capture of that call (``syscalls:sys_enter_write``
or ``sys_enter_writev`` of the vCPU thread) at host TSC H brackets the offset: ``before - H <= offset <= after - H``. Each beacon
is also written to the ``trace_marker`` of every running tsalign tracefs instance, so the guest capture
holds it: ``tsalign_beacon seq=N before=T1 after=T2``. Standard library only (runs in guests).
"""

from __future__ import annotations

import ctypes
import glob
import mmap
import os
import time
from typing import Callable

from ..errors import InvalidParameter, Unavailable

__all__ = ["Beacon", "in_vm", "send_beacons"]

# rdtsc; shl rdx,32; or rax,rdx; mov [rsi],rax; mov edx,edi; mov al,0x42; out dx,al;
# rdtsc; shl rdx,32; or rax,rdx; mov [rsi+8],rax; ret
_CODE = bytes([0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0x48, 0x89, 0x06, 0x89, 0xFA, 0xB0, 0x42, 0xEE,
               0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0x48, 0x89, 0x46, 0x08, 0xC3])
_keep: list[mmap.mmap] = []


#: (seq, before, after): guest TSC cycles read just before and just after the port write
Beacon = tuple[int, int, int]


def _function() -> Callable[[int, ctypes.Array[ctypes.c_uint64]], None]:
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(_CODE)
    _keep.append(buf)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    return ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint64))(addr)


def markers(tracefs: str = "/sys/kernel/tracing") -> list[str]:
    """trace_marker files of the running tsalign capture instances."""
    return sorted(glob.glob(os.path.join(tracefs, "instances", "tsalign-*", "trace_marker")))


def in_vm(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo text shows the ``hypervisor`` CPU flag (this kernel runs in a VM)."""
    return any(line.startswith("flags") and " hypervisor" in f" {line.split(':', 1)[-1]} " for line in cpuinfo.splitlines())


def send_beacons(port: int, count: int, interval_s: float = 0.002, tracefs: str = "/sys/kernel/tracing",
                 cpuinfo: str = "/proc/cpuinfo") -> list[Beacon]:
    """Send ``count`` beacons through I/O port ``port`` (e.g. 0x2f8, the second serial port's data register).
    Refuses on bare metal: there the port is real hardware."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            virtual = in_vm(f.read())
    except OSError:
        virtual = False
    if not virtual:
        raise Unavailable("tsalign beacons writes to an I/O port: run it inside the guest (no 'hypervisor' "
                          f"CPU flag in {cpuinfo}, so this is not a VM)")
    if not 0 < port < 0x10000:
        raise InvalidParameter("--port", port, "an x86 I/O port number (0x2f8 = COM2)")
    if count < 1:
        raise InvalidParameter("--count", count, "at least 1 beacon")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ioperm(ctypes.c_ulong(port), ctypes.c_ulong(1), ctypes.c_int(1)) != 0:
        err = ctypes.get_errno()
        raise Unavailable(f"ioperm({port:#x}) failed: {os.strerror(err)} (run as root on x86-64)")
    fn = _function()
    out = (ctypes.c_uint64 * 2)()
    files = [open(m, "w", encoding="utf-8") for m in markers(tracefs)]  # noqa: SIM115 - closed below
    beacons: list[Beacon] = []
    try:
        for seq in range(count):
            fn(port, out)
            b = (seq, int(out[0]), int(out[1]))
            beacons.append(b)
            for f in files:
                f.write(f"tsalign_beacon seq={seq} before={b[1]} after={b[2]}\n")
                f.flush()
            time.sleep(interval_s)
    finally:
        for f in files:
            f.close()
    return beacons
