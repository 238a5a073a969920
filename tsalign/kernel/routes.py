"""Which route gives a kernel's struct member offsets — BTF, a module's split BTF, or DWARF debug
info — and a cache of DWARF answers keyed by the debug file's build id (with where each came from).

Auto choice on a running kernel: ``/sys/kernel/btf/kvm`` (split on vmlinux), ``/sys/kernel/btf/vmlinux``,
else the debug file of the running kvm module or vmlinux found by build id under
``/usr/lib/debug/.build-id/``, or at Debian's path ``/usr/lib/debug/lib/modules/REL/kernel/arch/x86/kvm/kvm.ko``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..errors import InvalidParameter, TsalignError, Unavailable
from ..jsonfile import save_json

__all__ = ["CACHE_DIR", "DEBUG_PACKAGES", "debug_file_for_running_kernel", "debug_package", "kernel_identity",
           "member_offsets", "note_build_id"]

CACHE_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tsalign", "offsets")
DEBUG_PACKAGES = ("Debian: apt install linux-image-$(uname -r)-dbg; Ubuntu: linux-image-$(uname -r)-dbgsym; "
                   "Fedora/RHEL: dnf debuginfo-install kernel-$(uname -r)")


def note_build_id(data: bytes) -> str | None:
    """The GNU build id in raw ELF notes (``/sys/kernel/notes``, ``/sys/module/M/notes/.note.gnu.build-id``)."""
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = (int.from_bytes(data[pos + i:pos + i + 4], "little") for i in (0, 4, 8))
        name_end = pos + 12 + ((namesz + 3) & ~3)
        desc_end = name_end + ((descsz + 3) & ~3)
        if desc_end > len(data):
            return None
        if ntype == 3 and data[pos + 12:pos + 12 + namesz].rstrip(b"\0") == b"GNU":
            return data[name_end:name_end + descsz].hex()
        pos = desc_end
    return None


def _read(root: str, path: str) -> bytes | None:
    try:
        with open(os.path.join(root, path.lstrip("/")), "rb") as f:
            return f.read(1 << 16)
    except OSError:
        return None


def debug_file_for_running_kernel(root: str = "/") -> str | None:
    """The DWARF file that describes the running kvm module (or vmlinux when KVM is built in), under
    ``root`` (``/`` or a recorded tree)."""
    release = (_read(root, "/proc/sys/kernel/osrelease") or b"").decode("ascii", "replace").strip()
    for notes in ("/sys/module/kvm/notes/.note.gnu.build-id", "/sys/kernel/notes"):
        raw = _read(root, notes)
        bid = note_build_id(raw) if raw else None
        if bid:
            p = os.path.join(root, f"usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug")
            if os.path.exists(p):
                return p
    for p in (f"usr/lib/debug/lib/modules/{release}/kernel/arch/x86/kvm/kvm.ko", f"usr/lib/debug/boot/vmlinux-{release}"):
        if release and os.path.exists(os.path.join(root, p)):
            return os.path.join(root, p)
    return None


def debug_package(os_release: str, release: str) -> str:
    """The distribution package that holds the debug info of kernel ``release``, from /etc/os-release's text."""
    ids = {m[0]: m[1].strip('"') for m in (ln.split("=", 1) for ln in os_release.splitlines()) if len(m) == 2}
    family = " ".join((ids.get("ID", ""), ids.get("ID_LIKE", ""))).split()
    if "ubuntu" in family:
        return f"linux-image-{release}-dbgsym (Ubuntu's ddebs archive)"
    if "debian" in family:
        return f"linux-image-{release}-dbg (apt install; or scripts/fetch-kvm-debuginfo.sh on a controller)"
    if {"fedora", "rhel", "centos"} & set(family):
        return f"kernel-debuginfo-{release} (dnf debuginfo-install kernel-{release})"
    if "suse" in family or "opensuse" in family:
        return f"kernel-default-debuginfo (zypper install, for {release})"
    return f"the debug info of kernel {release} ({DEBUG_PACKAGES})"


def kernel_identity(root: str = "/") -> dict[str, Any]:
    """Which kernel build runs under ``root`` and which offset routes it offers: release, GNU build ids of
    vmlinux and the kvm module (None when kvm is built in, or not loaded), the file whose types hold
    ``struct kvm_vcpu`` (``kvm_file``: ``kvm.ko`` or ``vmlinux``) and its build id (``build_id``: the key of
    a fleet's offset table), BTF present, the debug file found, and the package that would give one."""
    release = (_read(root, "/proc/sys/kernel/osrelease") or b"").decode("ascii", "replace").strip()
    vml = _read(root, "/sys/kernel/notes")
    kvm = _read(root, "/sys/module/kvm/notes/.note.gnu.build-id")
    vml_id = note_build_id(vml) if vml else None
    kvm_id = note_build_id(kvm) if kvm else None
    builtin = kvm_id is None and os.path.isdir(os.path.join(root, "sys/module/kvm")) and \
        not os.path.exists(os.path.join(root, "sys/module/kvm/initstate"))
    btf = {"vmlinux": os.path.exists(os.path.join(root, "sys/kernel/btf/vmlinux")),
           "kvm": os.path.exists(os.path.join(root, "sys/kernel/btf/kvm"))}
    osr = (_read(root, "/etc/os-release") or _read(root, "/usr/lib/os-release") or b"").decode("utf-8", "replace")
    return {"release": release, "vmlinux_build_id": vml_id, "kvm_build_id": kvm_id, "kvm_builtin": builtin,
            "kvm_file": "kvm.ko" if kvm_id else "vmlinux", "build_id": kvm_id or vml_id, "btf": btf,
            "debug_file": debug_file_for_running_kernel(root), "debug_package": debug_package(osr, release)}


