"""``tsalign demo``: the main job end to end on the embedded default.

Runs the selftest (micro-VM + capture + align + verify) on this host. Where /dev/kvm or tracefs
cannot be used it aligns and verifies the real capture bundle shipped in ``examples/selftest``
(recorded on a machine of the project's kind by ``tsalign selftest``) and says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any

from ..errors import InvalidParameter, Unavailable
from ..node.mounts import mount_missing
from ..outdir import make_dir
from ..pipeline.demo import SHIPPED, shipped_report
from ..verdicts import exit_code
from . import emit
from .capture import render_selftest, term_as_interrupt

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the main job end to end (selftest; shipped bundle as fallback)")
    p.add_argument("--out", default="out/demo", help="directory for the report (replaced; default out/demo)")
    p.add_argument("--shipped", action="store_true", help="use the shipped bundle even where KVM works")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if os.path.isdir(args.out) and os.listdir(args.out):
        if not os.path.exists(os.path.join(args.out, "report.json")):
            raise InvalidParameter("--out", args.out, "a new directory or an earlier demo's (it has no report.json)")
        shutil.rmtree(args.out)  # an earlier demo's output: replaced
    make_dir(args.out, "--out")
    fallback = None
    mounted = [] if args.shipped else mount_missing()
    if args.shipped:
        fallback = "--shipped given"
    else:
        from ..verify.selftest import run_selftest

        try:
            with term_as_interrupt():
                report = run_selftest(args.out)
        except (Unavailable, PermissionError) as e:
            fallback = str(e)
            shutil.rmtree(args.out)
            os.makedirs(args.out)
    if fallback is not None:
        report = shipped_report(args.out)
        report["source"] = f"shipped bundle {SHIPPED} (live selftest not possible here: {fallback})"
    else:
        report["source"] = "live selftest on this host"
    report["notes"] = mounted + report.get("notes", [])
    lines = [f"source: {report['source']}", *render_selftest(report)]
    # the analysis aligned timestamps exist for, on the same bundles: IRQ injection -> guest handler
    arts = report.get("artifacts", {})
    if arts.get("host_bundle") and arts.get("guest_bundle"):
        from ..pipeline.analysis import analyze_bundles

        doc, _ = analyze_bundles("irq", arts["host_bundle"], arts["guest_bundle"], os.path.join(args.out, "analysis-irq"))
        arts["analysis_irq"] = doc["artifacts"]["html"]
        lat = doc["summary"].get("latency", {}).get("ns", {})
        lines.append(f"IRQ analysis: {doc['summary'].get('matched', 0)} injections matched, median latency "
                     f"{lat.get('median')} ns; report {doc['artifacts']['html']}")
    emit(args, report, lines)
    return exit_code(report["verdict"])
