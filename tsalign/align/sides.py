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
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..clock.kvm import TscParams
from ..errors import InconsistentData, InvalidParameter
from ..offsets import OffsetSnapshot
from ..traces.bundle import Bundle
from ..traces.ftrace_text import Record
from ..traces.payloads import kv

if TYPE_CHECKING:  # numpy: a controller's dependency (the guest-side CLI imports this module without it)
    from ..traces.events import Events
    from ..traces.spill import PayloadPolicy

__all__ = ["ForeignSide", "open_side", "time_shift_snapshots"]

#: host events whose payloads name the vCPU a thread runs (``vcpu N``, ``vcpu=N``), in the order they are asked
VCPU_THREAD_EVENTS = ("kvm_entry", "kvm_exit", "kvm_write_tsc_offset")
#: events KVM traces in the thread of the vCPU they are about (its entries, exits and their handling)
VCPU_CONTEXT_EVENTS = (*VCPU_THREAD_EVENTS, "kvm_pio", "kvm_msr")

#: TIME_SHIFT flag: trace-cmd interpolates between samples (else each holds until the next)
TSYNC_INTERPOLATE = 1


@dataclass
class ForeignSide:
    """A trace that is not a tsalign bundle, read whole, with a manifest built from it and the options."""

    path: str
    role: str
    manifest: dict[str, Any]
    ev: Events = field(repr=False)
    #: a guest calibration for its local/perf ns (as :attr:`tsalign.traces.bundle.Bundle.calibration`)
    calibration: dict[str, Any] | None = None
    #: read for one alignment (with a payload policy): :meth:`events` gives the events away, so that the alignment
    #: holds the only reference and can let each column go as it merges it
    handover: bool = False

    @property
    def domain(self) -> str:
        return str(self.manifest["clock"]["domain"])

    def records(self) -> Iterator[Record]:
        """Row by row (the events stay here: e.g. port beacons measured before the alignment takes them)."""
        return self._held().records()

    def events(self) -> Events:
        ev = self._held()
        if self.handover:
            self.ev = None  # type: ignore[assignment]
        return ev

    def _held(self) -> Events:
        if self.ev is None:
            raise RuntimeError(f"{self.path}: its events were handed to an alignment already (open it again)")
        return self.ev

    def snapshots(self) -> list[OffsetSnapshot]:
        return []


