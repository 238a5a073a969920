"""Evidence as bounds on the offset error, and what all of it allows (pure, integer math).

Every piece of evidence bounds ``delta = true guest-minus-host offset - offset in use`` (signed
cycles) on the guest TSC axis, where host events were converted with the offset in use:

- a *guest-before-host* pair (the guest acted at guest TSC g, the host saw its exit at h' on the
  guest axis) needs ``g <= h' + delta``, so ``delta >= g - h'``;
- a *host-before-guest* pair needs ``h' + delta <= g``, so ``delta <= g - h'``;
- a *two-sided* item gives both (a bracket of width ``upper - lower``).

Working in delta makes offsets that change during a capture (one segment per vCPU load) no
different from a constant one. ``pass`` needs ``lower <= 0 <= upper`` for all of them; the
intersection ``[max lower, min upper]`` is the alignment's error bound. Evidence that holds only around
the offset judged (a guest event must lie in one of its vCPU's runs, any of them) allows a set that
need not be one interval: where pairs bound the search, :func:`allowed_pieces` gives it exactly and
the bound reported is its hull.
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
_LISTED = 16  # allowed intervals listed one by one in a verdict (more: their count and hull only)


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
    #: for the same evidence: the open intervals of delta inside [lo, hi] that some item forbids (their starts and
    #: ends, int64 arrays; exact; None when that would take too long)
    forbidden: Callable[[int, int], tuple[np.ndarray, np.ndarray] | None] | None = None

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
    #: the separate intervals of delta all evidence allows, [lo, hi] their hull (vCPU runs leave gaps between them:
    #: the true offset lies in one of them): (starts, ends), int64 arrays; None when not known (no two-sided pairs,
    #: or too many items), [lo, hi] then being the interval around the offset judged
    allowed: tuple[np.ndarray, np.ndarray] | None = None
    #: True when the runs may allow offsets outside [lo, hi] that were not looked for (too many to enumerate)
    unsearched: bool = False

    @property
    def pieces(self) -> int | None:
        """How many separate intervals :attr:`allowed` holds (None: not known)."""
        return None if self.allowed is None else int(self.allowed[0].size)

    def allows(self, delta: int) -> bool | None:
        """Whether all evidence allows an error of ``delta`` cycles (None: no evidence bounds it)."""
        if self.allowed is not None:
            return bool(((self.allowed[0] <= delta) & (delta <= self.allowed[1])).any())
        if self.lo is None and self.hi is None:
            return None
        return (self.lo is None or self.lo <= delta) and (self.hi is None or delta <= self.hi)

    @property
    def bounded(self) -> bool:
        return self.lo is not None and self.hi is not None

    def to_dict(self, tsc_khz: int, offsets_in_use: Sequence[int]) -> dict[str, Any]:
        """JSON-ready: the delta interval, the absolute offset interval when one offset was in use
        for the whole capture, the width (error bound), detection thresholds, per-kind counts."""
        def ns(c: int | None) -> int | None:
            return ns_or_none(c, tsc_khz)

        absolute = None
        listed = None if self.allowed is None or self.pieces > _LISTED else [  # type: ignore[operator]
            [a, b] for a, b in zip(self.allowed[0].tolist(), self.allowed[1].tolist())]
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
            # the separate intervals of allowed offsets in delta_interval (1: one interval; None: not counted), each
            # listed (as deltas and, with one offset in use, as offsets) where there are at most 16
            "allowed_pieces": self.pieces,
            "allowed_delta_intervals": listed,
            "allowed_offset_intervals": None if listed is None or len(offsets_in_use) != 1 else [
                [offsets_in_use[0] + a, offsets_in_use[0] + b] for a, b in listed],
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
    pairs, relative = _split(sets)
    plo, phi, _, _ = _bounds(pairs)
    # the offsets all evidence allows, exactly, where two-sided pairs bound the search of the runs' (None: not
    # searched, or more cuts than the search takes)
    searchable, allowed = False, None
    if relative and plo is not None and phi is not None and plo <= phi:
        searchable, allowed = True, allowed_pieces(plo, phi, relative)
    if violated:
        refined = _refine(pairs, relative, plo, phi, allowed) if pairs and relative else None
        if refined is False:
            satisfiable = False
        elif isinstance(refined, tuple):
            lo, hi, kind, x = refined
            if x and worst is not None:
                d = abs(x)
                worst = {**worst, "kind": kind, "cycles": d, "ns": ns_or_none(d, tsc_khz),
                         "offset_in_use_is_too": "low" if x > 0 else "high", "guest_tsc": None}
    elif allowed is not None and allowed[0].size:  # (the offset in use lies in one of them)
        lo, hi = int(allowed[0][0]), int(allowed[1][-1])
    if lo is not None and hi is not None and lo > hi:
        satisfiable = False
    if allowed is not None and not allowed[0].size:
        allowed = None
    return VcpuEvidence(vcpu, lo, hi, checked, violated, per_kind, worst, satisfiable, allowed,
                        searchable and allowed is None and satisfiable is not False)


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


def _split(sets: Sequence[Brackets]) -> tuple[list[Brackets], list[Brackets]]:
    """(pairs, which hold for any offset; evidence that holds only around the offset judged: vCPU runs)."""
    return ([b for b in sets if len(b) and b.reeval is None], [b for b in sets if len(b) and b.reeval is not None])


def _refine(pairs: Sequence[Brackets], relative: Sequence[Brackets], lo: int | None, hi: int | None,
            allowed: tuple[np.ndarray, np.ndarray] | None) -> tuple[int | None, int | None, str, int] | bool | None:
    """For a contradicted offset: what all evidence allows — (lowest, highest delta allowed, the kind that bounds the
    error, the allowed delta nearest to 0) — from the pairs' bounds ``lo``/``hi`` and, where those are two-sided, the
    offsets all evidence allows (``allowed``: :func:`allowed_pieces`, None when not searched); with one-sided pairs,
    by judging the runs around the nearest offset the pairs allow instead of around the wrong one (then only the
    piece around it is known). False when certainly no offset satisfies all of it; None when that is not known."""
    if lo is not None and hi is not None:
        if lo > hi or (allowed is not None and not allowed[0].size):
            return False
        if allowed is None:  # too many cuts to search
            return None
        x: int | None = _nearest(*allowed)
    else:
        x = _walk(lo, hi, pairs, relative)
    if x is None:
        return None
    again = list(pairs) + [b.reeval(x) for b in relative if b.reeval is not None]
    lo2, hi2, klo, khi = _bounds(again)
    if (lo2 is not None and x < lo2) or (hi2 is not None and hi2 < x):
        return None
    kind = (klo if x > 0 else khi) or "evidence"
    if allowed is None:  # one-sided pairs: the interval of runs around the nearest allowed offset
        return lo2, hi2, kind, x
    return int(allowed[0][0]), int(allowed[1][-1]), kind, x


def allowed_pieces(lo: int, hi: int, relative: Sequence[Brackets]) -> tuple[np.ndarray, np.ndarray] | None:
    """The closed intervals of delta in [lo, hi] that no item of ``relative`` forbids (starts, ends: int64 arrays,
    sorted, disjoint; a piece may be one point): empty when there is none; None when an exact answer would take too
    long."""
    starts, ends = [np.zeros(0, dtype=_I64)], [np.zeros(0, dtype=_I64)]
    for b in relative:
        f = b.forbidden(lo, hi) if b.forbidden is not None else None
        if f is None:
            return None
        starts.append(f[0])
        ends.append(f[1])
    a, z = np.concatenate(starts), np.concatenate(ends)
    keep = (a < hi) & (z > lo)  # open cuts (a, z) that take something of [lo, hi]
    o = np.argsort(a[keep], kind="stable")
    a, z = a[keep][o], z[keep][o]
    # piece k runs from where every earlier cut has ended to where cut k starts; the last one to hi
    first = np.maximum(np.concatenate(([lo], np.maximum.accumulate(z))), lo).astype(_I64)
    last = np.concatenate((a, [hi])).astype(_I64)
    ok = first <= last
    return first[ok], last[ok]


def _nearest(starts: np.ndarray, ends: np.ndarray) -> int:
    """The delta nearest to 0 in the closed intervals [starts[k], ends[k]] (at least one)."""
    p = np.clip(0, starts, ends)
    return int(p[np.argmin(np.abs(p))])


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
