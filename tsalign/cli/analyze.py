"""``tsalign analyze irq|vcpu|io`` (latency analyses on an aligned host+guest timeline) and
``tsalign beacons`` (guest side: port beacons that measure an emulated VM's TSC offset)."""

from __future__ import annotations

import argparse
import json
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

__all__ = ["analyze_bundles", "register"]


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


def _offset(given: str | None, host: Any, guest: Any) -> tuple[Any, dict[str, Any] | None]:
    from ..align.merge import select_vm
    from ..align.portbeacons import guest_beacons, host_port_writes, measure
    from ..clock.kvm import TscParams
    from ..numbers import parse_offset

    if not given:
        return None, None
    if given != "beacons":
        p = TscParams(parse_offset(given, "--guest-offset"))
        return p, {"offset": p.offset, "source": "user (--guest-offset)"}
    vm = select_vm(host, guest)
    tids = {v["tid"] for v in vm.get("vcpus", []) if v.get("tid")}
    bo = measure(guest_beacons(guest.records()), host_port_writes(host.records(), tids))
    return TscParams(bo.offset), bo.to_dict()


def analyze_bundles(kind: str, host_path: str, guest_path: str, out: str, guest_offset: str | None = None,
                    top: int = 10, inputs: tuple[Any, Any] | None = None,
                    given: dict[int | None, Any] | None = None, progress: Any = None) -> tuple[dict[str, Any], Any]:
    """Align two inputs (bundles, or ``inputs`` opened by :func:`~tsalign.cli.inputs.open_inputs`), run
    analysis ``kind`` and write its reports to ``out``; (document, result). ``given``: offsets per vCPU
    (``--tsc-offset``). ``progress``: told as each step starts (:mod:`tsalign.progress`)."""
    from ..align.merge import align
    from ..analyze.run import analyze
    from ..traces.bundle import Bundle
    from ..verify.judge import verdict_of

    host, guest = inputs or (Bundle.open(host_path, "--host"), Bundle.open(guest_path, "--guest"))
    if guest_offset and given:
        raise InvalidParameter("--guest-offset", guest_offset, "either --guest-offset or --tsc-offset, not both")
    params, offset_doc = _offset(guest_offset, host, guest)
    if given:
        offset_doc = {"offsets": {("all" if k is None else k): p.signed_offset for k, p in given.items()},
                      "source": "user (--tsc-offset)"}
    a = align(host, guest, given or ({None: params} if params is not None else None),
              offset_doc["source"] if offset_doc else "user", progress=progress)
    say = progress or (lambda _: None)
    say(f"merged {len(a.columns):,} events; judging the alignment by its evidence")
    verdict = verdict_of(a)
    say(f"verdict {verdict['verdict']}; running the {kind} analysis")
    khz = a.tsc_khz
    res = analyze(kind, a.columns, khz, a.tid_to_vcpu, a.vm.get("pid"), top)
    say(f"writing its reports in {out}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise InvalidParameter("--out", out, "a directory")
    os.makedirs(out, exist_ok=True)
    doc = res.to_dict()
    doc["alignment"] = {"verdict": verdict["verdict"], "reasons": verdict["reasons"], "guest_offset": offset_doc,
                        "evidence": verdict["evidence"],
                        "events": {"host": a.host_count, "guest": a.guest_count}, "tsc_khz": khz}
    doc["artifacts"] = _write(out, doc, res, a, khz, {"host": host_path, "guest": guest_path,
                                                      "alignment": verdict["verdict"],
                                                      "offset": offset_doc["source"] if offset_doc else "from the host bundle"})
    return doc, res


def run_analyze(args: argparse.Namespace) -> int:
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.guest)), f"analysis-{args.kind}")
    from ..analyze.run import reads
    from ..verify.judge import payload_policies

    # only the payloads the verdict and the analysis read are held; the others wait in spills for the Perfetto trace
    inputs = open_inputs(args, payload_policies(reads(args.kind)))
    progress = progress_of(args, "analyze")
    doc, res = analyze_bundles(args.kind, args.host, args.guest, out, args.guest_offset, args.top, inputs,
                               parse_tsc_offsets(args.tsc_offset), progress)
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


#: the files :func:`_write` writes in its directory
REPORT_FILES = ("report.json", "report.html", "trace.perfetto-trace")


def _write(out: str, doc: dict[str, Any], res: Any, a: Any, khz: int, inputs: dict[str, Any]) -> dict[str, str]:
    """The analysis' reports in ``out``, all or none (a full disk, a directory in the way: exit 4)."""
    from ..align.merge import all_or_none

    return all_or_none(out, REPORT_FILES, "the analysis' reports", lambda: _write_reports(out, doc, res, a, khz, inputs))


def _write_reports(out: str, doc: dict[str, Any], res: Any, a: Any, khz: int, inputs: dict[str, Any]) -> dict[str, str]:
    from ..report.html import render_html

    paths = {"json": os.path.join(out, "report.json"), "html": os.path.join(out, "report.html")}
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump({**doc, "artifacts": paths}, f, indent=1)
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(render_html(doc, res.rows, res.slices, khz, inputs))
    if khz:
        from ..report.perfetto import write_perfetto

        paths["perfetto"] = os.path.join(out, "trace.perfetto-trace")
        write_perfetto(paths["perfetto"], a.columns, khz, res.slices)
    return paths
