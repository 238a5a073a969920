"""What every analysis shares: event payload parsers, the 'missing events' answer, distributions.

Events are the aligned dicts of :mod:`tsalign.align.merge` (``guest_tsc`` cycles on the guest axis,
``side`` host|guest, ``event``, ``cpu``, ``pid``, ``tgid``, ``comm``, ``payload``, host ``vcpu``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..align.brackets import distribution

__all__ = ["AnalysisResult", "Needs", "bare", "block_rq", "dist", "kv", "sched_switch"]

_SWITCH = re.compile(r"prev_comm=(?P<pc>.*?) prev_pid=(?P<pp>-?\d+) prev_prio=(?P<ppr>-?\d+) prev_state=(?P<ps>\S+) "
                     r"==> next_comm=(?P<nc>.*?) next_pid=(?P<np>-?\d+) next_prio=(?P<npr>-?\d+)")
_BLOCK = re.compile(r"^(?P<maj>\d+),(?P<min>\d+) (?P<rwbs>\S+) (?:(?P<bytes>\d+) )?\((?P<cmd>[^)]*)\) "
                    r"(?P<sector>\d+) \+ (?P<nr>\d+)")
_KV = re.compile(r"(\w+)[= ](0x[0-9a-fA-F]+|-?\d+)")


def bare(e: dict[str, Any]) -> str:
    """Event name without its system (``sched:sched_switch`` -> ``sched_switch``)."""
    return str(e["event"]).split(":")[-1]


def kv(payload: str) -> dict[str, int]:
    """Numeric fields of ``key=value`` and ``key value`` payloads (``gsi 1 level 1``, ``irq=11``, ``vec 34``)."""
    return {k: int(v, 0) for k, v in _KV.findall(payload)}


def sched_switch(payload: str) -> dict[str, Any] | None:
    """prev/next comm, pid, state of a sched_switch payload (comms may hold spaces: ``CPU 0/KVM``)."""
    m = _SWITCH.search(payload)
    if m is None:
        return None
    return {"prev_comm": m["pc"], "prev_pid": int(m["pp"]), "prev_state": m["ps"],
            "next_comm": m["nc"], "next_pid": int(m["np"])}


def block_rq(payload: str) -> dict[str, Any] | None:
    """dev (major, minor), rwbs, sector, nr_sector of block_rq_issue / block_rq_complete."""
    m = _BLOCK.match(payload)
    if m is None:
        return None
    return {"dev": (int(m["maj"]), int(m["min"])), "rwbs": m["rwbs"], "sector": int(m["sector"]), "nr": int(m["nr"])}


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
