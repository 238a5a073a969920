"""Discover the VMs on a KVM host: process, VM fd, debugfs dir, vCPUs with their host thread ids
and TSC parameters, and the libvirt name/uuid when known."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..numbers import MASK64, to_signed64
from .fs import Root
from .mounts import debugfs_dir

__all__ = ["VcpuInfo", "VmInfo", "discover_vms", "emulated_vm", "parse_qemu_cmdline"]

_VM_DIR = re.compile(r"^(\d+)-(\d+)$")
_VCPU_COMM = re.compile(r"^CPU (\d+)/KVM$")
_TCG_COMM = re.compile(r"^CPU (\d+)/TCG$")


@dataclass
class VcpuInfo:
    """One vCPU. tsc_offset is signed cycles as debugfs prints it (None: unreadable)."""

    id: int
    tid: int | None = None
    tsc_offset: int | None = None
    tsc_scaling_ratio: int | None = None
    tsc_scaling_ratio_frac_bits: int | None = None

    @property
    def tsc_offset_u64(self) -> int | None:
        return None if self.tsc_offset is None else self.tsc_offset & MASK64


@dataclass
class VmInfo:
    """One VM: owning process, VM fd, debugfs dir and vCPUs."""

    pid: int
    vm_fd: int | None
    debugfs_dir: str | None
    comm: str = ""
    name: str | None = None
    uuid: str | None = None
    vcpus: list[VcpuInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def offsets_agree(self) -> bool:
        return len({(v.tsc_offset, v.tsc_scaling_ratio) for v in self.vcpus}) <= 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for v, vd in zip(self.vcpus, d["vcpus"]):
            vd["tsc_offset_hex"] = None if v.tsc_offset is None else f"{v.tsc_offset & MASK64:#x}"
        d["offsets_agree"] = self.offsets_agree
        return d


def parse_qemu_cmdline(argv: list[str]) -> dict[str, str | None]:
    """libvirt/QEMU domain name and uuid from a qemu command line (``-name guest=N,...``, ``-uuid U``);
    also the ``--name`` of a ``tsalign microvm`` process."""
    name = uuid = None
    microvm = "microvm" in argv and any("tsalign" in a for a in argv)
    for i, a in enumerate(argv[:-1]):
        nxt = argv[i + 1]
        if a == "--name" and microvm:
            name = nxt
        elif a == "-name":
            for part in nxt.split(","):
                if part.startswith("guest="):
                    name = part[len("guest="):]
                    break
            else:
                name = nxt.split(",")[0]
        elif a == "-uuid":
            uuid = nxt
    return {"name": name, "uuid": uuid}


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _vcpu_threads(root: Root, pid: int) -> dict[int, int]:
    """vCPU id -> host thread id from thread names ``CPU N/KVM`` (QEMU's convention)."""
    out = {}
    for tid in root.listdir(f"/proc/{pid}/task"):
        m = _VCPU_COMM.match((root.read(f"/proc/{pid}/task/{tid}/comm") or "").strip())
        if m:
            out[int(m.group(1))] = int(tid)
    return out


def emulated_vm(root: Root, pid: int) -> VmInfo | None:
    """A QEMU process running its guest without KVM (TCG): vCPU threads ``CPU N/TCG``, no VM fd and no
    KVM TSC offset (the guest TSC is the host TSC plus QEMU's own offset; measure it with beacons)."""
    vcpus = []
    for tid in root.listdir(f"/proc/{pid}/task"):
        m = _TCG_COMM.match((root.read(f"/proc/{pid}/task/{tid}/comm") or "").strip())
        if m:
            vcpus.append(VcpuInfo(id=int(m.group(1)), tid=int(tid)))
    if not vcpus:
        return None
    vm = VmInfo(pid=pid, vm_fd=None, debugfs_dir=None, vcpus=sorted(vcpus, key=lambda v: v.id))
    _enrich(root, vm)
    vm.notes.append("emulated (TCG) VM: no KVM TSC offset exists; align with --guest-offset measured by beacons")
    return vm


def _vm_fds(root: Root, pid: int) -> list[int]:
    """fds of ``pid`` that are KVM VMs (anon_inode:kvm-vm), via /proc/PID/fd links."""
    import os

    out = []
    for fd in root.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(root.join(f"/proc/{pid}/fd/{fd}")) == "anon_inode:kvm-vm":
                out.append(int(fd))
        except OSError:
            continue
    return out


def _enrich(root: Root, vm: VmInfo) -> None:
    raw = root.read(f"/proc/{vm.pid}/cmdline")
    argv = raw.split("\0") if raw else []
    vm.comm = (root.read(f"/proc/{vm.pid}/comm") or "").strip()
    meta = parse_qemu_cmdline(argv)
    vm.name, vm.uuid = meta["name"], meta["uuid"]
    if vm.uuid and vm.name is None:
        vm.name = _libvirt_name(vm.uuid)
    threads = _vcpu_threads(root, vm.pid)
    for v in vm.vcpus:
        if v.tid is None:
            v.tid = threads.get(v.id)


def _libvirt_name(uuid: str) -> str | None:
    """Name of the libvirt domain with ``uuid`` (libvirt-python when installed, else None)."""
    try:
        import libvirt  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        conn = libvirt.openReadOnly("qemu:///system")
        try:
            return str(conn.lookupByUUIDString(uuid).name())
        finally:
            conn.close()
    except libvirt.libvirtError:
        return None


def discover_vms(root: Root, pid: int | None = None) -> list[VmInfo]:
    """Every VM on the host (or those of ``pid``), from debugfs kvm/<pid>-<fd>/ when mounted,
    else from /proc/*/fd (then without offsets, with a note saying why)."""
    vms: list[VmInfo] = []
    dbg = debugfs_dir(root)
    kvm_dir = f"{dbg}/kvm" if dbg else None
    if kvm_dir and root.exists(kvm_dir):
        for entry in root.listdir(kvm_dir):
            m = _VM_DIR.match(entry)
            if not m or (pid is not None and int(m.group(1)) != pid):
                continue
            vm_dir = f"{kvm_dir}/{entry}"
            vm = VmInfo(pid=int(m.group(1)), vm_fd=int(m.group(2)), debugfs_dir=vm_dir)
            for sub in root.listdir(vm_dir):
                if not sub.startswith("vcpu") or not sub[4:].isdigit():
                    continue
                base = f"{vm_dir}/{sub}"
                off = _int(root.read(f"{base}/tsc-offset"))
                vm.vcpus.append(VcpuInfo(
                    id=int(sub[4:]), tid=_int(root.read(f"{base}/pid")) or None,  # 0 until first KVM_RUN
                    tsc_offset=None if off is None else to_signed64(off),
                    tsc_scaling_ratio=_int(root.read(f"{base}/tsc-scaling-ratio")),
                    tsc_scaling_ratio_frac_bits=_int(root.read(f"{base}/tsc-scaling-ratio-frac-bits")),
                ))
                if off is None:
                    vm.notes.append(f"{base}/tsc-offset: {root.read_error(f'{base}/tsc-offset') or 'unparsable'}")
            vm.vcpus.sort(key=lambda v: v.id)
            vms.append(vm)
    else:
        pids = [str(pid)] if pid is not None else [p for p in root.listdir("/proc") if p.isdigit()]
        for p in pids:
            for fd in _vm_fds(root, int(p)):
                vm = VmInfo(pid=int(p), vm_fd=fd, debugfs_dir=None)
                vm.vcpus = [VcpuInfo(id=i, tid=t) for i, t in sorted(_vcpu_threads(root, int(p)).items())]
                vm.notes.append("debugfs is not mounted: no per-vCPU TSC offsets "
                                "(mount -t debugfs nodev /sys/kernel/debug, or tsalign precheck --mount)")
                vms.append(vm)
    for vm in vms:
        _enrich(root, vm)
    return vms