def open_side(path: str, role: str, what: str, clock: str | None = None, buffer: str | None = None,
              vcpu_tids: dict[int, int] | None = None, tsc_khz: int | None = None,
              lenient: bool = False, peer: Callable[[], dict[str, Any] | None] | None = None,
              calibration: dict[str, Any] | None = None, payloads: PayloadPolicy | None = None) -> Bundle | ForeignSide:
    """``path`` as the ``role`` side (``what`` names the option in errors): a bundle when it is one,
    else any trace tsalign reads. ``peer``: gives the other side's trace-cmd options, asked once this side is read
    (a host .dat's GUEST option names the vCPU threads of the guest whose trace id they hold). ``payloads``: which
    payloads to keep in memory (the others in a spill; default: all)."""
    if os.path.isdir(path):  # a directory is a bundle (Bundle.open names what is wrong with it)
        for opt, v in (("clock", clock), ("buffer", buffer)):
            if v is not None:
                raise InvalidParameter(f"--{role}-{opt}", v, f"no value for a tsalign bundle ({path} records its own)")
        b = Bundle.open(path, what)
        if calibration is not None:
            own = bool((b.manifest.get("clock") or {}).get("convertible"))
            if role != "guest" or b.domain not in ("sched_ns", "perf_ns") or own:
                raise InvalidParameter("--guest-calibration", path,
                                       "a guest bundle in ns of the local or perf clock that cannot be converted "
                                       f"otherwise (this one is {b.domain}"
                                       + (", convertible by its own perf page" if own else "") + ")")
            b.calibration = calibration
        b.payload_policy = payloads
        return b
    if not os.path.exists(path):
        raise InvalidParameter(what, path, "an existing tsalign bundle directory or trace file")
    if payloads is not None and role == "host" and not vcpu_tids:  # the vCPU threads may be inferred from these
        payloads = payloads.with_parsers({n: vcpu_field for n in VCPU_THREAD_EVENTS if n not in payloads.keep})
    ev, info, lost = _read(path, clock, buffer, lenient, payloads)
    if calibration is not None and not (role == "guest" and info.domain == "ns"):
        raise InvalidParameter("--guest-calibration", path, "a guest trace in ns of the local or perf clock (this one "
                               f"is {info.clock!r}, {info.domain}); a calibration converts only those")
    if info.domain != "tsc" and calibration is None:
        raise InvalidParameter(
            what, path, f"timestamps in TSC cycles; this trace's clock is {info.clock!r} ({info.domain}): record with "
            f"trace clock x86-tsc (`trace-cmd record -C x86-tsc`, tracefs trace_clock), or pass --{role}-clock x86-tsc "
            "if the file is labelled wrongly")
    notes = [m if m.startswith(path) else f"{path}: {m}" for m in (*info.warnings, *info.notes)]
    # ns of the local/perf clock stay ns here: align converts them with the calibration (align.guestclock)
    clock_doc = ({"trace_clock": info.clock, "domain": "perf_ns" if info.clock == "perf" else "sched_ns",
                  "convertible": False, "resolution_ns": info.resolution} if calibration is not None else
                 {"trace_clock": info.clock, "domain": f"{role}_tsc", "convertible": True})
    manifest: dict[str, Any] = {
        "role": role, "foreign": {"path": path, "format": info.format, "buffer": info.buffer},
        "clock": clock_doc, "node": {"tsc_khz": tsc_khz}, "lost_events": lost, "notes": notes,
        "tracecmd": info.meta.get("tracecmd", {}),
    }
    if role == "host":
        vcpus, how = _vcpu_threads(ev, vcpu_tids or {}, path, manifest["tracecmd"].get("guests", []),
                                   ((peer() if peer else None) or {}).get("trace_id"))
        manifest["vm"] = [{"name": os.path.basename(path.rstrip("/")) or path, "pid": None, "vm_fd": None,
                           "foreign": True, "vcpus": [{"id": v, "tid": t} for v, t in sorted(vcpus.items())]}]
        notes.append(f"vCPU threads {how}: " + ", ".join(f"vcpu{v}=tid {t}" for v, t in sorted(vcpus.items())))
        # when the capture started and stopped is unknown (its first event is later than its start): no
        # window, so no guest event is called outside it and no vCPU gap is assumed at either end
    return ForeignSide(path, role, manifest, ev, calibration, handover=payloads is not None)


def _read(path: str, clock: str | None, buffer: str | None, lenient: bool,
          payloads: PayloadPolicy | None = None) -> tuple[Events, Any, int]:
    """Every event of the trace as columns in time order (binary payloads printed as the kernel prints
    them), the trace's info (``meta["tracecmd"]``: a .dat's TRACEID, GUEST and TIME_SHIFT options), and
    the lost-page count."""
    from ..traces.events import EventsBuilder
    from ..traces.reader import open_trace

    out = EventsBuilder(payloads)
    with open_trace(path, "auto", clock, buffer, strict=not lenient) as t:
        t.arrow_payloads = True  # (EventsBuilder takes them as pyarrow strings)
        printer = None
        dat = getattr(t, "dat", None)
        if dat is not None:
            t.info.meta["tracecmd"] = {k: dat.options[k] for k in ("trace_id", "guests", "time_shift")
                                       if k in dat.options}
        try:
            for c in t.chunks():
                if not len(c):
                    continue
                if c.payload is None:
                    if printer is None:
                        from ..traces.printfmt import EventPrinter

                        assert dat is not None, "binary chunks come from a .dat"
                        printer = EventPrinter(dat.formats, dat.long_size, dat.endian == ">", path)
                    text = printer.payloads(c)
                    # the fields the policy parses, from the records (not their text) where the formats hold them
                    decoded = printer.fields(c, payloads.binary) if payloads is not None and payloads.binary else None
                else:
                    text, decoded = c.payload, None
                out.add_codes(c.ts, c.cpu, c.pid, c.tgid, out.recode(c.comm, t.comms.items, "comm"),
                              out.recode(c.event, t.events.items, "event", bare=True), text, decoded)
            if printer is not None and printer.bad:
                t.warn(f"{printer.bad} events with dynamic fields outside their record were not printed (corrupt?)")
        finally:
            if printer is not None:
                printer.close()
        return out.build(), t.info, t.lost_pages


