"""Which clock a trace's timestamps are really in, from the file's own metadata.

trace-cmd labels an instance buffer with the *top* instance's clock when it extracts it: a private
x86-tsc instance comes out labelled ``local``. The kernel's per-CPU ``stats`` (saved in the file as
CPUSTAT) print timestamps as ``secs.usecs`` for ns clocks and as a plain integer for counter clocks,
so they tell the truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["NS_CLOCKS", "ClockVerdict", "check_dat_buffer", "domain_of"]

#: ftrace clocks whose values are nanoseconds (the kernel's trace_clocks[].in_ns)
NS_CLOCKS = {"local", "global", "perf", "mono", "mono_raw", "boot", "tai"}
#: beyond this many units a counter is not the ``counter`` clock (an event count) but a cycle counter
_TSC_LIKE = 10**11
_STAT_TS = re.compile(r"^(?:oldest event ts|now ts):\s*(\S+)\s*$", re.MULTILINE)


def domain_of(clock: str) -> str:
    """Time domain of an ftrace/perf clock name: ``tsc``, ``ns``, ``counter``, ``jiffies`` or ``unknown``."""
    if clock in ("x86-tsc", "tsc", "rdtsc"):
        return "tsc"
    if clock in NS_CLOCKS or clock.startswith("perf"):
        return "ns"
    if clock == "counter":
        return "counter"
    if clock == "uptime":
        return "jiffies"
    return "unknown"


@dataclass
class ClockVerdict:
    clock: str
    warnings: list[str] = field(default_factory=list)


def check_dat_buffer(labelled: str, cpustat: dict[int, str]) -> ClockVerdict:
    """Compare the buffer's clock label with how its CPUSTAT prints timestamps."""
    values = [v for text in cpustat.values() for v in _STAT_TS.findall(text)]
    integers = [int(v) for v in values if v.isdigit() and int(v) > 0]
    dotted = [v for v in values if "." in v]
    if labelled in NS_CLOCKS and integers and not dotted:
        big = max(integers)
        real = "x86-tsc" if big > _TSC_LIKE else "counter"
        return ClockVerdict(real, [(
            f"the file labels this buffer's clock {labelled!r} (ns), but the kernel's per-CPU stats saved with it "
            f"print timestamps as counter units ({big}): the buffer was recorded with a counter clock, read as "
            f"{real!r} (trace-cmd extract labels an x86-tsc instance with the top instance's clock); "
            f"pass --clock to override")])
    if labelled not in NS_CLOCKS and dotted and not integers:
        return ClockVerdict("local", [(
            f"the file labels this buffer's clock {labelled!r}, but its per-CPU stats print secs.usecs "
            f"timestamps: read as ns ('local'); pass --clock to override")])
    return ClockVerdict(labelled)
