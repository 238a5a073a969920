"""tsalign's own minimal KVM guest, driven by /dev/kvm ioctls (standard library only).

A real-mode guest that loops emitting *TSC beacons* (``rdtsc``; ``wrmsr`` of that value to
IA32_TSC_DEADLINE; ``out 0x10, eax``; ``out 0x11, edx``)
and has an interrupt handler (IRQ 1 through the in-kernel PIC) that records its own TSC the same
way on ports 0x12/0x13. Every ``out`` exits to this process (KVM_EXIT_IO) and the host kernel emits
``kvm:kvm_pio`` with the value, so host trace events can be matched to the guest TSC they carry.

Used by the selftest, the tests and the VM discovery tests. The guest code is assembled here by
hand (each instruction's bytes are commented).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass, field

from ..errors import Unavailable

__all__ = ["BEACON_PORT_LO", "GUEST_IRQ", "IRQ_INTERVAL_S", "IRQ_PORT_LO", "MSR_BEACON", "RUN_TIMEOUT_S", "Beacon",
           "MicroVM", "RunResult"]

#: seconds between the interrupts :meth:`MicroVM.run` raises, at the least, and after which it gives up
IRQ_INTERVAL_S = 0.002
RUN_TIMEOUT_S = 60.0

KVMIO = 0xAE
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_CREATE_IRQCHIP = 0xAE60
KVM_IRQ_LINE = 0x4008AE61
KVM_RUN = 0xAE80
KVM_GET_REGS = 0x8090AE81
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_SET_DEVICE_ATTR = 0x4018AEE1
KVM_SET_MSRS = 0x4008AE89
MSR_KVM_SYSTEM_TIME_NEW = 0x4B564D01
KVM_GET_TSC_KHZ = 0xAEA3
KVM_VCPU_TSC_CTRL = 0
KVM_VCPU_TSC_OFFSET = 0

KVM_EXIT_IO = 2
KVM_EXIT_INTR = 10
_EXIT_NAMES = {5: "HLT", 6: "MMIO", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 17: "INTERNAL_ERROR"}

BEACON_PORT_LO, BEACON_PORT_HI = 0x10, 0x11
IRQ_PORT_LO, IRQ_PORT_HI = 0x12, 0x13
#: every beacon's TSC is also written to this MSR before it is sent (IA32_TSC_DEADLINE: intercepted by
#: KVM everywhere, ignored while the local APIC timer is not in TSC-deadline mode, which it never is here)
MSR_BEACON = 0x6E0
GUEST_IRQ = 1  # ISA IRQ line raised with KVM_IRQ_LINE; PIC vector base 0x20 -> vector 0x21

MEM_SIZE = 0x10000
CODE_ADDR = 0x1000
HANDLER_ADDR = 0x2000
STACK_TOP = 0x8000
PVCLOCK_ADDR = 0x3000  # struct pvclock_vcpu_time_info of vCPU 0 (32 bytes), when kvm-clock is enabled


def _guest_code() -> bytes:
    pic_init = bytes([
        0xB0, 0x11, 0xE6, 0x20,  # mov al,0x11 ; out 0x20,al   ICW1: edge, cascade, ICW4
        0xB0, 0x20, 0xE6, 0x21,  # mov al,0x20 ; out 0x21,al   ICW2: vector base 0x20
        0xB0, 0x04, 0xE6, 0x21,  # mov al,0x04 ; out 0x21,al   ICW3: slave on IRQ2
        0xB0, 0x01, 0xE6, 0x21,  # mov al,0x01 ; out 0x21,al   ICW4: 8086 mode
        0xB0, 0xFD, 0xE6, 0x21,  # mov al,0xfd ; out 0x21,al   OCW1: unmask IRQ1 only
        0xFB,                    # sti
    ])
    loop = bytes([
        0x0F, 0x31,                    # rdtsc
        0x66, 0xB9, *MSR_BEACON.to_bytes(4, "little"),  # mov ecx, MSR_BEACON
        0x0F, 0x30,                    # wrmsr  (edx:eax = the TSC just read; KVM traces kvm_msr)
        0x66, 0xE7, BEACON_PORT_LO,    # out 0x10, eax
        0x66, 0x89, 0xD0,              # mov eax, edx
        0x66, 0xE7, BEACON_PORT_HI,    # out 0x11, eax
    ])
    jmp = bytes([0xEB, (-(len(loop) + 2)) & 0xFF])  # jmp loop
    return pic_init + loop + jmp


def _handler_code() -> bytes:
    return bytes([
        0x66, 0x50,                # push eax
        0x66, 0x52,                # push edx
        0x0F, 0x31,                # rdtsc
        0x66, 0xE7, IRQ_PORT_LO,   # out 0x12, eax
        0x66, 0x89, 0xD0,          # mov eax, edx
        0x66, 0xE7, IRQ_PORT_HI,   # out 0x13, eax
        0xB0, 0x20, 0xE6, 0x20,    # mov al,0x20 ; out 0x20,al   EOI
        0x66, 0x5A,                # pop edx
        0x66, 0x58,                # pop eax
        0xCF,                      # iret
    ])


@dataclass(frozen=True)
class Beacon:
    """One TSC value the guest read (cycles) and the order it arrived in; with kvm-clock enabled, the
    guest's pvclock record as it was in guest memory then (version, tsc_timestamp, system_time,
    tsc_to_system_mul, tsc_shift, flags): what a kvm-clock guest reads to turn that TSC into ns."""

    seq: int
    guest_tsc: int
    irq: bool = False
    pvclock: tuple[int, int, int, int, int, int] | None = None


@dataclass
class RunResult:
    """What one :meth:`MicroVM.run` saw (guest TSCs in cycles)."""

    beacons: list[Beacon] = field(default_factory=list)
    irq_beacons: list[Beacon] = field(default_factory=list)
    irqs_raised: int = 0
    exits: int = 0
    wall_s: float = 0.0


class MicroVM:
    """One VM with one vCPU (id 0), in-kernel irqchip, 64 KiB of memory, real-mode guest.

    Use as a context manager; every fd and mapping is released on exit. Raises Unavailable when
    /dev/kvm cannot be used.
    """

    def __init__(self, kvm_path: str = "/dev/kvm", irqchip: bool = True, thread_name: str = "CPU 0/KVM") -> None:
        self.thread_name = thread_name
        self.kvm_fd = self.vm_fd = self.vcpu_fd = -1
        self._mem: mmap.mmap | None = None
        self._run: mmap.mmap | None = None
        self.vcpu_tid: int | None = None
        try:
            self.kvm_fd = os.open(kvm_path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise Unavailable(f"cannot open {kvm_path}: {e.strerror}; run as root on a KVM-capable host") from None
        try:
            if fcntl.ioctl(self.kvm_fd, KVM_GET_API_VERSION) != 12:
                raise Unavailable("unexpected KVM API version (want 12)")
            self.vm_fd = fcntl.ioctl(self.kvm_fd, KVM_CREATE_VM, 0)
            self._mem = mmap.mmap(-1, MEM_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            code, handler = _guest_code(), _handler_code()
            self._mem[CODE_ADDR:CODE_ADDR + len(code)] = code
            self._mem[HANDLER_ADDR:HANDLER_ADDR + len(handler)] = handler
            vector = 0x20 + GUEST_IRQ
            self._mem[vector * 4:vector * 4 + 4] = struct.pack("<HH", HANDLER_ADDR, 0)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(self._mem))
            region = struct.pack("<IIQQQ", 0, 0, 0, MEM_SIZE, addr)
            fcntl.ioctl(self.vm_fd, KVM_SET_USER_MEMORY_REGION, region)
            if irqchip:
                fcntl.ioctl(self.vm_fd, KVM_CREATE_IRQCHIP, 0)
            self.irqchip = irqchip
            self.kvmclock = False
            self.vcpu_fd = fcntl.ioctl(self.vm_fd, KVM_CREATE_VCPU, 0)
            size = fcntl.ioctl(self.kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0)
            self._run = mmap.mmap(self.vcpu_fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._reset_registers()
        except OSError as e:
            self.close()
            raise Unavailable(f"KVM ioctl failed: {e}; /dev/kvm is present but unusable here") from None
        except BaseException:
            self.close()
            raise

    def _reset_registers(self) -> None:
        sregs = bytearray(fcntl.ioctl(self.vcpu_fd, KVM_GET_SREGS, bytes(312)))
        # cs is the first kvm_segment: base u64 @0, selector u16 @12 -> run at 0000:1000
        struct.pack_into("<Q", sregs, 0, 0)
        struct.pack_into("<H", sregs, 12, 0)
        fcntl.ioctl(self.vcpu_fd, KVM_SET_SREGS, bytes(sregs))
        regs = bytearray(144)
        struct.pack_into("<Q", regs, 6 * 8, STACK_TOP)  # rsp
        struct.pack_into("<Q", regs, 16 * 8, CODE_ADDR)  # rip
        struct.pack_into("<Q", regs, 17 * 8, 0x2)  # rflags (reserved bit 1)
        fcntl.ioctl(self.vcpu_fd, KVM_SET_REGS, bytes(regs))

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def debugfs_name(self) -> str:
        """The VM's directory name under /sys/kernel/debug/kvm/ (``<pid>-<vm fd>``)."""
        return f"{os.getpid()}-{self.vm_fd}"

    def tsc_khz(self) -> int | None:
        """The vCPU's TSC frequency in kHz as KVM reports it, None if unsupported."""
        try:
            return int(fcntl.ioctl(self.vcpu_fd, KVM_GET_TSC_KHZ, 0))
        except OSError:
            return None

    def request_tsc_offset(self, offset: int) -> str | None:
        """Ask KVM to set vCPU 0's TSC offset (KVM_VCPU_TSC_OFFSET, cycles, u64 two's complement).

        Returns None when the ioctl succeeded (which does not prove KVM applies it: check debugfs
        and the beacons), else the error text.
        """
        value = ctypes.c_uint64(offset & ((1 << 64) - 1))
        attr = struct.pack("<IIQQ", 0, KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET, ctypes.addressof(value))
        try:
            fcntl.ioctl(self.vcpu_fd, KVM_SET_DEVICE_ATTR, attr)
        except OSError as e:
            return f"KVM_SET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET): {errno.errorcode.get(e.errno or 0, e.errno)} {e.strerror}"
        return None

    def enable_kvmclock(self) -> None:
        """Give vCPU 0 a kvm-clock: MSR_KVM_SYSTEM_TIME_NEW = PVCLOCK_ADDR | enable (KVM_SET_MSRS, as a guest
        kernel's kvmclock_init writes it). KVM then keeps the pvclock record in guest memory up to date and
        traces each update (kvm:kvm_pvclock_update)."""
        msrs = struct.pack("<II", 1, 0) + struct.pack("<IIQ", MSR_KVM_SYSTEM_TIME_NEW, 0, PVCLOCK_ADDR | 1)
        try:
            done = struct.unpack_from("<I", fcntl.ioctl(self.vcpu_fd, KVM_SET_MSRS, msrs))[0]
        except OSError as e:
            raise Unavailable(f"KVM_SET_MSRS(MSR_KVM_SYSTEM_TIME_NEW): {e.strerror}") from None
        if done != 1:
            raise Unavailable("KVM refused MSR_KVM_SYSTEM_TIME_NEW (no kvm-clock for this VM)")
        self.kvmclock = True

    def pvclock_record(self) -> tuple[int, int, int, int, int, int] | None:
        """vCPU 0's pvclock record in guest memory (see :class:`Beacon`), None without kvm-clock."""
        if not self.kvmclock or self._mem is None:
            return None
        version, _, tsc_ts, system_time, mul, shift, flags, _ = struct.unpack_from("<IIQQIbBH", self._mem, PVCLOCK_ADDR)
        return version, tsc_ts, system_time, mul, shift, flags

    def raise_irq(self) -> None:
        """Pulse ISA IRQ GUEST_IRQ (edge: level 1 then 0) through the in-kernel irqchip."""
        fcntl.ioctl(self.vm_fd, KVM_IRQ_LINE, struct.pack("<II", GUEST_IRQ, 1))
        fcntl.ioctl(self.vm_fd, KVM_IRQ_LINE, struct.pack("<II", GUEST_IRQ, 0))

    def run(self, beacons: int, irqs: int = 0, irq_interval_s: float = IRQ_INTERVAL_S,
            timeout_s: float = RUN_TIMEOUT_S) -> RunResult:
        """Run the guest on the calling thread until ``beacons`` beacons arrived and every one of
        ``irqs`` interrupts (raised from a helper thread, ``irq_interval_s`` apart) was handled."""
        assert self._run is not None
        res = RunResult()
        self.vcpu_tid = threading.get_native_id()
        old_name = _get_thread_name()
        _set_thread_name(self.thread_name)
        stop = threading.Event()

        def injector() -> None:
            _set_thread_name("tsalign-irq")
            for _ in range(irqs):
                if stop.wait(irq_interval_s):
                    return
                # the previous edge must have been handled first: a second edge while the PIC still has
                # the line pending is merged into the first (seen when the vCPU thread was descheduled)
                while len(res.irq_beacons) < res.irqs_raised:
                    if stop.wait(0.0005):
                        return
                self.raise_irq()
                res.irqs_raised += 1

        t = threading.Thread(target=injector, name="tsalign-irq", daemon=True)
        if irqs:
            t.start()
        halves = {BEACON_PORT_LO: 0, IRQ_PORT_LO: 0}
        records: dict[int, tuple[int, int, int, int, int, int] | None] = {BEACON_PORT_LO: None, IRQ_PORT_LO: None}
        run = self._run
        t0 = time.monotonic()
        try:
            while len(res.beacons) < beacons or len(res.irq_beacons) < irqs:
                if time.monotonic() - t0 > timeout_s:
                    raise Unavailable(
                        f"micro-VM timed out after {timeout_s}s: {len(res.beacons)}/{beacons} beacons, "
                        f"{len(res.irq_beacons)}/{irqs} interrupts handled"
                    )
                fcntl.ioctl(self.vcpu_fd, KVM_RUN, 0)
                res.exits += 1
                reason = struct.unpack_from("<I", run, 8)[0]
                if reason == KVM_EXIT_IO:
                    _direction, size, port, _count, off = struct.unpack_from("<BBHIQ", run, 32)
                    value = int.from_bytes(run[off:off + size], "little")
                    if port in (BEACON_PORT_LO, IRQ_PORT_LO):
                        # the record in force at the guest's rdtsc is read at its first exit after it: the next
                        # KVM_RUN loads the vCPU again, and with an unstable host TSC KVM rewrites the offset and
                        # the record there
                        halves[port] = value
                        records[port] = self.pvclock_record()
                    elif port == BEACON_PORT_HI:
                        res.beacons.append(Beacon(len(res.beacons), (value << 32) | halves[BEACON_PORT_LO],
                                                  pvclock=records[BEACON_PORT_LO]))
                    elif port == IRQ_PORT_HI:
                        res.irq_beacons.append(Beacon(len(res.irq_beacons), (value << 32) | halves[IRQ_PORT_LO], True,
                                                      records[IRQ_PORT_LO]))
                elif reason == KVM_EXIT_INTR:
                    continue
                else:
                    raise Unavailable(f"micro-VM stopped with KVM exit reason {reason} ({_EXIT_NAMES.get(reason, '?')})")
        finally:
            stop.set()
            if irqs:
                t.join()
            res.wall_s = time.monotonic() - t0
            _set_thread_name(old_name)
        return res

    def close(self) -> None:
        """Release the vCPU, the VM and the memory (idempotent)."""
        for m in (self._run, self._mem):
            if m is not None:
                try:
                    m.close()
                except BufferError:
                    pass  # a ctypes view still pins it; freed with the object
        self._run = None
        for attr in ("vcpu_fd", "vm_fd", "kvm_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)

    def __enter__(self) -> MicroVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _get_thread_name() -> str:
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "python"


def _set_thread_name(name: str) -> None:
    """prctl(PR_SET_NAME) for the calling thread (QEMU names vCPU threads "CPU N/KVM")."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass
