"""Capture verbs: ``tsalign capture``, ``tsalign align``, ``tsalign selftest``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from .. import exitcodes
from ..align.merge import align
from ..capture.capture import DEFAULT_GUEST_EVENTS, DEFAULT_HOST_EVENTS, Capture
from ..capture.microvm import IRQ_INTERVAL_S, RUN_TIMEOUT_S
from ..capture.tracefs import parse_events
from ..errors import InvalidParameter
from ..node import kvmvms
from ..node.fs import Root
from ..numbers import MAX_SECONDS
from ..outdir import output_dir
from ..verdicts import exit_code
from . import emit
from .inputs import (
    add_input_options,
    add_progress_option,
    open_inputs,
    parse_tsc_offsets,
    progress_of,
)

__all__ = ["register", "render_selftest", "term_as_interrupt"]


def register(sub: Any) -> None:
    p = sub.add_parser("capture", help="capture host or guest events on the TSC into a bundle",
                       description="Record trace events in a private tracefs instance (trace clock x86-tsc) with "
                                   "per-vCPU TSC offset snapshots at start and end. SIGINT/SIGTERM end the capture "
                                   "early and still write the bundle; a second signal aborts (nothing left behind).")
    p.add_argument("--out", required=True, help="new bundle directory")
    p.add_argument("--role", choices=("host", "guest"), default="host")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--vm", action="append", default=None,
                   help="host role: the VM (libvirt/QEMU name) whose offsets to snapshot; repeatable (one capture of "
                        "several VMs: align and analyze pick one with --vm; default: every VM of the host)")
    g.add_argument("--pid", type=int, help="host role: the VM process id")
    p.add_argument("--skip-missing-vms", action="store_true",
                   help="host role, several --vm: capture those that run, with a note naming the others (default: "
                        "a name that no running VM has is an error)")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until SIGINT/SIGTERM)")
    p.add_argument("--events", help="comma-separated system:event list (default depends on --role)")
    p.add_argument("--clock", choices=("x86-tsc", "perf", "local"), default="x86-tsc",
                   help="x86-tsc: TSC cycles (default); perf: perf/local_clock ns plus the perf user page; local "
                        "(guest): sched_clock ns of a kvm-clock guest, converted by align with the host's pvclock "
                        "records or a calibration (microsecond resolution in the bundle's text)")
    p.add_argument("--buffer-kb", type=int, default=4096, help="per-CPU ring buffer size in KiB")
    p.add_argument("--memory-offsets", choices=("auto", "on", "off"), default="auto",
                   help="host role: also read each vCPU's TSC offset from kernel memory with drgn (/proc/kcore; types "
                        "from BTF or debug info) at start and end: auto (where it works; a note says why not), on, off")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_capture)

    p = sub.add_parser("align", help="merge host and guest (bundles or TSC traces: .dat, ftrace text) on the guest "
                                     "TSC axis, with a verdict",
                       description="Merge on the guest TSC axis and judge the result by independent evidence "
                                   "(vCPU runs, MSR writes, beacons, IRQ injections). Exit 0 pass, 1 fail, "
                                   "6 warn, 7 unverified (no evidence).")
    add_input_options(p)
    p.add_argument("-o", "--out", default=None, help="output directory (default: <guest>/../aligned)")
    p.add_argument("--ignore-offset-changes", action="store_true",
                   help="use each vCPU's first offset snapshot for the whole capture (what a one-snapshot alignment "
                        "would get)")
    p.add_argument("--outputs", type=_outputs_arg, default=None, metavar="LIST",
                   help="the timeline's outputs, comma-separated: jsonl (timeline.jsonl), parquet (timeline.parquet), "
                        "perfetto (trace.perfetto-trace), or none (verdict.json and offsets.jsonl only). Default: all, "
                        "perfetto where the TSC frequency is known. Long captures: JSON lines take ~210 bytes an "
                        "event and the longest to write; parquet holds the same rows in a twentieth of that")
    p.add_argument("--window", metavar="FROM:TO",
                   help="the timeline's files hold only the events from FROM to TO seconds after the first (decimals; "
                        "10:12.5, :30, 100:); the verdict still judges them all")
    p.add_argument("--window-tsc", metavar="FROM:TO", help="the same window in guest TSC cycles (as guest_tsc shows)")
    p.add_argument("--only", metavar="EVENTS",
                   help="the timeline's files hold only these events (comma-separated names, kvm_exit or "
                        "kvm:kvm_exit; host and guest); the verdict still judges them all")
    add_progress_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_align)

    p = sub.add_parser("selftest", help="prove alignment on this host with tsalign's own micro-VM")
    p.add_argument("--beacons", type=int, default=1000, help="at least this many TSC beacons (default 1000)")
    p.add_argument("--irqs", type=int, default=50, help="interrupts to inject (default 50)")
    p.add_argument("--request-offset", default="-1000000000000",
                   help="TSC offset (cycles) to request from KVM, or 'none' (default -1e12)")
    p.add_argument("--out", default=None, help="output directory (default out/selftest, or out/selftest-N when "
                   "that holds an earlier selftest)")
    p.add_argument("--guest-clock", choices=("tsc", "kvmclock"), default="tsc",
                   help="kvmclock: give the micro-VM a kvm-clock and stamp its events in kvm-clock ns (as a kvm-clock "
                        "Linux guest's trace); align converts them back with the host's traced pvclock records")
    p.add_argument("--memory-offsets", choices=("auto", "on", "off"), default="auto",
                   help="host role: also read each vCPU's TSC offset from kernel memory with drgn (/proc/kcore; types "
                        "from BTF or debug info) at start and end: auto (where it works; a note says why not), on, off")
    p.add_argument("--kprobe", action="store_true",
                   help="also record tsalign's kprobe (tsalign kprobe register): its hits become offset snapshots")
    p.add_argument("--no-align", action="store_true",
                   help="record the host and guest bundles only (standard library; align them with `tsalign align`)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_selftest_cli)
    register_microvm(sub)


class _Stopper:
    """First SIGINT/SIGTERM: end the capture early (the bundle is still written); second: abort."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stopper:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt(f"signal {signum} again: aborting")
        self.signal = signum
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def term_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt (as SIGINT already is) so every cleanup path runs."""
    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _one_vm(vms: list[kvmvms.VmInfo], name: str) -> kvmvms.VmInfo:
    """The running VM called ``name``; errors name what is wrong."""
    found = [v for v in vms if v.name == name]
    if not found:
        raise InvalidParameter("--vm", name, "the name of a running VM (tsalign offsets lists them)")
    if len(found) > 1:
        raise InvalidParameter("--vm", name, "the name of one VM: VM processes "
                               f"{', '.join(str(v.pid) for v in found)} share it; choose one with --pid")
    return found[0]


def run_capture(args: argparse.Namespace) -> int:
    if args.role == "guest" and (args.vm or args.pid):
        raise InvalidParameter("--vm/--pid", args.vm or args.pid, "nothing with --role guest (they select a VM on a host)")
    if args.duration is not None and not 0 < args.duration <= MAX_SECONDS:  # (NaN, inf too)
        raise InvalidParameter("--duration", args.duration, "a finite positive number of seconds (at most a year)")
    if not 4 <= args.buffer_kb <= 1 << 22:
        raise InvalidParameter("--buffer-kb", args.buffer_kb, "a per-CPU ring buffer size from 4 to 4194304 KiB")
    events = parse_events(args.events) if args.events is not None else list(
        DEFAULT_HOST_EVENTS if args.role == "host" else DEFAULT_GUEST_EVENTS)
    vms: list[kvmvms.VmInfo] = []
    notes: list[str] = []
    if args.role == "host":
        vms = kvmvms.discover_vms(Root(), args.pid)
        if args.vm:
            running = {v.name for v in vms}
            missing = [n for n in dict.fromkeys(args.vm) if n not in running]
            if args.skip_missing_vms and len(missing) < len(set(args.vm)):
                notes.extend(f"VM {n!r} is not running on this host: not captured (--skip-missing-vms)" for n in missing)
            else:
                missing = []
            vms = [_one_vm(vms, name) for name in dict.fromkeys(args.vm) if name not in missing]
        if args.pid is not None and not vms:
            emulated = kvmvms.emulated_vm(Root(), args.pid)
            if emulated is None:
                raise InvalidParameter("--pid", args.pid, "the pid of a running KVM VM process (tsalign offsets), or of a QEMU TCG one "
                                       "started with -name NAME,debug-threads=on (vCPU threads named 'CPU N/TCG')")
            vms = [emulated]
    with _Stopper() as stopper, Capture(args.out, args.role, events, args.clock, args.buffer_kb, vms,
                                                memory=args.memory_offsets) as cap:
        cap.notes.extend(notes)
        cap.start()
        # on stderr (stdout stays one document): a job waits for this before it starts the guests (capture.yml)
        progress({"event": "recording", "role": args.role, "started_tsc": cap.started_tsc})
        stopper.event.wait(args.duration)
        cap.stop()
        manifest = cap.finish({"stopped_by_signal": stopper.signal or None})
    lines = [(f"bundle {args.out}: role {args.role}, clock {manifest['clock']['trace_clock']} "
             f"({manifest['clock']['domain']}), {sum(s['entries'] for s in manifest['stats'])} events, "
             f"{manifest['lost_events']} lost, {len(manifest['offsets']['snapshots'])} offset snapshots, "
             f"{manifest['duration_s']} s")]
    if not manifest["clock"].get("convertible", True):
        lines.append(f"note: {manifest['clock']['reason']}")
    lines.extend(f"note: {n}" for n in manifest.get("notes", []))
    emit(args, {"bundle": args.out, "manifest": manifest}, lines)
    return exitcodes.OK


def _outputs_arg(text: str) -> tuple[str, ...]:
    """``--outputs``: names of the timeline's outputs, comma-separated, or ``none``."""
    from ..align.merge import TIMELINE_OUTPUTS

    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    bad = [n for n in names if n not in TIMELINE_OUTPUTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give names among {', '.join(TIMELINE_OUTPUTS)}, comma-separated, "
                                         "or none")
    return tuple(names)


