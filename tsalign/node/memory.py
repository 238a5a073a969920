"""Each vCPU's TSC offset (and scaling ratio) read from the running kernel's memory with drgn: a third
offset source beside debugfs and the kprobe, independent of both (it reads ``struct kvm_vcpu`` itself).

Needs root, ``/proc/kcore`` and the ``drgn`` package. Types come from the kernel's own BTF
(``/sys/kernel/btf/vmlinux`` and the ``kvm`` module's split BTF) through :mod:`tsalign.kernel.drgnbtf` where it
has BTF, else from DWARF where drgn finds the kernel's debug info; kvm's ``vm_list`` and ``kvm_caps`` are
found in ``/proc/kallsyms``. VMs are named as debugfs names them (``PID-FD``, from each VM's
``debugfs_dentry``), with the owning process id (``userspace_pid``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import drgn
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.xarray import xa_for_each

from ..clock.kvm import TscParams
from ..errors import Unavailable
from ..offsets import OffsetSnapshot
from . import tsc

__all__ = ["KernelMemory", "MemoryVcpu", "kallsyms", "read_tsc_offsets"]

#: data symbol types in /proc/kallsyms
_DATA = set("dDbBrR")
#: largest error pointer value (-MAX_ERRNO)
_ERR_MIN = (1 << 64) - 4095


def kallsyms(names: set[str], path: str = "/proc/kallsyms") -> dict[str, int]:
    """Addresses of the data symbols ``names`` (first one of each name). Zero addresses (kptr_restrict,
    not root) are left out."""
    out: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] in names and parts[1] in _DATA and parts[2] not in out:
                addr = int(parts[0], 16)
                if addr:
                    out[parts[2]] = addr
    return out


@dataclass(frozen=True)
class MemoryVcpu:
    """One vCPU as kernel memory holds it: its VM (owning pid, debugfs name ``PID-FD``), its id and TSC
    parameters (offset unsigned 64-bit cycles; ratio 0 = unscaled), and the host TSCs around the read."""

    pid: int | None
    vm: str | None
    vcpu: int
    params: TscParams
    read_from: int
    read_until: int


class KernelMemory:
    """The live kernel opened with drgn (``route``: ``dwarf`` or ``btf``: where the types came from)."""

    def __init__(self, btf_dir: str = "/sys/kernel/btf", kallsyms_path: str = "/proc/kallsyms") -> None:
        if not os.path.exists("/proc/kcore"):
            raise Unavailable("no /proc/kcore (CONFIG_PROC_KCORE=n): kernel memory cannot be read; "
                              "debugfs and the kprobe are the sources")
        prog = drgn.Program()
        try:
            prog.set_kernel()
        except (PermissionError, OSError) as e:
            raise Unavailable(f"drgn cannot open the live kernel ({e}): run as root") from None
        self.prog = prog
        self.route = self._types(btf_dir)
        syms = kallsyms({"vm_list", "kvm_caps"}, kallsyms_path)
        if "vm_list" not in syms:
            raise Unavailable(f"kvm's vm_list is not in {kallsyms_path} (kvm not loaded, kernel without "
                              "CONFIG_KALLSYMS_ALL, or kptr_restrict hides addresses from this user)")
        self.vm_list = syms["vm_list"]
        self.caps = syms.get("kvm_caps")

    def _types(self, btf_dir: str) -> str:
        """Where ``struct kvm_vcpu`` comes from: BTF when the kernel has it (no file to find), else DWARF."""
        vmlinux = os.path.join(btf_dir, "vmlinux")
        if os.path.exists(vmlinux):
            from ..kernel import btf, drgnbtf

            kvm = os.path.join(btf_dir, "kvm")
            drgnbtf.register(self.prog, btf.load(kvm, vmlinux) if os.path.exists(kvm) else btf.load(vmlinux))
            route = "btf"
        else:
            try:
                self.prog.load_default_debug_info()
            except drgn.MissingDebugInfoError as e:
                raise Unavailable(f"neither BTF ({vmlinux}) nor the kernel's debug info for drgn ({e}); install the "
                                  "distribution's kernel debug package (e.g. linux-image-$(uname -r)-dbg)") from None
            route = "dwarf"
        try:
            self.prog.type("struct kvm_vcpu")
        except LookupError:
            raise Unavailable(f"struct kvm_vcpu is not in the kernel's types ({route}): is kvm loaded?") from None
        return route

    def _scaling(self) -> tuple[bool | None, int | None]:
        """(has_tsc_control, frac bits) from kvm_caps, or (None, None) where the kernel has no kvm_caps."""
        if self.caps is None:
            return None, None
        try:
            caps = drgn.Object(self.prog, "struct kvm_caps", address=self.caps)
            return bool(caps.has_tsc_control), int(caps.tsc_scaling_ratio_frac_bits)
        except (LookupError, AttributeError, drgn.FaultError):
            return None, None

    def vcpus(self) -> list[MemoryVcpu]:
        """Every vCPU of every VM on kvm's vm_list, each read between two host TSC reads."""
        scaled, frac = self._scaling()
        head = drgn.Object(self.prog, "struct list_head", address=self.vm_list)
        out: list[MemoryVcpu] = []
        for kvm in list_for_each_entry("struct kvm", head.address_of_(), "vm_list"):
            pid = _pid(kvm)
            name = _debugfs_name(kvm)
            for vcpu in _vcpus(kvm):
                t0 = tsc.rdtsc()
                off = int(vcpu.arch.tsc_offset)
                ratio = int(vcpu.arch.tsc_scaling_ratio) if hasattr(vcpu.arch, "tsc_scaling_ratio") else 0
                t1 = tsc.rdtsc()
                bits = frac if frac else 48
                # unscaled: the same parameters the other sources give (no ratio, default fraction bits)
                params = TscParams(off) if scaled is False or ratio in (0, 1 << bits) else TscParams(off, ratio, bits)
                out.append(MemoryVcpu(pid, name, int(vcpu.vcpu_id), params, t0, t1))
        return out

    def snapshots(self, pid: int | None, vm_fd: int | None) -> list[OffsetSnapshot]:
        """Offset snapshots (source ``memory``) of the VM debugfs calls ``PID-FD``; by pid alone when the VM
        has no debugfs name."""
        want = f"{pid}-{vm_fd}"
        mine = [v for v in self.vcpus() if v.vm == want or (v.vm is None and v.pid == pid)]
        return [OffsetSnapshot(v.read_from, v.vcpu, v.params, "memory", read_until=v.read_until) for v in mine]


