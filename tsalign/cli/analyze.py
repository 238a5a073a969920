"""``tsalign analyze irq|vcpu|io`` (latency analyses on an aligned host+guest timeline) and
``tsalign beacons`` (guest side: port beacons that measure an emulated VM's TSC offset)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .. import exitcodes
from ..catalogue import ANALYSES
from ..errors import InvalidParameter
from . import emit
from .inputs import (
    add_input_options,
    add_progress_option,
    open_inputs,
    parse_tsc_offsets,
    progress_of,
)

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("analyze", help="latency analyses on aligned host+guest bundles: irq, vcpu, io",
                       description="irq: host IRQ injection -> guest handler latency; vcpu: host preemption of vCPU "
                                   "threads -> the guest task running then; io: guest block request -> host IO of the "
                                   "VM process -> guest completion. Writes report.json, report.html and "
                                   "trace.perfetto-trace to --out.")
    p.add_argument("kind", choices=ANALYSES)
    add_input_options(p)
    p.add_argument("--guest-offset", help="TSC offset of the guest when KVM holds none (emulated VM): cycles "
                                          "(0x... or signed, as --tsc-offset N), or 'beacons' to measure it from "
                                          "`tsalign beacons` markers")
    p.add_argument("-o", "--out", help="report directory (default: <guest>/../analysis-KIND)")
    p.add_argument("--top", type=int, default=10, help="vcpu: how many guest tasks to rank")
    add_progress_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_analyze)

    p = sub.add_parser("beacons", help="guest: send TSC beacons through an I/O port (emulated VMs' offset)",
                       description="Run inside the guest while `tsalign capture --role guest` runs; the host capture "
                                   "needs syscalls:sys_enter_write,syscalls:sys_enter_writev, and the port its own chardev "
                                   "(qemu -serial file:F).")
    p.add_argument("--port", type=lambda s: int(s, 0), default=0x2F8, help="I/O port (default 0x2f8, COM2 data)")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--interval", type=float, default=0.002, help="seconds between beacons")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_beacons)


def run_beacons(args: argparse.Namespace) -> int:
    from ..node.beacon import markers, send_beacons

    if not 1 <= args.count <= 10_000_000:
        raise InvalidParameter("--count", args.count, "from 1 to 10000000 beacons")
    if not 0 <= args.interval <= 60:  # (NaN too)
        raise InvalidParameter("--interval", args.interval, "seconds between beacons, from 0 to 60")
    found = markers()
    got = send_beacons(args.port, args.count, args.interval)
    doc = {"sent": len(got), "port": args.port, "markers": found,
           "first": list(got[0]) if got else None, "last": list(got[-1]) if got else None}
    lines = [f"sent {len(got)} beacons through port {args.port:#x}; written to {len(found)} capture instance(s)"]
    if not found:
        lines.append("note: no tsalign capture is running here: the beacons reached no trace (start "
                     "`tsalign capture --role guest` first)")
    emit(args, doc, lines)
    return exitcodes.OK if found else exitcodes.VERDICT_WARN


def run_analyze(args: argparse.Namespace) -> int:
    if not 1 <= args.top <= 100_000:  # (a negative count sliced the ranking from its end, silently)
        raise InvalidParameter("--top", args.top, "a number of guest tasks to rank, 1 to 100000")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.guest)), f"analysis-{args.kind}")
    from ..analyze.run import reads
    from ..outdir import output_dir
    from ..verify.judge import payload_policies

    given = parse_tsc_offsets(args.tsc_offset)
    with output_dir(out, "-o/--out"):  # made before the read: a long read does not end in an unwritable -o
        progress = progress_of(args, "analyze")
        # only the payloads the verdict and the analysis read are held; the others wait in spills for the Perfetto
        # trace
        inputs = open_inputs(args, payload_policies(reads(args.kind)))
        from ..pipeline.analysis import analyze_bundles

        doc, res = analyze_bundles(args.kind, args.host, args.guest, out, args.guest_offset, args.top, inputs, given,
                                   progress)
    progress("done")
    if args.json:
        emit(args, doc, [])
    else:
        from ..report.terminal import render_terminal

        render_terminal(doc)
        for k, v in doc["artifacts"].items():
            sys.stdout.write(f"{k}: {v}\n")
    if res.needs:
        return exitcodes.UNAVAILABLE
    from ..verdicts import exit_code

    return exit_code(doc["alignment"]["verdict"])