def run_align(args: argparse.Namespace) -> int:
    from ..align.selection import (
        Selection,
        parse_only,
        parse_seconds_window,
        parse_tsc_window,
        selected_rows,
    )
    from ..verify.judge import (  # numpy: not needed by `capture` on a guest
        judge_and_write,
        payload_policies,
    )

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.guest)), "aligned")
    given = parse_tsc_offsets(args.tsc_offset)
    selection = Selection(parse_seconds_window(args.window) if args.window is not None else None,
                          parse_tsc_window(args.window_tsc) if args.window_tsc is not None else None,
                          parse_only(args.only) if args.only is not None else None)
    with output_dir(out, "-o/--out"):  # made before the read: a long read does not end in an unwritable -o
        progress = progress_of(args, "align")
        # only the payloads the verdict reads are held; the others wait in spills until the outputs are written
        host, guest = open_inputs(args, payload_policies())
        aligned = align(host, guest, given or None, "user (--tsc-offset)", args.ignore_offset_changes, progress)
        del host, guest  # their columns are in the alignment's now: free the rest before the verdict's peak
        rows = None
        if selection:  # (its names and seconds checked before the verdict's minutes)
            rows = selected_rows(aligned.columns, selection, aligned.tsc_khz)
        verdict, paths = judge_and_write(aligned, out, args.outputs, progress, rows)
    progress("done")
    public = {k: v for k, v in verdict.items() if not k.startswith("_")}
    public["artifacts"] = paths
    lines = [f"verdict: {verdict['verdict']}", *(f"  {r}" for r in verdict["reasons"]),
             f"events: host {aligned.host_count}, guest {aligned.guest_count}, merged {len(aligned.columns)}",
             (f"offset sources: {', '.join(verdict['offsets']['sources'])}; changes seen: "
             f"{verdict['offsets']['changes_seen']}; issues: {len(verdict['offsets']['issues'])}"),
             (f"evidence: {verdict['brackets']['checked']} items checked, {verdict['brackets']['violated']} violated; "
             f"kinds found: {', '.join(verdict['evidence']['kinds_found']) or 'none'}"),
             *render_evidence(verdict["evidence"]),
             *([f"timeline cut: {rows[1]['rows']} of {rows[1]['of']} events in its files"
                + (f"; guest TSC {rows[1]['window_guest_tsc']}" if "window_guest_tsc" in rows[1] else "")
                + (f"; only {', '.join(rows[1]['only'])}" if "only" in rows[1] else "")] if rows else []),
             *(f"artifact: {p}" for p in paths.values())]
    emit(args, public, lines)
    return exit_code(verdict["verdict"])