def vcpu_field(text: Any) -> tuple[Any, Any, Any]:
    """(vCPU id (uint64), 0, whether the payload names one) of kvm_entry/kvm_exit/kvm_write_tsc_offset payloads (a
    pyarrow string array): a :class:`~tsalign.traces.spill.PayloadPolicy` parser, so that inferring the vCPU threads
    needs no payload held."""
    import numpy as np

    vcpus = [kv(p).get("vcpu") for p in text.to_pylist()]
    ok = np.asarray([v is not None and 0 <= v < 1 << 63 for v in vcpus], dtype=bool)
    return (np.asarray([v if o else 0 for v, o in zip(vcpus, ok.tolist())], dtype=np.uint64),
            np.zeros(len(vcpus), dtype=np.uint64), ok)


def _vcpu_threads(ev: Events, given: dict[int, int], path: str, guests: list[dict[str, Any]],
                  guest_id: int | None) -> tuple[dict[int, int], str]:
    """vCPU id -> host thread id, and how it was found."""
    if given:
        _check_given_threads(ev, given, path)
        return dict(given), "given (--vcpu-tid)"
    if guests:
        mine = [g for g in guests if g["trace_id"] == guest_id] or (guests if len(guests) == 1 else [])
        if not mine:
            named = ", ".join(f"{g['name']} (trace id {g['trace_id']:#x})" for g in guests)
            raise InvalidParameter("--vcpu-tid", "(none)",
                                   f"VCPU=TID for each vCPU: {path} names {len(guests)} guests in its GUEST options "
                                   f"({named}) and the guest trace is none of them")
        g = mine[0]
        return {v: pid for v, pid in g["vcpus"]}, f"from trace-cmd's GUEST option (guest {g['name']!r})"
    for name in VCPU_THREAD_EVENTS:
        seen: dict[int, set[int]] = defaultdict(set)
        rows = ev.rows(name)
        pairs: Iterable[tuple[int, int]]
        if name in ev.parsed and ev.fields is not None:  # parsed as read (vcpu_field): the text is in the spill
            ok = ev.fields[2][rows]
            pairs = zip(ev.fields[0][rows][ok].tolist(), ev.pid[rows][ok].tolist())
        else:
            pairs = ((v, pid) for pid, payload in zip(ev.pid[rows].tolist(), ev.payload[rows].tolist())
                     if (v := kv(payload).get("vcpu")) is not None)
        for v, pid in pairs:
            seen[v].add(pid)
        if not seen:
            continue
        shared = {v: sorted(t) for v, t in seen.items() if len(t) > 1}
        tids = [t for ts in seen.values() for t in ts]
        if shared or len(tids) != len(set(tids)):
            raise InvalidParameter(
                "--vcpu-tid", "(none)",
                f"VCPU=TID for each vCPU of the VM: in {path} several threads ran one vCPU id or one thread several "
                f"({name}: {dict(sorted((v, sorted(t)) for v, t in seen.items()))}; several VMs traced at once?)")
        return {v: next(iter(t)) for v, t in seen.items()}, f"inferred from {name}"
    raise InvalidParameter("--vcpu-tid", "(none)",
                           f"VCPU=TID for each vCPU: {path} holds no kvm_entry, kvm_exit or kvm_write_tsc_offset "
                           "event that names the VM's vCPU threads (record kvm:kvm_entry, or pass the threads: "
                           "`ps -T -p $(pidof qemu-system-x86_64)` lists them as 'CPU N/KVM')")