def _cache_path(cache_dir: str, bid: str) -> str:
    if not all(c in "0123456789abcdef" for c in bid) or not 8 <= len(bid) <= 128:
        raise InvalidParameter("build id", bid, "hex digits")
    return os.path.join(cache_dir, f"{bid}.json")


def _dwarf_offsets(path: str, struct: str, members: list[str], cache_dir: str | None) -> dict[str, Any]:
    from .dwarf import build_id, load, malformed

    if not os.path.isfile(path):
        raise InvalidParameter("--debuginfo", path, f"an existing debug file ({DEBUG_PACKAGES})")
    bid = build_id(path)
    cached: dict[str, Any] = {}
    cpath = _cache_path(cache_dir, bid) if cache_dir and bid else None
    if cpath and os.path.exists(cpath):
        try:
            with open(cpath, encoding="utf-8") as f:
                cached = json.load(f)
        except (OSError, ValueError):
            cached = {}  # a broken cache entry is recomputed

    def key(member: str) -> str:
        return f"{struct}.{member}"

    if cached.get("build_id") == bid and all(key(m) in cached.get("offsets", {}) for m in members):
        return {"route": "dwarf", "source": cached["source"], "build_id": bid, "cached": True,
                "members": [cached["offsets"][key(m)] for m in members]}
    with load(path) as d:
        try:
            found = [d.offsetof(struct, m) for m in members]
        except TsalignError:
            raise
        except (Exception, MemoryError, RecursionError) as e:  # noqa: BLE001 - DIEs parsed lazily by pyelftools
            raise malformed(path, e) from None
    rows: list[dict[str, Any]] = [{"member": m.path, "offset": m.offset, "bit_offset": m.bit_offset, "size": m.size,
                                   "type": m.type_name} for m in found]
    if cpath:
        os.makedirs(os.path.dirname(cpath), exist_ok=True)
        offsets: dict[str, Any] = {**cached.get("offsets", {}), **{key(r["member"]): r for r in rows}}
        entry = {"build_id": bid, "source": path, "route": "dwarf", "offsets": offsets,
                 "computed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        save_json(cpath, entry, "--cache")
    return {"route": "dwarf", "source": path, "build_id": bid, "cached": False, "members": rows}


def member_offsets(struct: str, members: list[str], btf: str | None = None, btf_base: str | None = None,
                   debuginfo: str | None = None, cache_dir: str | None = CACHE_DIR,
                   root: str = "/") -> dict[str, Any]:
    """Offsets of ``members`` (dot paths) of struct ``struct`` by the route the arguments (or, with none,
    the running kernel) give: ``{"route", "source", "build_id", "cached", "members": [...]}``."""
    from . import btf as btfmod

    if debuginfo and btf:
        raise InvalidParameter("--debuginfo", debuginfo, "either --btf or --debuginfo, not both")
    if btf_base and not btf:
        raise InvalidParameter("--btf-base", btf_base, "to be used with --btf (the split BTF on top of it)")
    if not debuginfo and not btf:
        kvm, vmlinux = os.path.join(root, "sys/kernel/btf/kvm"), os.path.join(root, "sys/kernel/btf/vmlinux")
        if os.path.exists(kvm):
            btf, btf_base = kvm, vmlinux
        elif os.path.exists(vmlinux):
            btf = vmlinux
        else:
            debuginfo = debug_file_for_running_kernel(root)
            if debuginfo is None:
                raise Unavailable("no route to this kernel's struct offsets: no BTF (/sys/kernel/btf/vmlinux; a kernel "
                                  "built with CONFIG_DEBUG_INFO_BTF) and no debug info under /usr/lib/debug "
                                  f"({DEBUG_PACKAGES}); or pass --btf FILE / --debuginfo FILE")
    if debuginfo:
        return {"struct": struct, **_dwarf_offsets(debuginfo, struct, members, cache_dir)}
    assert btf is not None
    b = btfmod.load(btf, btf_base)
    rows = []
    for m in members:
        o = b.offsetof(struct, m)
        rows.append({"member": o.path, "offset": o.offset, "bit_offset": o.bit_offset, "size": o.size, "type": o.type_name})
    return {"struct": struct, "route": "split-btf" if b.base is not None else "btf", "source": b.source,
            "build_id": None, "cached": False, "members": rows}