def render_evidence(ev: dict[str, Any]) -> list[str]:
    """Per-vCPU lines: interval, width, detection thresholds, offsets in use."""
    lines = []
    for v in ev["per_vcpu"]:
        lo, hi = v["delta_interval"]
        oi = v["offset_interval"]
        used = v["offset_in_use"]
        lines.append(f"  vcpu{v['vcpu']}: {v['checked']} checked, {v['violated']} violated; offset in use "
                     f"{used['values'][0] if used['distinct'] == 1 else str(used['distinct']) + ' values'} "
                     f"({', '.join(used['sources'])}); allowed error [{lo}, {hi}] cycles"
                     + (f", offset interval {oi}" if oi else "")
                     + (f", width {v['width_cycles']} cycles ({v['width_ns']} ns)" if v["width_cycles"] is not None else ""))
        for kind, k in v["evidence"].items():
            w = k.get("bracket_width_cycles", {})
            lines.append(f"    {kind}: {k['checked']} checked, {k['violated']} violated, interval {k['delta_interval']}, "
                         f"bracket width median {w.get('median')} p99 {w.get('p99')}")
    lines += [f"  note: {n}" for n in ev["notes"]]
    return lines


def render_selftest(r: dict[str, Any]) -> list[str]:
    """Text lines of a selftest report."""
    b, o, i = r["beacons"], r["offsets"], r["irq"]
    rc, rn = b["residual_cycles"], b["residual_ns"]
    lc, ln = i["latency_cycles"], i["latency_ns"]
    lines = [
        f"tsalign selftest: verdict {r['verdict'].upper()}  (tsc {r['tsc_khz']} kHz)",
        (f"  beacons: {b['count']} matched of {b['sent']}; residual host-exit minus guest rdtsc, cycles "
        f"min/median/p99/max = {rc['min']}/{rc['median']}/{rc['p99']}/{rc['max']} "
        f"(ns {rn['min']}/{rn['median']}/{rn['p99']}/{rn['max']}); violations {b['violations']}"),
        (f"  offsets: debugfs {o['debugfs']}, requested {o['requested']}, evidence allows "
        f"{o['measured_interval']}; debugfs inside: {o['debugfs_equals_measured']}; "
        f"requested applied: {o['requested_applied']}"),
        (f"  irq: {i['count']} handled of {i['injections']} injected; kvm_set_irq -> guest handler, cycles "
        f"min/median/p99/max = {lc['min']}/{lc['median']}/{lc['p99']}/{lc['max']} "
        f"(ns {ln['min']}/{ln['median']}/{ln['p99']}/{ln['max']})"),
    ]
    lines += render_evidence(r["evidence"])
    lines += [f"  reason: {x}" for x in r["reasons"]] + [f"  note: {x}" for x in r["notes"]]
    if "timing" in r:
        lines.append(f"  wall time {r['timing']['wall_s']} s")
    lines += [f"  {k}: {v}" for k, v in r["artifacts"].items()]
    return lines


