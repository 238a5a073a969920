"""Each vCPU's arch.tsc_offset read from kernel memory with drgn (a third source beside debugfs
and the kprobe). Needs /proc/kcore and the ``drgn`` package; imported only when both may work."""

from __future__ import annotations

from typing import Any

import drgn  # type: ignore[import-not-found]
from drgn.helpers.linux.list import list_for_each_entry  # type: ignore[import-not-found]
from drgn.helpers.linux.xarray import xa_for_each  # type: ignore[import-not-found]

__all__ = ["read_tsc_offsets"]


def read_tsc_offsets() -> list[dict[str, Any]]:
    """[{pid, vcpu, tsc_offset (signed cycles)}] for every VM on kvm's vm_list."""
    prog = drgn.program_from_kernel()
    out = []
    for kvm in list_for_each_entry("struct kvm", prog["vm_list"].address_of_(), "vm_list"):
        pid = int(kvm.userspace_pid) if hasattr(kvm, "userspace_pid") else None
        for _index, entry in xa_for_each(kvm.vcpu_array.address_of_()):
            vcpu = drgn.cast("struct kvm_vcpu *", entry)
            off = int(vcpu.arch.tsc_offset)
            out.append({"pid": pid, "vcpu": int(vcpu.vcpu_id), "tsc_offset": off - (1 << 64) if off >> 63 else off})
    return out
