"""The kprobe route to each vCPU's ``arch.tsc_offset`` (the perf-prof note's method, automated):
choose a traceable function whose first argument is ``struct kvm_vcpu *``, render
``p:tsalign/<fn> <fn> tsc_offset=+0x<off>(%di):u64 vcpu_id=+0x<off>(%di):s32`` (x86-64: first argument in
%di) and
register/unregister it idempotently through tracefs ``kprobe_events``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InvalidParameter, Unavailable

__all__ = [
    "PREFERRED",
    "InvalidParameter",
    "KprobeChoice",
    "choose_function",
    "event_name",
    "parse_definition",
    "parse_hit",
    "parse_symbol_list",
    "register",
    "render",
    "unregister",
    "why",
]

GROUP = "tsalign"
# Called often and early for every vCPU. kvm_vcpu_kick is the note's choice but is not a symbol on
# every kernel; kvm_arch_vcpu_load runs on every vcpu_load() (each KVM_RUN).
# Newer kernels make kvm_vcpu_kick an inline wrapper of __kvm_vcpu_kick (its out-of-line twin, same argument).
PREFERRED = ("kvm_vcpu_kick", "__kvm_vcpu_kick", "kvm_arch_vcpu_load", "kvm_arch_vcpu_put", "kvm_arch_vcpu_ioctl_run",
             "kvm_vcpu_block", "kvm_vcpu_halt")
_WHY = {"kvm_vcpu_kick": "the seed's function",
        "__kvm_vcpu_kick": "the out-of-line twin of the seed's kvm_vcpu_kick (inline or untraceable here)",
        "kvm_arch_vcpu_load": "runs on every vCPU load (each KVM_RUN); the seed's kvm_vcpu_kick and its twin "
                              "__kvm_vcpu_kick are not traceable here"}


@dataclass(frozen=True)
class KprobeChoice:
    """The function chosen and why; ``verified_by`` names the list that shows it is traceable."""

    function: str
    verified_by: str
    candidates: int
    why: str = ""


_KALLSYMS = re.compile(r"^[0-9a-fA-F]+ [tTwW] (\S+)", re.MULTILINE)
_FIRST_WORD = re.compile(r"^(\S+)", re.MULTILINE)


def parse_symbol_list(text: str) -> set[str]:
    """Function names from available_filter_functions (``name [mod]``) or kallsyms (``addr t name [mod]``)."""
    first = text.split("\n", 1)[0].split()
    if len(first) >= 3 and len(first[1]) == 1 and all(c in "0123456789abcdefABCDEF" for c in first[0]):
        return set(_KALLSYMS.findall(text))
    return set(_FIRST_WORD.findall(text))


def parse_blacklist(text: str) -> set[str]:
    """Function names from debugfs ``kprobes/blacklist`` (``0xstart-0xend\tname [mod]``)."""
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.add(parts[1])
    return out


def why(function: str) -> str:
    """Why a preferred ``function`` is the one probed (it being the first of PREFERRED traceable there)."""
    return _WHY.get(function, f"the first of tsalign's preferred functions traceable here ({', '.join(PREFERRED)})")


def choose_function(candidates: Iterable[str], traceable: set[str] | None, kallsyms: set[str] | None,
                    blacklist: Iterable[str] = ()) -> KprobeChoice:
    """Pick from BTF ``candidates`` (first arg ``struct kvm_vcpu *``): preferred names first, each
    confirmed by available_filter_functions (``traceable``) or else /proc/kallsyms, never one on
    the kprobe blacklist."""
    cands = set(candidates) - set(blacklist)
    if not cands:
        raise Unavailable("no function with a 'struct kvm_vcpu *' first argument in BTF: is KVM's BTF loaded "
                          "(vmlinux when built in, /sys/kernel/btf/kvm when a module)?")
    for listing, label in ((traceable, "available_filter_functions"), (kallsyms, "kallsyms")):
        if listing is None:
            continue
        ok = cands & listing
        for name in PREFERRED:
            if name in ok:
                return KprobeChoice(name, label, len(cands), why(name))
        if ok:
            return KprobeChoice(min(ok), label, len(cands), "none of the preferred functions is traceable here; "
                                "the first of the others taking struct kvm_vcpu * first")
    raise Unavailable(f"none of the {len(cands)} BTF candidates is in available_filter_functions or kallsyms "
                      "(all inlined or notrace on this kernel)")


def event_name(function: str) -> str:
    return f"{GROUP}/{function}"


def render(function: str, member_offset: int, vcpu_id_offset: int | None = None) -> str:
    """The kprobe_events line fetching the u64 at ``member_offset`` bytes from the first argument, and the
    vCPU's id (``kvm_vcpu.vcpu_id``, s32) at ``vcpu_id_offset``: the thread that calls a function such as
    kvm_vcpu_kick is often another vCPU's or the VMM's, so the id says whose offset was read."""
    if not function or any(c.isspace() for c in function):
        raise InvalidParameter("function", function, "a kernel function name such as kvm_arch_vcpu_load")
    for name, off in (("member offset", member_offset), ("vcpu_id offset", vcpu_id_offset)):
        if off is not None and not 0 <= off < 1 << 20:
            raise InvalidParameter(name, off, "a byte offset inside struct kvm_vcpu")
    line = f"p:{event_name(function)} {function} tsc_offset=+{member_offset:#x}(%di):u64"
    return line if vcpu_id_offset is None else line + f" vcpu_id=+{vcpu_id_offset:#x}(%di):s32"


#: a hit of the kprobe :func:`render` defines, as ftrace prints it (u64 in decimal or hex, s32 in decimal):
#: ``(kvm_vcpu_kick+0x0/0x70 [kvm]) tsc_offset=18446743933619002252 vcpu_id=1``
_HIT = re.compile(r"^\([^)]*\) tsc_offset=(0x[0-9a-fA-F]{1,16}|\d{1,20}) vcpu_id=(\d{1,4})$")


#: a definition :func:`render` writes (what a controller's kernel table hands a host)
_DEFINITION = re.compile(r"^p:tsalign/(\S+) (\S+) tsc_offset=\+0x([0-9a-f]{1,5})\(%di\):u64"
                         r"(?: vcpu_id=\+0x([0-9a-f]{1,5})\(%di\):s32)?$")


def parse_definition(line: str) -> tuple[str, int, int | None]:
    """(function, tsc_offset member offset, vcpu_id offset) of a definition :func:`render` made; anything else
    (another group, register, type or an extra fetch) is refused."""
    m = _DEFINITION.match(line.strip())
    if m is None or m[1] != m[2]:
        raise InvalidParameter("kprobe definition", line[:200],
                               "p:tsalign/FN FN tsc_offset=+0xN(%di):u64 vcpu_id=+0xN(%di):s32 (as tsalign renders it)")
    return m[1], int(m[3], 16), int(m[4], 16) if m[4] else None


def parse_hit(payload: str) -> tuple[int, int] | None:
    """(tsc_offset as unsigned 64-bit cycles, vcpu_id) of one hit, or None for another payload (a probe
    rendered without vcpu_id cannot say whose offset it read: the calling thread is often another vCPU's)."""
    m = _HIT.match(payload)
    if m is None:
        return None
    offset = int(m[1], 0)
    return (offset, int(m[2])) if offset < 1 << 64 else None


def events_file(tracefs: str | None) -> str:
    if tracefs is None:
        raise Unavailable("tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing "
                          "(or tsalign precheck --mount)")
    path = os.path.join(tracefs, "kprobe_events")
    if not os.path.exists(path):
        raise Unavailable(f"{path} does not exist: this kernel has no kprobe events (CONFIG_KPROBE_EVENTS=n); "
                          "use the debugfs route instead (tsalign offsets reads kvm/<pid>-<fd>/vcpuN/tsc-offset)")
    return path


def _defined(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _same(existing: str, definition: str) -> bool:
    # the kernel prints "p:tsalign/fn fn tsc_offset=+0x...(%di):u64" back (spacing normalised)
    return existing.split() == definition.split()


def register(tracefs: str | None, definition: str) -> bool:
    """Add ``definition`` to kprobe_events; True when something changed (idempotent)."""
    path = events_file(tracefs)
    name = definition.split()[0].split(":", 1)[1]
    current = [d for d in _defined(path) if d.split()[0].split(":", 1)[-1] == name]
    if any(_same(d, definition) for d in current):
        return False
    try:
        if current:
            _append(path, f"-:{name}\n")
        _append(path, definition + "\n")
    except OSError as e:
        raise InvalidParameter("kprobe", definition,
                               f"a definition the kernel accepts ({e.strerror}; {_error_log(tracefs)})") from None
    return True


def _error_log(tracefs: str | None) -> str:
    """The last entry of tracefs error_log (where the kernel says why a kprobe was refused)."""
    try:
        with open(os.path.join(tracefs or "", "error_log"), encoding="utf-8") as f:
            lines = [ln.rstrip() for ln in f if ln.strip()]
        return "kernel error_log: " + " | ".join(lines[-3:]) if lines else "error_log is empty"
    except OSError:
        return "no error_log"


def unregister(tracefs: str | None, function: str) -> bool:
    """Remove tsalign's kprobe on ``function``; True when it existed."""
    path = events_file(tracefs)
    name = event_name(function)
    if not any(d.split()[0].split(":", 1)[-1] == name for d in _defined(path)):
        return False
    _append(path, f"-:{name}\n")
    return True


def _append(path: str, text: str) -> None:
    """One write(2) with O_APPEND and no seek: Python's open(..., "a") seeks to the end, which
    tracefs kprobe_events refuses (EINVAL); O_TRUNC would remove every other kprobe."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