#: IRQs a selftest may inject: the micro-VM raises one every IRQ_INTERVAL_S at the most and gives up after
#: RUN_TIMEOUT_S; two thirds of that time, the rest left to its beacons
MAX_SELFTEST_IRQS = int(RUN_TIMEOUT_S / IRQ_INTERVAL_S) * 2 // 3


def run_selftest_cli(args: argparse.Namespace) -> int:
    if args.beacons < 1 or not 0 <= args.irqs <= MAX_SELFTEST_IRQS:
        raise InvalidParameter("--beacons/--irqs", (args.beacons, args.irqs),
                               f"--beacons >= 1 and --irqs from 0 to {MAX_SELFTEST_IRQS} (one every "
                               f"{IRQ_INTERVAL_S * 1000:g} ms or more, within the micro-VM's {RUN_TIMEOUT_S:g} s)")
    from ..numbers import parse_int
    from ..verify.selftest import run_selftest

    req = None if args.request_offset.lower() == "none" else parse_int(args.request_offset, "--request-offset")
    if args.out is None:  # the default never refuses: a new directory next to the earlier runs
        args.out = "out/selftest"
        n = 1
        while os.path.exists(os.path.join(args.out, "host")):
            n += 1
            args.out = f"out/selftest-{n}"
    elif os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InvalidParameter("--out", args.out, "a directory (this is a file)")
    with term_as_interrupt():
        report = run_selftest(args.out, args.beacons, args.irqs, req, judge=not args.no_align,
                              kvmclock=args.guest_clock == "kvmclock", memory=args.memory_offsets, kprobe=args.kprobe)
    if args.no_align:
        a = report["artifacts"]
        emit(args, report, [(f"host bundle {a['host_bundle']}, guest bundle {a['guest_bundle']} "
                            f"({report['run']['beacons']} beacons, {report['run']['irqs']} IRQs); "
                            f"tsalign align --host {a['host_bundle']} --guest {a['guest_bundle']}")])
        return exitcodes.OK
    emit(args, report, render_selftest(report))
    return exit_code(report["verdict"])


