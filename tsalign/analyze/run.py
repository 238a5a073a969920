"""One analysis of an aligned timeline's columns: each analysis gets as dicts only the events it reads (its
``READS``), so a long capture's timeline never becomes a dict per event."""

from __future__ import annotations

from typing import Any

from ..catalogue import ANALYSES
from . import io, irq, vcpu
from .common import AnalysisResult

__all__ = ["analyze", "reads"]


def reads(kind: str) -> dict[str, frozenset[str]]:
    """The events analysis ``kind`` reads, per side (``host``, ``guest``): their payloads must be held."""
    mods = {"irq": irq, "vcpu": vcpu, "io": io}
    if kind not in mods:
        raise ValueError(f"unknown analysis {kind!r} (one of {ANALYSES})")
    return dict(mods[kind].READS)


def analyze(kind: str, columns: Any, tsc_khz: int, vcpu_tids: dict[int, int], vm_pid: int | None,
            top: int = 10) -> AnalysisResult:
    """Analysis ``kind`` (one of :data:`tsalign.catalogue.ANALYSES`) of ``columns`` (:class:`tsalign.align.columns.AlignedColumns`):
    ``vcpu_tids`` host thread id -> vCPU id, ``vm_pid`` the VM process (host TGID), ``top`` tasks listed."""
    if kind == "irq":
        return irq.analyze_irq(columns.select(**irq.READS).rows(), tsc_khz)
    if kind == "vcpu":
        g = columns.guest_tsc[~columns.is_host]  # the guest capture's span: all its events, not only those read
        return vcpu.analyze_vcpu(columns.select(**vcpu.READS).rows(), vcpu_tids, tsc_khz, top,
                                 (int(g.min()), int(g.max())) if g.size else None)
    if kind == "io":
        return io.analyze_io(columns.select(**io.READS).rows(), vm_pid, tsc_khz)
    raise ValueError(f"unknown analysis {kind!r} (one of {ANALYSES})")
