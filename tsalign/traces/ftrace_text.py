"""ftrace text (tracefs ``trace``/``trace_pipe``, ``trace-cmd report``-like lines): the line pattern
(:data:`LINE`, read by :mod:`tsalign.traces.text`), the event record type, exact timestamps, kvm payloads.

Timestamps stay integers: counter clocks (``x86-tsc``, ``counter``) print raw cycles, ns clocks print
``secs.usecs`` (microsecond precision; converted exactly to ns from the digits, never via float).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidParameter

__all__ = ["Record", "parse_kvm_payload"]

#: an ftrace event line: tracefs ``trace``/``trace_pipe`` (with or without irq-info flags and the TGID
#: column) and ``trace-cmd report`` (optionally prefixed by the instance buffer name)
LINE = re.compile(
    r"^(?:(?P<buf>[\w.-]+):\s+)?\s*(?P<comm>.*?)-(?P<pid>\d{1,10})\s+(?:\(\s*(?P<tgid>[\d-]{1,11})\)\s+)?\[(?P<cpu>\d{1,5})\]\s+"
    r"(?:(?P<flags>[^\s\d][^\s]{2,5})\s+)?(?P<ts>\d{1,20}|\d{1,11}\.\d{1,12}):\s+(?P<event>[\w:.-]+)(?::\s?|(?=\()|\s(?=->))"
    r"(?P<payload>.*)$", re.ASCII
)


def event_name(m: re.Match[str]) -> str:
    """The event name of a :data:`LINE` match. Syscall tracepoints print ``sys_write(fd: 9, ...)`` and
    ``sys_write -> 0x8`` (no colon after the name): name them as their tracepoints are named
    (``sys_enter_write``, ``sys_exit_write``); every other name passes through."""
    event, payload = m.group("event"), m.group("payload")
    if m.string[m.end("event"):m.end("event") + 1] == ":":
        return event
    if payload.startswith("("):
        return "sys_enter_" + event[4:] if event.startswith("sys_") else event
    if payload.startswith("->"):
        return "sys_exit_" + event[4:] if event.startswith("sys_") else event
    return event


@dataclass(frozen=True)
class Record:
    """One trace event. ts: cycles for counter clocks, ns for ns clocks."""

    ts: int
    cpu: int
    pid: int
    comm: str
    event: str
    payload: str
    tgid: int = -1  # the thread group (process) id when the trace recorded it (TGID column), else -1


def split_ts(text: str, where: str = "") -> tuple[int, int]:
    """'27178.697057413' -> (27178697057413, 1); '11129.868688' -> (11129868688000, 1000) (value, resolution);
    '123' -> (123, 1). Exact from the digits, never through a float."""
    secs, dot, frac = text.partition(".")  # digits only: the line patterns (re.ASCII, bounded) matched them
    if len(frac) > 9:
        raise InvalidParameter("timestamp", text[:40], f"secs.fraction with at most 9 digits ({where})")
    value = int(secs) * 1_000_000_000 + int(frac.ljust(9, "0")) if dot else int(secs)
    if value >= 1 << 64:
        raise InvalidParameter("timestamp", text[:40], f"a timestamp below 2^64 ({where})")
    return value, 10 ** (9 - len(frac)) if dot else 1


_PIO = re.compile(r"pio_(read|write) at 0x([0-9a-f]+) size (\d+) count (\d+) val 0x([0-9a-f]+)")
_SET_IRQ = re.compile(r"gsi (\d+) level (-?\d+) source (\d+)")
_WRITE_TSC = re.compile(r"vcpu=(\d+) prev=(\d+) next=(\d+)")


def parse_kvm_payload(event: str, payload: str) -> dict[str, int]:
    """Fields of the kvm events tsalign uses (kvm_pio, kvm_set_irq, kvm_write_tsc_offset)."""
    name = event.split(":")[-1]
    if name == "kvm_pio":
        m = _PIO.match(payload)
        if m:
            return {"write": int(m.group(1) == "write"), "port": int(m.group(2), 16), "size": int(m.group(3)),
                    "count": int(m.group(4)), "val": int(m.group(5), 16)}
    elif name == "kvm_set_irq":
        m = _SET_IRQ.match(payload)
        if m:
            return {"gsi": int(m.group(1)), "level": int(m.group(2)), "source": int(m.group(3))}
    elif name == "kvm_write_tsc_offset":
        m = _WRITE_TSC.match(payload)
        if m:
            return {"vcpu": int(m.group(1)), "prev": int(m.group(2)), "next": int(m.group(3))}
    else:
        return {}
    raise InvalidParameter(f"{name} payload", payload, "the format of the kernel's print fmt for this event")
