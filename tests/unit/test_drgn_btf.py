"""drgn with types from the kernel's BTF (tsalign.kernel.drgnbtf), checked against pahole reading the same
BTF: every top-level member offset and the size of the structs the memory route walks (struct kvm,
kvm_vcpu and its arch, the xarray node, list heads, dentries), on this machine's kernel and on a real
Debian kernel's split kvm BTF. Reading live memory through these types is tested in the nested KVM host
(tests/integration/test_nested_kvm.py): this machine has no /proc/kcore."""

from __future__ import annotations

import glob
import os
import shutil

import pytest

from tests.conftest import need
from tests.infra import pahole

STRUCTS = ("kvm", "kvm_vcpu", "kvm_vcpu_arch", "xa_node", "xarray", "list_head", "dentry", "qstr")
CACHE = os.environ.get("TSALIGN_CACHE", "/var/cache/tsalign")


def _program(btf_path: str, base: str | None = None):
    drgn = pytest.importorskip("drgn")
    from tsalign.kernel import btf, drgnbtf

    prog = drgn.Program(drgn.host_platform)
    drgnbtf.register(prog, btf.load(btf_path, base))
    return prog


def _compare(prog, path: str, base: str | None) -> int:
    checked = 0
    for name in STRUCTS:
        want = pahole.members(path, name, base=base)
        t = prog.type(f"struct {name}")
        got = {m.name: m.bit_offset // 8 for m in t.members if m.name}
        assert t.size == want.pop("sizeof"), name
        for member, off in want.items():
            assert got[member] == off, (name, member)
            checked += 1
    return checked


def test_drgn_types_from_this_kernels_btf_equal_pahole() -> None:
    need(shutil.which("pahole"), "pahole not installed (make test installs it when root)")
    need(os.path.exists("/sys/kernel/btf/vmlinux"), "needs /sys/kernel/btf/vmlinux")
    prog = _program("/sys/kernel/btf/vmlinux")
    assert _compare(prog, "/sys/kernel/btf/vmlinux", None) > 100
    import drgn

    # nested paths, as the memory route reads them, against pahole's two-step arithmetic
    vcpu, arch = pahole.members("/sys/kernel/btf/vmlinux", "kvm_vcpu"), pahole.members("/sys/kernel/btf/vmlinux",
                                                                                       "kvm_vcpu_arch")
    t = prog.type("struct kvm_vcpu")
    assert drgn.offsetof(t, "arch.tsc_offset") == vcpu["arch"] + arch["tsc_offset"]
    assert drgn.offsetof(t, "arch.tsc_scaling_ratio") == vcpu["arch"] + arch["tsc_scaling_ratio"]
    # objects of those types read what memory holds: a vCPU laid out by hand in a memory segment
    base, off = 0xFFFF888000000000, drgn.offsetof(t, "arch.tsc_offset")
    mem = bytearray(t.size)
    mem[off:off + 8] = ((-245579389035) % (1 << 64)).to_bytes(8, "little")
    mem[drgn.offsetof(t, "vcpu_id"):drgn.offsetof(t, "vcpu_id") + 4] = (3).to_bytes(4, "little")
    prog.add_memory_segment(base, len(mem), lambda a, n, o, p: bytes(mem[o:o + n]))
    obj = drgn.Object(prog, "struct kvm_vcpu", address=base)
    assert int(obj.vcpu_id) == 3 and int(obj.arch.tsc_offset) == (-245579389035) % (1 << 64)
    # what BTF does not have is an error drgn can name, not a wrong type
    with pytest.raises(LookupError):
        prog.type("struct no_such_struct_here")


def test_drgn_types_from_a_debian_split_btf_equal_pahole() -> None:
    kvm = sorted(glob.glob(f"{CACHE}/btf-*/kvm.btf"))
    need(kvm, f"no split BTF sample in {CACHE} (make test fetches one)")
    need(shutil.which("pahole"), "pahole not installed")
    vml = os.path.join(os.path.dirname(kvm[-1]), "vmlinux.btf")
    prog = _program(kvm[-1], vml)
    assert _compare(prog, kvm[-1], vml) > 100
