"""An analysis job, from two inputs to its reports: align them, judge the alignment, run one analysis (irq, vcpu,
io) on the timeline and write report.json, report.html and the Perfetto trace — what ``tsalign analyze`` and
``tsalign demo`` run (library code: the CLI only parses its options and prints)."""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import InvalidParameter
from ..progress import Step

__all__ = ["REPORT_FILES", "analyze_bundles"]


def analyze_bundles(kind: str, host_path: str, guest_path: str, out: str, guest_offset: str | None = None,
                    top: int = 10, inputs: tuple[Any, Any] | None = None,
                    given: dict[int | None, Any] | None = None, progress: Step | None = None) -> tuple[dict[str, Any], Any]:
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
    params, offset_doc = measured_offset(guest_offset, host, guest)
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
    doc["artifacts"] = write_reports(out, doc, res, a, khz, {
        "host": host_path, "guest": guest_path, "alignment": verdict["verdict"],
        "offset": offset_doc["source"] if offset_doc else "from the host bundle"})
    return doc, res


def measured_offset(given: str | None, host: Any, guest: Any) -> tuple[Any, dict[str, Any] | None]:
    """The guest offset ``given`` (--guest-offset: cycles, or ``beacons`` to measure it from the port beacons of both
    inputs) and where it came from; (None, None) when none is given."""
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


#: the files :func:`write_reports` writes in its directory
REPORT_FILES = ("report.json", "report.html", "trace.perfetto-trace")


def write_reports(out: str, doc: dict[str, Any], res: Any, a: Any, khz: int, inputs: dict[str, Any]) -> dict[str, str]:
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
