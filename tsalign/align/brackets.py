"""Causality brackets: pairs of events whose order is known from what caused what.

A *forward* bracket (guest action -> host event it caused, e.g. a guest ``out`` and the host's
``kvm_pio``) must have ``host_on_guest_axis - guest >= 0``; a *backward* bracket (host event ->
guest action that could only happen after it, e.g. the next beacon after the host finished the
previous exit, or an injected IRQ and the guest's handler) must have ``guest - host_on_guest_axis
>= 0``. A negative value is a violation: the alignment is wrong. All values in cycles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..clock.display import ns_or_none
from ..numbers import MASK64, to_signed64

__all__ = ["Distribution", "distribution", "signed_diff"]


def signed_diff(a: int, b: int) -> int:
    """a - b on the 64-bit circle, as a signed value (cycles)."""
    return to_signed64((a - b) & MASK64)


@dataclass(frozen=True)
class Distribution:
    """min/median/p99/max of integer samples (nearest-rank percentiles; ints stay ints)."""

    count: int
    min: int | None
    median: int | None
    p99: int | None
    max: int | None

    def to_dict(self) -> dict[str, int | None]:
        """The statistics in the samples' unit (cycles)."""
        return {"min": self.min, "median": self.median, "p99": self.p99, "max": self.max}

    def to_ns(self, tsc_khz: int | None) -> dict[str, int | None]:
        """The statistics in ns from ``tsc_khz`` (None values when the frequency is unknown)."""
        return {k: ns_or_none(v, tsc_khz) for k, v in self.to_dict().items()}


def _rank(sorted_vals: Sequence[int], q: float) -> int:
    # nearest-rank: the smallest value with at least q of the samples at or below it
    import math

    k = max(1, math.ceil(q * len(sorted_vals)))
    return sorted_vals[k - 1]


def distribution(values: Sequence[int] | Any) -> Distribution:
    """Count, min, median, p99 and max of ``values`` (ints, or an integer numpy array: sorted as it is, its
    statistics made Python ints; ~10x faster than a sorted list at millions of brackets)."""
    kind = getattr(getattr(values, "dtype", None), "kind", "")
    if kind in ("i", "u"):  # (numpy is there: values is its array; the guest side's Python may lack it)
        import numpy as np

        s: Any = np.sort(values)
    else:
        s = sorted(values.tolist() if hasattr(values, "tolist") else values)
    if not len(s):
        return Distribution(0, None, None, None, None)
    return Distribution(len(s), int(s[0]), int(_rank(s, 0.5)), int(_rank(s, 0.99)), int(s[-1]))