def register_microvm(sub: Any) -> None:
    p = sub.add_parser("microvm", help="run tsalign's micro-VM for a while (a real KVM VM to capture)",
                       description="Run the micro-VM (beacons, optional IRQs) until --seconds pass or SIGINT/SIGTERM; "
                                   "`tsalign offsets` and `tsalign capture --vm NAME` see it under --name.")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--name", default="tsalign-microvm", help="name `tsalign offsets`/`capture --vm` know it by")
    p.add_argument("--irq-every", type=int, default=0, help="inject an IRQ every N beacons batches (0: none)")
    p.add_argument("--pause-ms", type=float, default=10.0,
                   help="milliseconds between batches of 200 beacons (a lighter VM: more; many VMs on a small host)")
    p.add_argument("--guest-out", default=None, metavar="FILE",
                   help="write the guest's events (beacons and their MSR writes, on the guest TSC) as ftrace text, a "
                        "guest trace `tsalign align --guest FILE` reads")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_microvm)


def run_microvm(args: argparse.Namespace) -> int:
    import time

    from ..capture.microvm import MicroVM

    if not 0 < args.seconds <= MAX_SECONDS:  # (NaN, inf too: NaN ran for no time, exit 0)
        raise InvalidParameter("--seconds", args.seconds, "a positive number of seconds (at most a year)")
    if not 0 <= args.irq_every <= 1_000_000:
        raise InvalidParameter("--irq-every", args.irq_every, "a number of beacon batches from 0 (no IRQs) to 1000000")
    if not 0 <= args.pause_ms <= 60_000:
        raise InvalidParameter("--pause-ms", args.pause_ms, "milliseconds from 0 to 60000")
    beacons = irqs = 0
    from ..capture.microvm import BEACON_PORT_LO, MSR_BEACON

    try:
        out = open(args.guest_out, "w", encoding="utf-8") if args.guest_out else None  # noqa: SIM115 - closed below
    except OSError as e:
        raise InvalidParameter("--guest-out", args.guest_out, f"a file this user can write ({e.strerror})") from None
    with _Stopper() as stopper, MicroVM() as vm, (out or contextlib.nullcontext()):
        progress({"event": "started", "pid": os.getpid(), "vm_fd": vm.vm_fd, "name": args.name})
        end = time.monotonic() + args.seconds
        batch = 0
        while time.monotonic() < end and not stopper.event.is_set():
            n_irq = 1 if args.irq_every and batch % args.irq_every == 0 else 0
            res = vm.run(beacons=200, irqs=n_irq, irq_interval_s=0.001)
            if out is not None:  # the trace a guest's tracefs would hold, one line per event, in TSC order
                out.writelines(f"microvm-0 [000] {b.guest_tsc}: tsalign_beacon: seq={b.seq} port={BEACON_PORT_LO:#x}\n"
                               f"microvm-0 [000] {b.guest_tsc}: tsalign_msr: msr={MSR_BEACON:#x} value={b.guest_tsc:#x}\n"
                               for b in res.beacons)
            beacons += len(res.beacons)
            irqs += len(res.irq_beacons)
            batch += 1
            time.sleep(args.pause_ms / 1000)
    emit(args, {"name": args.name, "pid": os.getpid(), "beacons": beacons, "irqs": irqs},
         [f"micro-VM {args.name}: {beacons} beacons, {irqs} interrupts"])
    return exitcodes.OK


def progress(doc: dict[str, Any]) -> None:
    """A progress line on stderr (stdout stays one JSON document with --json)."""
    import sys

    sys.stderr.write(json.dumps(doc) + "\n")
    sys.stderr.flush()
