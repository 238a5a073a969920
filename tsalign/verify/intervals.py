"""Evidence as bounds on the offset error, and what all of it allows (pure, integer math).

Every piece of evidence bounds ``delta = true guest-minus-host offset - offset in use`` (signed
cycles) on the guest TSC axis, where host events were converted with the offset in use:

- a *guest-before-host* pair (the guest acted at guest TSC g, the host saw its exit at h' on the
  guest axis) needs ``g <= h' + delta``, so ``delta >= g - h'``;
- a *host-before-guest* pair needs ``h' + delta <= g``, so ``delta <= g - h'``;
- a *two-sided* item gives both (a bracket of width ``upper - lower``).

Working in delta makes offsets that change during a capture (one segment per vCPU load) no
different from a constant one. ``pass`` needs ``lower <= 0 <= upper`` for all of them; the
intersection ``[max lower, min upper]`` is the alignment's error bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..align.brackets import distribution
from ..clock.display import ns_or_none

__all__ = ["Brackets", "VcpuEvidence", "judge_vcpu"]

_I64 = np.int64


@dataclass
class Brackets:
    """Items of one evidence ``kind`` on one vCPU: ``delta >= lower[i]`` where ``has_lower[i]``,
    ``delta <= upper[i]`` where ``has_upper[i]`` (signed cycles); ``at[i]`` is the guest TSC of the
    guest event (to name a violation)."""

    kind: str
    vcpu: int
    lower: np.ndarray
    upper: np.ndarray
    has_lower: np.ndarray
    has_upper: np.ndarray
    at: np.ndarray
    #: for evidence that holds only around the offset judged (vCPU runs): the same items judged around
    #: delta = x (bounds still relative to delta 0); None for pairs, which hold for any offset
    reeval: Callable[[int], Brackets] | None = None
    #: for the same evidence: the open intervals of delta inside [lo, hi] that some item forbids
    #: (exact; None when that would take too long)
    forbidden: Callable[[int, int], list[tuple[int, int]] | None] | None = None

    @classmethod
    def from_rows(cls, kind: str, vcpu: int, rows: Sequence[tuple[int | None, int | None, int]]) -> Brackets:
        """From (lower|None, upper|None, guest_tsc) rows."""
        n = len(rows)
        lower, upper = np.zeros(n, dtype=_I64), np.zeros(n, dtype=_I64)
        hl, hu = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        at = np.zeros(n, dtype=np.uint64)
        for i, (lo, hi, g) in enumerate(rows):
            if lo is not None:
                lower[i], hl[i] = lo, True
            if hi is not None:
                upper[i], hu[i] = hi, True
            at[i] = g
        return cls(kind, vcpu, lower, upper, hl, hu, at)

    def __len__(self) -> int:
        return int((self.has_lower | self.has_upper).sum())

    def widened(self, cycles: int, above: int = 0) -> Brackets:
        """The same items when each guest TSC may lie up to ``cycles`` below the truth (a host-before-guest
        bound, upper, moves up by ``cycles``) and up to ``above`` above it (a guest-before-host bound, lower,
        moves down by ``above``)."""
        b = Brackets(self.kind, self.vcpu, self.lower - np.int64(above), self.upper + np.int64(cycles), self.has_lower,
                     self.has_upper, self.at, None, self.forbidden)
        if self.reeval is not None:
            inner = self.reeval
            b.reeval = lambda x: inner(x).widened(cycles, above)
        return b

    def violations(self) -> np.ndarray:
        """Mask of items the offset in use (delta = 0) contradicts."""
        return (self.has_lower & (self.lower > 0)) | (self.has_upper & (self.upper < 0))

    def widths(self) -> np.ndarray:
        """upper - lower of two-sided items (cycles)."""
        both = self.has_lower & self.has_upper
        return np.asarray(self.upper[both] - self.lower[both], dtype=_I64)


@dataclass
class VcpuEvidence:
    """All evidence of one vCPU, judged: ``lo``/``hi`` bound delta (None: unbounded that side)."""

    vcpu: int
    lo: int | None
    hi: int | None
    checked: int
    violated: int
    per_kind: dict[str, dict[str, Any]]
    worst: dict[str, Any] | None
    #: False when it is certain that no single offset satisfies all evidence (an exact search found none)
    satisfiable: bool | None = None

    @property
    def bounded(self) -> bool:
        return self.lo is not None and self.hi is not None

    def to_dict(self, tsc_khz: int, offsets_in_use: Sequence[int]) -> dict[str, Any]:
        """JSON-ready: the delta interval, the absolute offset interval when one offset was in use
        for the whole capture, the width (error bound), detection thresholds, per-kind counts."""
        def ns(c: int | None) -> int | None:
            return ns_or_none(c, tsc_khz)

        absolute = None
        if len(offsets_in_use) == 1:
            o = offsets_in_use[0]
            absolute = [None if self.lo is None else o + self.lo, None if self.hi is None else o + self.hi]
        width = self.hi - self.lo if self.bounded else None  # type: ignore[operator]
        return {
            "vcpu": self.vcpu,
            "delta_interval": [self.lo, self.hi],
            "offset_interval": absolute,
            "width_cycles": width, "width_ns": ns(width),
            "checked": self.checked, "violated": self.violated,
            # an offset raised by more than hi (or lowered by more than -lo) cycles is caught
            "detects_error_above_cycles": {"raise": self.hi, "lower": None if self.lo is None else -self.lo},
            "detects_error_above_ns": {"raise": ns(self.hi), "lower": ns(None if self.lo is None else -self.lo)},
            "evidence": self.per_kind,
            "worst_violation": self.worst,
            # false: no single offset satisfies all evidence (an offset that changed unrecorded?)
            "satisfiable": self.satisfiable,
        }


def judge_vcpu(vcpu: int, sets: Sequence[Brackets], tsc_khz: int) -> VcpuEvidence:
    """Intersect every item of ``sets`` (one vCPU); count and name violations."""
    lo: int | None = None
    hi: int | None = None
    checked = violated = 0
    per_kind: dict[str, dict[str, Any]] = {}
    worst: dict[str, Any] | None = None
    for b in sets:
        n = len(b)
        if not n:
            continue
        bad = b.violations()
        k_lo, k_hi, _, _ = _bounds([b])
        lo = k_lo if lo is None else (lo if k_lo is None else max(lo, k_lo))
        hi = k_hi if hi is None else (hi if k_hi is None else min(hi, k_hi))
        w = distribution(b.widths())
        # one set per kind and vCPU (one extractor each)
        per_kind[b.kind] = {"checked": n, "violated": int(bad.sum()), "delta_interval": [k_lo, k_hi],
                            "bracket_width_cycles": {"median": w.median, "p99": w.p99, "count": w.count}}
        checked += n
        violated += int(bad.sum())
        if bad.any():
            dist_lo = np.where(b.has_lower & (b.lower > 0), b.lower, 0)
            dist_hi = np.where(b.has_upper & (b.upper < 0), -b.upper, 0)
            dist = np.maximum(dist_lo, dist_hi)
            i = int(dist.argmax())
            d = int(dist[i])
            if worst is None or d > worst["cycles"]:
                too = "low" if dist_lo[i] >= dist_hi[i] else "high"
                worst = {"kind": b.kind, "guest_tsc": int(b.at[i]), "cycles": d,
                         "ns": ns_or_none(d, tsc_khz), "offset_in_use_is_too": too}
    satisfiable = None
    if violated:
        refined = _refine(sets)
        if refined is False:
            satisfiable = False
        elif isinstance(refined, tuple):
            lo, hi, kind = refined
            d = lo if lo is not None and lo > 0 else -hi if hi is not None and hi < 0 else 0
            if d and worst is not None:
                worst = {**worst, "kind": kind, "cycles": d, "ns": ns_or_none(d, tsc_khz),
                         "offset_in_use_is_too": "low" if lo is not None and lo > 0 else "high",
                         "guest_tsc": None}
    if lo is not None and hi is not None and lo > hi:
        satisfiable = False
    return VcpuEvidence(vcpu, lo, hi, checked, violated, per_kind, worst, satisfiable)


def _bounds(sets: Sequence[Brackets]) -> tuple[int | None, int | None, str | None, str | None]:
    """max lower, min upper over ``sets`` and the kinds that set them."""
    lo = hi = None
    klo = khi = None
    for b in sets:
        if b.has_lower.any():
            v = int(b.lower[b.has_lower].max())
            if lo is None or v > lo:
                lo, klo = v, b.kind
        if b.has_upper.any():
            v = int(b.upper[b.has_upper].min())
            if hi is None or v < hi:
                hi, khi = v, b.kind
    return lo, hi, klo, khi


def _refine(sets: Sequence[Brackets]) -> tuple[int | None, int | None, str] | bool | None:
    """For a contradicted offset: what all evidence allows, found by judging the evidence that holds
    only around an offset (vCPU runs) around the nearest offset all evidence allows, instead of around
    the wrong one. False when certainly no offset satisfies all of it; None when that is not known
    (no pairs, or no runs, or too many items for an exact search)."""
    pairs = [b for b in sets if len(b) and b.reeval is None]
    relative = [b for b in sets if len(b) and b.reeval is not None]
    if not pairs or not relative:
        return None
    lo, hi, _, _ = _bounds(pairs)
    if lo is not None and hi is not None and lo > hi:
        return False
    x = _nearest_allowed(lo, hi, relative) if lo is not None and hi is not None else _walk(lo, hi, pairs, relative)
    if x is None or x is False:
        return x
    again = pairs + [b.reeval(x) for b in relative if b.reeval is not None]
    lo2, hi2, klo, khi = _bounds(again)
    if (lo2 is not None and x < lo2) or (hi2 is not None and hi2 < x):
        return None
    return lo2, hi2, (klo if x > 0 else khi) or "evidence"


def _nearest_allowed(lo: int, hi: int, relative: Sequence[Brackets]) -> int | bool | None:
    """The delta in [lo, hi] nearest to 0 that no item of ``relative`` forbids (exact); False when
    there is none; None when an exact answer would take too long."""
    cuts: list[tuple[int, int]] = []
    for b in relative:
        f = b.forbidden(lo, hi) if b.forbidden is not None else None
        if f is None:
            return None
        cuts += f
    best: int | None = None
    cur = lo
    for a, z in sorted(cuts) + [(hi + 1, hi + 1)]:  # open intervals (a, z): a and z themselves are allowed
        if a >= cur:  # [cur, min(a, hi)] is allowed
            piece = (cur, min(a, hi))
            p = min(max(0, piece[0]), piece[1])
            if best is None or abs(p) < abs(best):
                best = p
        cur = max(cur, z)
        if cur > hi:
            break
    return False if best is None else best


def _walk(lo: int | None, hi: int | None, pairs: Sequence[Brackets], relative: Sequence[Brackets]) -> int | None:
    """With one-sided pairs: step to the nearest offset all evidence allows, judging the runs around
    it each time (a few steps; None when it does not settle)."""
    x = lo if lo is not None and lo > 0 else hi if hi is not None and hi < 0 else 0
    if x == 0:
        return None
    for _ in range(8):
        again = list(pairs) + [b.reeval(x) for b in relative if b.reeval is not None]
        lo2, hi2, _, _ = _bounds(again)
        if lo2 is not None and hi2 is not None and lo2 > hi2:
            return None
        if (lo2 is None or lo2 <= x) and (hi2 is None or x <= hi2):
            return x
        x = lo2 if lo2 is not None and x < lo2 else hi2  # type: ignore[assignment]
    return None
