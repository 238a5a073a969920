"""The demo's fallback job: the shipped capture (examples/selftest, a real micro-VM run) judged as a live selftest
would judge its own, where this machine cannot run one."""

from __future__ import annotations

import json
import os
from typing import Any

from ..align.merge import align
from ..traces.bundle import Bundle

__all__ = ["SHIPPED", "shipped_report"]

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "examples", "selftest")


def shipped_report(out: str) -> dict[str, Any]:
    """The shipped capture aligned and judged into ``out`` (aligned/, report.json): the selftest's report of it."""
    from ..verify.judge import judge_and_write
    from ..verify.selftest import DEFAULT_REQUEST, evaluate

    host = Bundle.open(os.path.join(SHIPPED, "host"), "shipped host bundle")
    guest = Bundle.open(os.path.join(SHIPPED, "guest"), "shipped guest bundle")
    aligned = align(host, guest)
    verdict, paths = judge_and_write(aligned, os.path.join(out, "aligned"))
    report = evaluate(verdict, aligned.tsc_khz, host, DEFAULT_REQUEST, None)
    report["artifacts"] = {**paths, "host_bundle": host.path, "guest_bundle": guest.path,
                           "report": os.path.join(out, "report.json")}
    with open(report["artifacts"]["report"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report
