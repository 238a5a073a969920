"""What ``align`` and ``analyze`` read on each side: a tsalign bundle, or any trace ``tsalign events``
reads (trace-cmd .dat, tracefs/``trace-cmd report`` text, perf-prof, perf script), given as a
:class:`ForeignSide` with the same interface as :class:`~tsalign.traces.bundle.Bundle` (``path``,
``role``, ``domain``, ``manifest``, ``records()``, ``snapshots()``).

A foreign trace lacks what a bundle's manifest records; it comes from the trace itself where it can
and from options otherwise:

- timestamps must be TSC cycles (trace clock ``x86-tsc``); a ``--host-clock``/``--guest-clock`` override
  says so when a file is mislabelled;
- the host's vCPU threads: ``--vcpu-tid VCPU=TID``, or inferred from the threads that ran
  ``kvm_entry``/``kvm_exit`` (``vcpu N``) or wrote ``kvm_write_tsc_offset`` (``vcpu=N``);
- offsets: the trace's ``kvm_write_tsc_offset`` events, or ``--tsc-offset``;
- the TSC frequency (ns in reports): ``--tsc-khz``;
- the capture window: unknown (a trace's first event is not its start).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidParameter
from ..offsets import OffsetSnapshot
from ..traces.bundle import Bundle
from ..traces.ftrace_text import Record

__all__ = ["ForeignSide", "open_side"]

_VCPU_OF = {"kvm_entry": re.compile(r"^vcpu (\d+)\b"), "kvm_exit": re.compile(r"^vcpu (\d+)\b"),
            "kvm_write_tsc_offset": re.compile(r"^vcpu=(\d+)\b")}


@dataclass
class ForeignSide:
    """A trace that is not a tsalign bundle, read whole, with a manifest built from it and the options."""

    path: str
    role: str
    manifest: dict[str, Any]
    recs: list[Record] = field(repr=False, default_factory=list)

    @property
    def domain(self) -> str:
        return str(self.manifest["clock"]["domain"])

    def records(self) -> Iterator[Record]:
        return iter(self.recs)

    def snapshots(self) -> list[OffsetSnapshot]:
        return []


def open_side(path: str, role: str, what: str, clock: str | None = None, buffer: str | None = None,
              vcpu_tids: dict[int, int] | None = None, tsc_khz: int | None = None,
              lenient: bool = False) -> Bundle | ForeignSide:
    """``path`` as the ``role`` side (``what`` names the option in errors): a bundle when it is one,
    else any trace tsalign reads."""
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "manifest.json")):
        for opt, v in (("clock", clock), ("buffer", buffer)):
            if v is not None:
                raise InvalidParameter(f"--{role}-{opt}", v, f"no value for a tsalign bundle ({path} records its own)")
        return Bundle.open(path, what)
    if not os.path.exists(path):
        raise InvalidParameter(what, path, "an existing tsalign bundle directory or trace file")
    recs, info, lost = _read(path, clock, buffer, lenient)
    if info.domain != "tsc":
        raise InvalidParameter(
            what, path, f"timestamps in TSC cycles; this trace's clock is {info.clock!r} ({info.domain}): record with "
            f"trace clock x86-tsc (`trace-cmd record -C x86-tsc`, tracefs trace_clock), or pass --{role}-clock x86-tsc "
            "if the file is labelled wrongly")
    notes = [m if m.startswith(path) else f"{path}: {m}" for m in (*info.warnings, *info.notes)]
    manifest: dict[str, Any] = {
        "role": role, "foreign": {"path": path, "format": info.format, "buffer": info.buffer},
        "clock": {"trace_clock": info.clock, "domain": f"{role}_tsc", "convertible": True},
        "node": {"tsc_khz": tsc_khz}, "lost_events": lost, "notes": notes,
    }
    if role == "host":
        vcpus, how = _vcpu_threads(recs, vcpu_tids or {}, path)
        manifest["vm"] = [{"name": os.path.basename(path.rstrip("/")) or path, "pid": None, "vm_fd": None,
                           "foreign": True, "vcpus": [{"id": v, "tid": t} for v, t in sorted(vcpus.items())]}]
        notes.append(f"vCPU threads {how}: " + ", ".join(f"vcpu{v}=tid {t}" for v, t in sorted(vcpus.items())))
        # when the capture started and stopped is unknown (its first event is later than its start): no
        # window, so no guest event is called outside it and no vCPU gap is assumed at either end
    return ForeignSide(path, role, manifest, recs)


def _read(path: str, clock: str | None, buffer: str | None, lenient: bool) -> tuple[list[Record], Any, int]:
    """Every event of the trace as records in time order (binary payloads printed as the kernel prints
    them), the trace's info, and the lost-page count."""
    from ..traces.reader import open_trace

    recs: list[Record] = []
    with open_trace(path, "auto", clock, buffer, strict=not lenient) as t:
        printer = None
        dat = getattr(t, "dat", None)
        try:
            for c in t.chunks():
                if not len(c):
                    continue
                if c.payload is None:
                    if printer is None:
                        from ..traces.printfmt import EventPrinter

                        printer = EventPrinter(dat.formats.values(), dat.long_size, dat.endian == ">")
                    payloads = printer.payloads(c)
                else:
                    payloads = c.payload
                names = [e.split(":")[-1] for e in t.events.decode(c.event)]
                recs += map(Record, c.ts.tolist(), c.cpu.tolist(), c.pid.tolist(), t.comms.decode(c.comm), names,
                            payloads)
            if printer is not None and printer.bad:
                t.warn(f"{printer.bad} events with dynamic fields outside their record were not printed (corrupt?)")
        finally:
            if printer is not None:
                printer.close()
        return recs, t.info, t.lost_pages


def _vcpu_threads(recs: list[Record], given: dict[int, int], path: str) -> tuple[dict[int, int], str]:
    """vCPU id -> host thread id, and how it was found."""
    if given:
        return dict(given), "given (--vcpu-tid)"
    for ev in ("kvm_entry", "kvm_exit", "kvm_write_tsc_offset"):
        seen: dict[int, set[int]] = defaultdict(set)
        for r in recs:
            if r.event == ev and (m := _VCPU_OF[ev].match(r.payload)):
                seen[int(m[1])].add(r.pid)
        if not seen:
            continue
        shared = {v: sorted(t) for v, t in seen.items() if len(t) > 1}
        tids = [t for ts in seen.values() for t in ts]
        if shared or len(tids) != len(set(tids)):
            raise InvalidParameter(
                "--vcpu-tid", "(none)",
                f"VCPU=TID for each vCPU of the VM: in {path} several threads ran one vCPU id or one thread several "
                f"({ev}: {dict(sorted((v, sorted(t)) for v, t in seen.items()))}; several VMs traced at once?)")
        return {v: next(iter(t)) for v, t in seen.items()}, f"inferred from {ev}"
    raise InvalidParameter("--vcpu-tid", "(none)",
                           f"VCPU=TID for each vCPU: {path} holds no kvm_entry, kvm_exit or kvm_write_tsc_offset "
                           "event that names the VM's vCPU threads (record kvm:kvm_entry, or pass the threads: "
                           "`ps -T -p $(pidof qemu-system-x86_64)` lists them as 'CPU N/KVM')")