def _check_given_threads(ev: Events, given: dict[int, int], path: str) -> None:
    """Refuse a --vcpu-tid thread that ran no vCPU where the trace shows the threads that did (rows of events KVM
    traces in a vCPU's thread, by their pid: no payload read): a mistyped thread id would leave the vCPU without its
    runs and exits, and the alignment without that evidence."""
    import numpy as np

    rows = [ev.rows(name) for name in VCPU_CONTEXT_EVENTS]
    if not any(len(r) for r in rows):  # (nothing to check against)
        return
    ran = np.unique(np.concatenate([ev.pid[r] for r in rows]))
    idle = {v: t for v, t in given.items() if not np.isin(t, ran)}
    if idle:
        shown = ", ".join(map(str, ran[:8].tolist())) + (f" and {len(ran) - 8} more" if len(ran) > 8 else "")
        raise InconsistentData(
            "--vcpu-tid " + ", ".join(f"{v}={t}" for v, t in sorted(idle.items())) + f": {path} holds "
            f"{sum(map(len, rows))} events KVM traces in a vCPU's thread ({', '.join(VCPU_CONTEXT_EVENTS)}) and none "
            f"of them on that thread; the threads that ran a vCPU: {shown} (`ps -T -p $(pidof qemu-system-x86_64)` "
            "lists them as 'CPU N/KVM')")


def time_shift_snapshots(host: Any, guest: Any) -> tuple[list[OffsetSnapshot], list[str]]:
    """Per-vCPU offset snapshots from a trace-cmd guest file's TIME_SHIFT option (``trace-cmd record -A``:
    host ts = guest ts + offset, so the guest-minus-host offset is ``-offset``; each sample placed at
    its host time), and notes; nothing when the guest holds none."""
    ts = guest.manifest.get("tracecmd", {}).get("time_shift") if isinstance(guest.manifest.get("tracecmd"), dict) else None
    if not ts:
        return [], []
    host_id = host.manifest.get("tracecmd", {}).get("trace_id") if isinstance(host.manifest.get("tracecmd"), dict) else None
    if host_id is not None and ts["peer"] != host_id:
        raise InconsistentData(f"{guest.path}: its TIME_SHIFT belongs to the host session with trace id {ts['peer']:#x}, "
                               f"but {host.path} is trace id {host_id:#x}: files of different trace-cmd sessions")
    snaps: list[OffsetSnapshot] = []
    for vcpu, cpu in enumerate(ts["cpus"]):
        for t, off, scaling, frac in zip(cpu["ts"], cpu["offset"], cpu["scaling"], cpu["frac"]):
            if scaling != 1 and not (0 < frac < 64 and scaling == 1 << frac):
                raise InvalidParameter("--guest", guest.path,
                                       f"TIME_SHIFT samples without TSC scaling (vcpu{vcpu} has scaling {scaling}, "
                                       f"fraction bits {frac}): trace-cmd's scaled correction is not the kernel's "
                                       "relation; pass the offsets with --tsc-offset")
            o = -off
            snaps.append(OffsetSnapshot((t - o) % (1 << 64), vcpu, TscParams(o % (1 << 64)), "trace-cmd TIME_SHIFT"))
    varies = len({s.params.offset for s in snaps}) > len(ts["cpus"])
    how = ("trace-cmd interpolates between them, tsalign holds each until the next"
           if ts["flags"] & TSYNC_INTERPOLATE and varies else "each held until the next")
    note = (f"guest offsets from trace-cmd's TIME_SHIFT in {guest.path}: {len(snaps)} samples on "
            f"{len(ts['cpus'])} vCPU(s), {how}")
    return snaps, [note]
