"""One analysis of an aligned timeline's columns: each analysis gets as dicts only the events it reads (its
``READS``), so a long capture's timeline never becomes a dict per event — of the host's, only those of the VM: the
vCPU threads' switches (by their pids, parsed as read), the VM process's IO calls (by TGID); their text is read
back from the spill (``HELD``: what stays in memory as the capture is read)."""

from __future__ import annotations

from typing import Any

from ..catalogue import ANALYSES
from . import io, irq, vcpu
from .common import AnalysisResult

__all__ = ["analyze", "reads"]


def reads(kind: str) -> dict[str, frozenset[str]]:
    """The events whose payloads analysis ``kind`` needs held as they are read, per side (``host``, ``guest``)."""
    mods = {"irq": irq, "vcpu": vcpu, "io": io}
    if kind not in mods:
        raise ValueError(f"unknown analysis {kind!r} (one of {ANALYSES})")
    return dict(getattr(mods[kind], "HELD", mods[kind].READS))


def _vcpu_switches(columns: Any, vcpu_tids: dict[int, int]) -> tuple[Any, int]:
    """The host's sched_switch rows that switch a vCPU thread out or in, payloads filled (from the spill where the
    reader parsed their pids as it read them; else every switch, the analysis reads their pids itself), and how
    many sched_switch the host capture holds. A host's switches are mostly other threads': not made into dicts."""
    import numpy as np

    sw = columns.select(host=("sched_switch",), guest=())
    n = len(sw)
    if sw.f0 is not None and (True, "sched_switch") in sw.parsed:
        tids = np.asarray(sorted(vcpu_tids), dtype=np.int64)
        prev, nxt = sw.f0.view(np.int64), sw.f1.view(np.int64)  # (the parser's pids: int64 bits)
        sw = sw.take(np.nonzero(sw.fok & (np.isin(prev, tids) | np.isin(nxt, tids)))[0])
    return sw.filled(), n


def _vm_calls(columns: Any, vm_pid: int | None) -> Any:
    """The host's IO system calls of the VM process (TGID ``vm_pid``, or unknown: -1), payloads filled (from the
    spill where a policy left them there); every process's without ``vm_pid``. Other processes' calls are not made
    into dicts."""
    import numpy as np

    calls = columns.select(host=io.READS["host"], guest=())
    if vm_pid is not None:
        calls = calls.take(np.nonzero((calls.tgid == vm_pid) | (calls.tgid == -1))[0])
    return calls.filled()


def analyze(kind: str, columns: Any, tsc_khz: int, vcpu_tids: dict[int, int], vm_pid: int | None,
            top: int = 10) -> AnalysisResult:
    """Analysis ``kind`` (one of :data:`tsalign.catalogue.ANALYSES`) of ``columns`` (:class:`tsalign.align.columns.AlignedColumns`):
    ``vcpu_tids`` host thread id -> vCPU id, ``vm_pid`` the VM process (host TGID), ``top`` tasks listed."""
    if kind == "irq":
        return irq.analyze_irq(columns.select(**irq.READS).rows(), tsc_khz)
    if kind == "vcpu":
        g = columns.guest_tsc[~columns.is_host]  # the guest capture's span: all its events, not only those read
        host, switches = _vcpu_switches(columns, vcpu_tids)
        return vcpu.analyze_vcpu(host.rows() + columns.select(host=(), guest=("sched_switch",)).rows(), vcpu_tids,
                                 tsc_khz, top, (int(g.min()), int(g.max())) if g.size else None, switches)
    if kind == "io":
        return io.analyze_io(_vm_calls(columns, vm_pid).rows() + columns.select(host=(), guest=io.READS["guest"]).rows(),
                             vm_pid, tsc_khz)
    raise ValueError(f"unknown analysis {kind!r} (one of {ANALYSES})")
