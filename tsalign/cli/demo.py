"""``tsalign demo``: the main job end to end on the embedded default.

Until the selftest lands this walks the perf-prof note's conversion: host TSC -> guest TSC with
the offset its kprobe printed (0xffee6aba03eccaac), showing that the offset is negative, then an
offset timeline where the tracepoint claims a change debugfs never shows.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .. import exitcodes
from ..clock import TscParams, guest_to_host_tsc, host_to_guest_tsc
from ..offsets import OffsetSnapshot, OffsetTimeline, OffsetWrite
from . import emit

__all__ = ["register"]

SEED_OFFSET = 0xFFEE6ABA03ECCAAC


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the main job end to end on the embedded default")
    p.add_argument("--out", default="out/demo", help="directory for the report (default out/demo)")
    p.add_argument("--json", action="store_true", help="write one JSON document to stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    p = TscParams(offset=SEED_OFFSET)
    host = [5_000_000_000_000_000, 5_000_000_002_596_000]
    guest = [host_to_guest_tsc(h, p) for h in host]
    back = [guest_to_host_tsc(g, p) for g in guest]
    tl = OffsetTimeline.build(
        [OffsetSnapshot(100, 0, p), OffsetSnapshot(900, 0, p)],
        [OffsetWrite(500, 0, prev=SEED_OFFSET, next=0)],
    )
    doc: dict[str, Any] = {
        "offset": {"hex": f"{p.offset:#x}", "signed": p.signed_offset},
        "conversions": [{"host_tsc": h, "guest_tsc": g, "back": b} for h, g, b in zip(host, guest, back)],
        "timeline": tl.to_dict(),
    }
    os.makedirs(args.out, exist_ok=True)
    report = os.path.join(args.out, "demo.json")
    with open(report, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    doc["artifacts"] = [report]
    lines: list[str] = [
        f"seed offset {p.offset:#x} = {p.signed_offset} cycles (negative: the guest TSC is behind)",
        *(f"host TSC {h} -> guest TSC {g} -> host TSC {b}" for h, g, b in zip(host, guest, back)),
        "timeline issues:",
        *(f"  {i.kind}: {i.message}" for i in tl.issues),
        f"report: {report}",
    ]
    emit(args, doc, lines)
    return exitcodes.OK
