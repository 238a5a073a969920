"""The evidence kinds that judge an alignment: direction, tracepoints per side, pairing.

One registry, standard library only (prechecks on managed nodes read it too); the extractors are in
:mod:`tsalign.verify.evidence`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ANALYSES", "ANALYSIS_GUEST_EVENTS", "CATALOGUE", "DEFAULT_GUEST_EVENTS", "DEFAULT_HOST_EVENTS", "IRQ_INJECTIONS", "KINDS",
           "KPROBE_EVENTS", "OFFSET_EVENTS", "SELFTEST_EVENTS", "EvidenceKind", "needed_events"]

#: host injection tracepoints, in the order a request travels
IRQ_INJECTIONS = ("kvm_set_irq", "kvm_msi_set_irq", "kvm_pic_set_irq", "kvm_apic_accept_irq", "kvm_inj_virq")
#: system calls a VMM may write one byte to a chardev with (QEMU's file chardev uses writev)
PORT_WRITE_CALLS = ("sys_enter_write", "sys_enter_writev", "sys_enter_pwrite64", "sys_enter_pwritev")

GUEST_FIRST, HOST_FIRST, TWO_SIDED = "guest-before-host", "host-before-guest", "two-sided"


@dataclass(frozen=True)
class EvidenceKind:
    """One kind of evidence: direction, tracepoints per side (any one of them serves), pairing."""

    name: str
    direction: str
    host_events: tuple[str, ...]
    guest_events: tuple[str, ...]
    pairing: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "direction": self.direction, "host_events": list(self.host_events),
                "guest_events": list(self.guest_events), "pairing": self.pairing}


CATALOGUE: tuple[EvidenceKind, ...] = (
    EvidenceKind(
        "vcpu_run", TWO_SIDED, ("kvm:kvm_entry", "kvm:kvm_exit", "sched:sched_switch", "sched:sched_waking"),
        ("any guest event",),
        "a guest event on vCPU N lies inside a run of vCPU N's host thread: between kvm_entry and kvm_exit "
        "where they fire, else between the sched_switch that runs the thread and the one that stops it "
        "(threads by id; no pairing); a gap ends at the switch-in or sched_waking of the thread, and is "
        "not used where the thread's own next event came before either was recorded. Works for KVM and emulated (TCG) guests. Needs no lost host events."),
    EvidenceKind(
        "msr_write", TWO_SIDED, ("kvm:kvm_msr",), ("msr:write_msr",),
        "guest msr:write_msr (traced after the write: host-before-guest) or the micro-VM's tsalign_msr "
        "(rdtsc before wrmsr: guest-before-host) against the host kvm_msr write with the same vCPU, MSR "
        "index and value; only values seen exactly once on each side"),
    EvidenceKind(
        "pio_beacon", TWO_SIDED, ("kvm:kvm_pio",), ("tsalign_beacon (micro-VM)",),
        "micro-VM beacon (guest rdtsc) against the host kvm_pio on port 0x10 carrying its low 32 bits, "
        "in order (guest-before-host); the exit of its high half (port 0x11) came before the next "
        "beacon's rdtsc (host-before-guest)"),
    EvidenceKind(
        "port_beacon", TWO_SIDED, tuple(f"syscalls:{c}" for c in PORT_WRITE_CALLS),
        ("tsalign_beacon marker (tsalign beacons, emulated guests)",),
        "guest rdtsc before and after an `out` to a chardev port against the VMM's write system call "
        "on the one fd that saw exactly as many writes as beacons, in order"),
    EvidenceKind(
        "irq_injection", HOST_FIRST, tuple(f"kvm:{n}" for n in IRQ_INJECTIONS), ("irq:irq_handler_entry",),
        "host injection before the guest handler: per legacy line (GSI == guest IRQ), in order, only "
        "where injections and handlers are equal in number; the micro-VM (tsalign_irq) injects IRQ k "
        "only after handler k-1 reported, which also bounds it from below (two-sided)"),
)
KINDS = {k.name: k for k in CATALOGUE}


def needed_events(kinds: Iterable[str] | None = None) -> dict[str, list[str]]:
    """The tracepoints (system:event) each side must record for ``kinds`` (default: every kind)."""
    out: dict[str, list[str]] = {"host": [], "guest": []}
    for k in CATALOGUE:
        if kinds is not None and k.name not in kinds:
            continue
        out["host"] += [e for e in k.host_events if ":" in e and e not in out["host"]]
        out["guest"] += [e for e in k.guest_events if ":" in e and " " not in e and e not in out["guest"]]
    return out


# -- what each capture records: the one list of tracepoints --------------------------------------------

#: host tracepoints that are offset sources (tsalign.offsets): KVM's TSC offset writes, kvm-clock records
OFFSET_EVENTS = ("kvm:kvm_write_tsc_offset", "kvm:kvm_pvclock_update")
#: tsalign's kprobe on the vCPU load path (`tsalign kprobe register`, the host role): each hit reads the
#: vCPU's tsc_offset in its own thread; skipped with a note where not registered
KPROBE_EVENTS = "tsalign:*"
#: the analyses of `tsalign analyze` (tsalign.analyze.run)
ANALYSES = ("irq", "vcpu", "io")

#: guest tracepoints the analyses read besides the evidence (irq handler exit, guest scheduling, block IO)
ANALYSIS_GUEST_EVENTS = ("irq:irq_handler_exit", "sched:sched_switch", "block:block_rq_issue", "block:block_rq_complete")
#: `tsalign capture --role host`: the offset sources, every kind's host events except the VMM's write
#: system calls (port beacons of emulated guests: costly on a busy host, add them with --events), the kprobe
DEFAULT_HOST_EVENTS = (*OFFSET_EVENTS, *(e for e in needed_events()["host"] if not e.startswith("syscalls:")),
                       KPROBE_EVENTS)
#: `tsalign capture --role guest`: every kind's guest events and the analyses'
DEFAULT_GUEST_EVENTS = tuple(dict.fromkeys((*needed_events()["guest"], *ANALYSIS_GUEST_EVENTS)))
#: `tsalign selftest`: the host defaults without the kprobe (the micro-VM's offsets come from debugfs)
SELFTEST_EVENTS = tuple(e for e in DEFAULT_HOST_EVENTS if e != KPROBE_EVENTS)