def _pid(kvm: Any) -> int | None:
    """The VM's owning process: ``pid_t userspace_pid`` (5.x+) or a ``struct pid *`` (older)."""
    try:
        p = kvm.userspace_pid
    except AttributeError:
        return None
    if p.type_.unqualified().kind == drgn.TypeKind.POINTER:
        return int(p.numbers[0].nr) if p.value_() else None
    return int(p)


def _debugfs_name(kvm: Any) -> str | None:
    """The VM's debugfs directory name (``PID-FD``), or None without one."""
    try:
        d = kvm.debugfs_dentry
        v = d.value_()
        if not v or v >= _ERR_MIN:
            return None
        name: bytes = d.d_name.name.string_()
        return name.decode("utf-8", "replace")
    except (AttributeError, drgn.FaultError):
        return None


def _vcpus(kvm: Any) -> list[Any]:
    """The VM's ``struct kvm_vcpu *``: its vcpu_array xarray (5.17+) or its vcpus[] array (older)."""
    try:
        arr = kvm.vcpu_array
    except AttributeError:
        n = int(kvm.online_vcpus.counter)
        return [kvm.vcpus[i] for i in range(n) if kvm.vcpus[i].value_()]
    return [drgn.cast("struct kvm_vcpu *", entry) for _i, entry in xa_for_each(arr.address_of_())]


def read_tsc_offsets() -> list[dict[str, Any]]:
    """[{pid, vm, vcpu, tsc_offset (signed cycles), ratio}] of every vCPU in kernel memory, and the route."""
    mem = KernelMemory()
    return [{"pid": v.pid, "vm": v.vm, "vcpu": v.vcpu, "tsc_offset": v.params.signed_offset,
             "ratio": v.params.ratio, "route": mem.route} for v in mem.vcpus()]
