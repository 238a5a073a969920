"""Parsers of event payloads as the kernel prints them (ftrace text, or libtraceevent for a .dat), shared by
alignment, verification and the analyses."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["block_rq", "kv", "sched_switch"]

_SWITCH = re.compile(r"prev_comm=(?P<pc>.*?) prev_pid=(?P<pp>-?\d+) prev_prio=(?P<ppr>-?\d+) prev_state=(?P<ps>\S+) "
                     r"==> next_comm=(?P<nc>.*?) next_pid=(?P<np>-?\d+) next_prio=(?P<npr>-?\d+)")
_BLOCK = re.compile(r"^(?P<maj>\d+),(?P<min>\d+) (?P<rwbs>\S+) (?:(?P<bytes>\d+) )?\((?P<cmd>[^)]*)\) "
                    r"(?P<sector>\d+) \+ (?P<nr>\d+)")
_KV = re.compile(r"(\w+)[= ](0x[0-9a-fA-F]+|-?\d+)")


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
