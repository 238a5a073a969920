"""The DWARF route to struct member offsets, checked against pahole (which reads DWARF itself) and BTF:

- the real debug file of a Debian kernel's kvm.ko (linux-image-REL-dbg, scripts/fetch-kvm-debuginfo.sh),
  whose BTF (scripts/fetch-split-btf.sh, the same package version) gives the same offsets;
- small C files compiled here with gcc (DWARF 4 and 5, relocatable objects): typedefs, anonymous
  unions and structs, bitfields, arrays, nesting, compared member by member with pahole;
- the numpy relocation of x86-64 RELA against pyelftools' own relocation of the same sections.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need
from tests.infra import pahole

CACHE = os.environ.get("TSALIGN_CACHE", "/var/cache/tsalign")
MEMBERS = ["arch.tsc_offset", "arch.l1_tsc_offset", "arch.tsc_scaling_ratio", "vcpu_id"]

C_SOURCE = r"""
typedef unsigned long long u64;
typedef const volatile u64 cvu64;
struct inner { char tag; u64 value; };
union either { int i; struct inner in; };
struct outer {
    int first;
    struct { short a; union { char b[3]; u64 c; }; };   /* anonymous struct with an anonymous union */
    unsigned flag1 : 1, flag2 : 3, wide : 20;
    struct inner arr[4];
    cvu64 ticks;
    union either e;
    struct inner *next;
    char tail[7];
};
struct outer instance;
"""


def _pahole(obj: str, struct: str) -> dict[str, int]:
    return {k: v for k, v in pahole.members(obj, struct, "dwarf").items() if k != "sizeof"}


def _kvm_debuginfo() -> tuple[str, str]:
    dbg = sorted(glob.glob(f"{CACHE}/dbg-*/kvm.ko"))
    btf = sorted(glob.glob(f"{CACHE}/btf-*/kvm.btf"))
    need(dbg and btf, f"no kvm.ko debug file or split BTF in {CACHE} (make test fetches them)")
    need(shutil.which("pahole"), "pahole not installed (make deps installs it)")
    # the same kernel package version on both sides
    assert os.path.basename(os.path.dirname(dbg[-1]))[4:] == os.path.basename(os.path.dirname(btf[-1]))[4:]
    return dbg[-1], os.path.dirname(btf[-1])


def _tsalign(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tsalign", *args], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_debian_kvm_dwarf_equals_btf_and_pahole(tmp_path: Path) -> None:
    ko, btfdir = _kvm_debuginfo()
    r = _tsalign("offsetof", "kvm_vcpu", *MEMBERS, "--debuginfo", ko, "--cache", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    dwarf = json.loads(r.stdout)
    assert dwarf["route"] == "dwarf" and dwarf["cached"] is False and len(dwarf["build_id"]) == 40
    r = _tsalign("offsetof", "kvm_vcpu", *MEMBERS, "--btf", f"{btfdir}/kvm.btf", "--btf-base", f"{btfdir}/vmlinux.btf",
                 "--json")
    btf = json.loads(r.stdout)
    assert btf["route"] == "split-btf"
    assert [m["offset"] for m in dwarf["members"]] == [m["offset"] for m in btf["members"]]
    assert [m["size"] for m in dwarf["members"]] == [m["size"] for m in btf["members"]] == [8, 8, 8, 4]
    vcpu, arch = _pahole(ko, "kvm_vcpu"), _pahole(ko, "kvm_vcpu_arch")
    want = [vcpu["arch"] + arch["tsc_offset"], vcpu["arch"] + arch["l1_tsc_offset"],
            vcpu["arch"] + arch["tsc_scaling_ratio"], vcpu["vcpu_id"]]
    assert [m["offset"] for m in dwarf["members"]] == want
    # the answer is cached by build id, with where it came from
    r = _tsalign("offsetof", "kvm_vcpu", *MEMBERS, "--debuginfo", ko, "--cache", str(tmp_path), "--json")
    again = json.loads(r.stdout)
    assert again["cached"] is True and again["members"] == dwarf["members"]
    entry = json.loads((tmp_path / f"{dwarf['build_id']}.json").read_text())
    assert entry["route"] == "dwarf" and entry["source"] == ko and "kvm_vcpu.arch.tsc_offset" in entry["offsets"]
    (tmp_path / f"{dwarf['build_id']}.json").write_text("{broken")
    r = _tsalign("offsetof", "kvm_vcpu", "vcpu_id", "--debuginfo", ko, "--cache", str(tmp_path), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["cached"] is False


@pytest.mark.parametrize("version", ["4", "5"])
def test_compiled_struct_equals_pahole(tmp_path: Path, version: str) -> None:
    need(shutil.which("gcc") and shutil.which("pahole"), "needs gcc and pahole")
    from tsalign.kernel.dwarf import load

    src = tmp_path / "t.c"
    src.write_text(C_SOURCE)
    obj = tmp_path / "t.o"
    subprocess.run(["gcc", f"-gdwarf-{version}", "-c", "-o", str(obj), str(src)], check=True, timeout=60)
    want = _pahole(str(obj), "outer")
    assert set(want) >= {"first", "flag1", "flag2", "wide", "arr", "ticks", "e", "next", "tail"}
    with load(str(obj)) as d:
        for name, off in want.items():
            assert d.offsetof("outer", name).offset == off, name
        # through the anonymous struct and union, into an array element type and a union member
        inner = _pahole(str(obj), "inner")
        assert d.offsetof("outer", "c").offset == d.offsetof("outer", "b").offset
        assert d.offsetof("outer", "e.in.value").offset == want["e"] + inner["value"]
        assert d.offsetof("outer", "ticks").type_name == "cvu64" and d.offsetof("outer", "ticks").size == 8
        assert d.offsetof("outer", "arr").size == 4 * d.offsetof("outer", "e.in").size
        bits = [d.offsetof("outer", f).bit_offset for f in ("flag1", "flag2", "wide")]
        assert bits[1] == bits[0] + 1 and bits[2] == bits[0] + 4
        with pytest.raises(Exception, match="has no member 'nope'"):
            d.offsetof("outer", "e.nope")
        with pytest.raises(Exception, match="not a struct"):
            d.offsetof("outer", "first.x")


def test_numpy_relocation_equals_pyelftools(tmp_path: Path) -> None:
    need(shutil.which("gcc"), "needs gcc")
    from elftools.elf.elffile import ELFFile

    from tsalign.kernel.dwarf import _elffile

    src = tmp_path / "t.c"
    src.write_text(C_SOURCE)
    obj = tmp_path / "t.o"
    subprocess.run(["gcc", "-g", "-c", "-o", str(obj), str(src)], check=True, timeout=60)
    with open(obj, "rb") as a, open(obj, "rb") as b:
        slow, fast = ELFFile(a).get_dwarf_info(), _elffile(b).get_dwarf_info()
        for sec in ("debug_info_sec", "debug_line_sec", "debug_aranges_sec"):
            s, f = getattr(slow, sec), getattr(fast, sec)
            if s is not None:
                assert s.stream.getvalue() == f.stream.getvalue(), sec


def test_errors_name_the_file_and_the_package(tmp_path: Path) -> None:
    r = _tsalign("offsetof", "kvm_vcpu", "arch.tsc_offset", "--debuginfo", str(tmp_path / "none"))
    assert r.returncode == 3 and "linux-image-$(uname -r)-dbg" in r.stderr
    r = _tsalign("offsetof", "kvm_vcpu", "arch.tsc_offset", "--debuginfo", "/bin/true")
    assert r.returncode == 3 and "no DWARF debug info" in r.stderr
    bad = tmp_path / "bad.o"
    bad.write_bytes(b"\x7fELF" + b"\0" * 60)
    r = _tsalign("offsetof", "kvm_vcpu", "arch.tsc_offset", "--debuginfo", str(bad))
    assert r.returncode == 3 and str(bad) in r.stderr
    r = _tsalign("offsetof", "kvm_vcpu", "arch.tsc_offset", "--debuginfo", "/bin/true", "--btf", "/sys/kernel/btf/vmlinux")
    assert r.returncode == 3 and "either --btf or --debuginfo" in r.stderr


def test_kprobe_plan_falls_back_to_dwarf_without_btf(tmp_path: Path) -> None:
    """A recorded tree of a kernel without BTF whose debug package is installed: the kprobe is planned
    from the DWARF of kvm.ko, and says so."""
    ko, _ = _kvm_debuginfo()
    rel = "6.1.0-57-cloud-amd64"
    tree = tmp_path / "tree"
    (tree / "proc/sys/kernel").mkdir(parents=True)
    (tree / "proc/sys/kernel/osrelease").write_text(rel + "\n")
    (tree / "proc/kallsyms").write_text("ffffffffc0a00000 t kvm_arch_vcpu_load\t[kvm]\nffffffffc0a01000 T kvm_vcpu_kick\t[kvm]\n")
    dbg = tree / f"usr/lib/debug/lib/modules/{rel}/kernel/arch/x86/kvm"
    dbg.mkdir(parents=True)
    os.symlink(ko, dbg / "kvm.ko")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "tsalign", "kprobe", "render", "--root", str(tree), "--json"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    vcpu, arch = _pahole(ko, "kvm_vcpu"), _pahole(ko, "kvm_vcpu_arch")
    assert plan["offsets_route"] == "dwarf" and plan["offsets_source"] == str(dbg / "kvm.ko")
    assert plan["member_offset"] == vcpu["arch"] + arch["tsc_offset"] and plan["vcpu_id_offset"] == vcpu["vcpu_id"]
    assert plan["function"] == "kvm_vcpu_kick" and plan["verified_by"] == "kallsyms"
    assert list((tmp_path / "cache" / "tsalign" / "offsets").glob("*.json"))
    # neither route: the error names both and the package
    os.unlink(dbg / "kvm.ko")
    r = subprocess.run([sys.executable, "-m", "tsalign", "kprobe", "render", "--root", str(tree)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 4 and "BTF" in r.stderr and "linux-image-$(uname -r)-dbg" in r.stderr


def test_malformed_objects_are_named_never_crash(tmp_path: Path) -> None:
    """Fuzzing found pyelftools allocating what a section header claims, seeking to negative offsets and
    asserting: each becomes an error naming the file (regressions of tests/fuzz findings)."""
    import struct as st

    need(shutil.which("gcc"), "needs gcc")
    src = tmp_path / "t.c"
    src.write_text(C_SOURCE)
    obj = tmp_path / "t.o"
    subprocess.run(["gcc", "-g", "-c", "-o", str(obj), str(src)], check=True, timeout=60)
    data = obj.read_bytes()
    shoff, = st.unpack_from("<Q", data, 0x28)
    shnum, = st.unpack_from("<H", data, 0x3C)
    cases = []
    for i in range(1, shnum):
        b = bytearray(data)
        st.pack_into("<Q", b, shoff + 64 * i + 0x20, 1 << 40)  # sh_size: a terabyte
        cases.append(bytes(b))
    b = bytearray(data)
    st.pack_into("<Q", b, 0x28, len(data) + 12345)  # section headers beyond the file
    cases.append(bytes(b))
    cases.append(data[: len(data) // 2])  # truncated
    for n, case in enumerate(cases):
        p = tmp_path / f"bad{n}.o"
        p.write_bytes(case)
        r = _tsalign("offsetof", "outer", "e.in.value", "--debuginfo", str(p), "--cache", "none")
        assert r.returncode == 3 and str(p) in r.stderr, (n, r.stderr[-500:])
