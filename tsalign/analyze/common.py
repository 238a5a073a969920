"""What every analysis shares: the 'missing events' answer, distributions (payload parsers: tsalign.traces.payloads).

Events are the aligned dicts of :mod:`tsalign.align.merge` (``guest_tsc`` cycles on the guest axis,
``side`` host|guest, ``event``, ``cpu``, ``pid``, ``tgid``, ``comm``, ``payload``, host ``vcpu``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..align.brackets import distribution

__all__ = ["AnalysisResult", "Needs", "bare", "dist"]

def bare(e: dict[str, Any]) -> str:
    """Event name without its system (``sched:sched_switch`` -> ``sched_switch``)."""
    return str(e["event"]).split(":")[-1]


def dist(values: Sequence[int], tsc_khz: int) -> dict[str, Any]:
    """count, min/median/p99/max in cycles and ns."""
    d = distribution(values)
    return {"count": d.count, "cycles": d.to_dict(), "ns": d.to_ns(tsc_khz)}


@dataclass
class Needs:
    """Events an analysis needs but the capture lacks, with the exact capture options to record them."""

    side: str
    events: list[str]
    why: str

    def command(self) -> str:
        ev = ",".join(self.events)
        if self.side == "host":
            return f"tsalign capture --role host --vm NAME --events {ev} --out HOST_BUNDLE"
        return f"tsalign capture --role guest --events {ev} --out GUEST_BUNDLE"

    def to_dict(self) -> dict[str, Any]:
        return {"side": self.side, "events": self.events, "why": self.why, "capture": self.command()}


@dataclass
class AnalysisResult:
    """One analysis: ``summary`` (JSON-ready), ``rows`` (per item), ``slices`` for the Perfetto trace
    ({side, track, name, start, end} on the guest TSC axis), ``needs`` when events are missing."""

    kind: str
    summary: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)
    needs: list[Needs] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.needs

    def to_dict(self) -> dict[str, Any]:
        return {"analysis": self.kind, "status": "ok" if self.ok else "missing_events", "summary": self.summary,
                "rows": self.rows, "needs": [n.to_dict() for n in self.needs], "notes": self.notes}


def have(events: Iterable[dict[str, Any]], side: str, names: Iterable[str]) -> set[str]:
    """Which of ``names`` occur on ``side``."""
    want = set(names)
    return {bare(e) for e in events if e["side"] == side and bare(e) in want}
