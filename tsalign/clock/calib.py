"""A guest's ns clock (sched_clock: ftrace ``local``; local_clock: perf, ftrace ``perf``) mapped to its TSC
from pairs measured inside the guest, without the host's help (``tsalign calibrate``).

Each pair is one moment stamped by the ns clock (``ns``) and bracketed by two TSC reads (``lo`` <= the
TSC at that moment <= ``hi``). In a kvm-clock guest the ns clock is ``system_time + scale(tsc -
tsc_timestamp)`` piecewise (a new pvclock record starts a piece), so each piece is fitted as a pvclock
record (:class:`tsalign.clock.pvclock.Pvclock`): the same integer formula, and its exact inverse
(:func:`tsalign.clock.vec.kvmclock_to_tsc`) converts ns back to TSC. Pieces are found where the residual
of one record jumps. Floats estimate the slope; every residual and bound is integer arithmetic.

The bound of a piece, in cycles: how far a converted TSC may lie from the true one, if the clock is one
line within the piece. The true line and the map both pass through every bracket (the map's distance
beyond a bracket is added when it does not), so they differ by at most the narrowest bracket of each
stretch of the range (the largest of those minima over 16 stretches). Pairs whose bracket is far wider
than usual — an interrupt between the reads — are set aside and counted as ``disturbed``. On fresh pairs,
a map is judged by how far its prediction lies beyond each pair's bracket (``errors``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidParameter
from . import vec
from .display import ns_or_none
from .pvclock import Pvclock

__all__ = ["FORMAT", "Calibration", "Piece", "fit", "load", "pvclock_for", "save"]

#: a pair whose bracket is this many times wider than the median is disturbed (interrupted between reads)
DISTURBED_FACTOR = 8
#: a map missing a bracket by more than this many cycles has a step in its range: cut where the residual jumps
STEP_CYCLES = 20_000
MIN_PAIRS = 16
#: stretches of a piece's range whose narrowest bracket bounds the map's error there
BINS = 16
FORMAT = "tsalign-calibration"
MAX_FILE_BYTES = 64 << 20


def pvclock_for(ns_per_cycle: float, tsc_timestamp: int, system_time: int) -> Pvclock:
    """The pvclock record with the most precise u32 multiplier for a slope of ``ns_per_cycle``, as the kernel
    chooses them (kvm_get_time_scale: mul in [2^31, 2^32) after a power-of-two pre-shift)."""
    if not 1e-6 < ns_per_cycle < 1e6:
        raise InvalidParameter("calibration slope", ns_per_cycle, "a TSC between 1 kHz and 1 THz")
    shift = 0
    mul = ns_per_cycle * 2.0 ** 32
    while mul >= 2.0 ** 32:
        shift += 1
        mul /= 2
    while mul < 2.0 ** 31:
        shift -= 1
        mul *= 2
    return Pvclock(system_time % (1 << 64), tsc_timestamp % (1 << 64), min(round(mul), (1 << 32) - 1), shift)


@dataclass(frozen=True)
class Piece:
    """One pvclock-shaped piece of the map, valid for ns in [ns_first, ns_last] (and TSC in [tsc_first,
    tsc_last]); ``bound_cycles``: how far a converted TSC may lie from the true one (see module doc)."""

    pv: Pvclock
    ns_first: int
    ns_last: int
    tsc_first: int
    tsc_last: int
    pairs: int
    bound_cycles: int

    def to_dict(self) -> dict[str, Any]:
        return {"system_time": self.pv.system_time, "tsc_timestamp": self.pv.tsc_timestamp,
                "tsc_to_system_mul": self.pv.tsc_to_system_mul, "tsc_shift": self.pv.tsc_shift,
                "ns_first": self.ns_first, "ns_last": self.ns_last, "tsc_first": self.tsc_first,
                "tsc_last": self.tsc_last, "pairs": self.pairs, "bound_cycles": self.bound_cycles}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Piece:
        want = "a calibration piece: integers system_time, tsc_timestamp, tsc_to_system_mul, tsc_shift, ns_first, " \
               "ns_last, tsc_first, tsc_last, pairs, bound_cycles"
        keys = ("system_time", "tsc_timestamp", "tsc_to_system_mul", "tsc_shift", "ns_first", "ns_last", "tsc_first",
                "tsc_last", "pairs", "bound_cycles")
        if not isinstance(d, dict) or not all(type(d.get(k)) is int for k in keys):
            raise InvalidParameter("calibration", where, want)
        if not all(0 <= d[k] < 1 << 64 for k in keys if k != "tsc_shift") or d["ns_first"] > d["ns_last"]:
            raise InvalidParameter("calibration", where, want + " (unsigned 64-bit, ns_first <= ns_last)")
        try:
            pv = Pvclock(d["system_time"], d["tsc_timestamp"], d["tsc_to_system_mul"], d["tsc_shift"])
        except InvalidParameter as e:
            raise InvalidParameter("calibration", where, f"{want} ({e.name}: {e.expected})") from None
        return cls(pv, d["ns_first"], d["ns_last"], d["tsc_first"], d["tsc_last"], d["pairs"], d["bound_cycles"])


@dataclass
class Calibration:
    """The map of one ns clock (``clock``: ``local`` or ``perf``) of one boot to that machine's TSC."""

    clock: str
    pieces: list[Piece]
    tsc_khz: int | None = None
    boot_id: str | None = None
    disturbed: int = 0
    median_bracket_cycles: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def bound_cycles(self) -> int:
        return max((p.bound_cycles for p in self.pieces), default=0)

    def _piece_index(self, ns: np.ndarray) -> np.ndarray:
        starts = np.array([p.ns_first for p in self.pieces], dtype=np.uint64)
        return np.clip(np.searchsorted(starts, ns, side="right") - 1, 0, len(self.pieces) - 1)

    def to_tsc(self, ns: Any) -> tuple[np.ndarray, int]:
        """ns (uint64 array) -> TSC cycles, each with the piece in force at its ns; and how many ns lie
        outside every piece's range (converted with the nearest piece: right while the clock had no step)."""
        ns = np.asarray(ns, dtype=np.uint64)
        # before the first piece's system_time: ns - system_time negative as a signed 64-bit difference (a fitted
        # system_time may itself lie before 0 ns, stored modulo 2^64)
        early = (ns - np.uint64(self.pieces[0].pv.system_time)) >= np.uint64(1 << 63)
        if bool(early.any()):
            raise InvalidParameter("ns timestamp", int(ns[early][0]),
                                   f"a {self.clock} clock value the calibration reaches: from "
                                   f"{self.pieces[0].pv.system_time} ns on (its first piece starts at "
                                   f"{self.pieces[0].ns_first} ns; calibrate closer to the trace)")
        out = np.zeros(ns.shape, dtype=np.uint64)
        idx = self._piece_index(ns)
        for i, p in enumerate(self.pieces):
            m = idx == i
            if m.any():
                out[m] = vec.kvmclock_to_tsc(ns[m], p.pv)
        outside = int(np.count_nonzero((ns < np.uint64(self.pieces[0].ns_first))
                                       | (ns > np.uint64(self.pieces[-1].ns_last))))
        return out, outside

    def to_ns(self, tsc: Any) -> np.ndarray:
        """TSC cycles (uint64 array) -> ns of this clock, with the piece whose TSC range holds each."""
        tsc = np.asarray(tsc, dtype=np.uint64)
        starts = np.array([p.tsc_first for p in self.pieces], dtype=np.uint64)
        idx = np.clip(np.searchsorted(starts, tsc, side="right") - 1, 0, len(self.pieces) - 1)
        out = np.zeros(tsc.shape, dtype=np.uint64)
        for i, p in enumerate(self.pieces):
            m = idx == i
            if m.any():
                out[m] = vec.tsc_to_kvmclock(tsc[m], p.pv)
        return out

    def judge(self, ns: Any, lo: Any, hi: Any) -> dict[str, Any]:
        """This map judged on fresh pairs (ns of this clock, TSC brackets): pairs whose bracket is far wider than
        the calibration's usual one are set aside; the verdict is fail when a calm pair's prediction lies
        further beyond its bracket than the stated bound."""
        err = self.errors(ns, lo, hi)
        width = np.asarray(hi, dtype=np.uint64) - np.asarray(lo, dtype=np.uint64)
        calm = width <= np.uint64(max(self.median_bracket_cycles, 1) * DISTURBED_FACTOR)
        beyond = int(np.count_nonzero(err[calm] > np.uint64(self.bound_cycles)))
        worst = int(err[calm].max()) if calm.any() else None
        return {"fresh_pairs": int(calm.sum()), "disturbed": int((~calm).sum()), "beyond_bound": beyond,
                "max_error_cycles": worst, "max_error_ns": ns_or_none(worst, self.tsc_khz),
                "verdict": "pass" if calm.any() and not beyond else "fail"}

    def errors(self, ns: Any, lo: Any, hi: Any) -> np.ndarray:
        """For pairs (ns, bracket [lo, hi]): how many cycles the TSC predicted for ns lies outside its bracket."""
        pred, _ = self.to_tsc(ns)
        return _distance(pred, np.asarray(lo, dtype=np.uint64), np.asarray(hi, dtype=np.uint64))

    def to_dict(self) -> dict[str, Any]:
        return {"clock": self.clock, "tsc_khz": self.tsc_khz, "boot_id": self.boot_id, "disturbed": self.disturbed,
                "median_bracket_cycles": self.median_bracket_cycles, "bound_cycles": self.bound_cycles,
                "bound_ns": ns_or_none(self.bound_cycles, self.tsc_khz), "notes": self.notes,
                "pieces": [p.to_dict() for p in self.pieces]}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Calibration:
        if not isinstance(d, dict):
            raise InvalidParameter("--calibration", where, "a calibration of one clock (an object)")
        pieces = d.get("pieces")
        if d.get("clock") not in ("local", "perf") or not isinstance(pieces, list) or not 0 < len(pieces) <= 1 << 16:
            raise InvalidParameter("--calibration", where, "a clock (local or perf) and 1 to 65536 pieces")
        out = [Piece.from_dict(p, f"{where} piece {i}") for i, p in enumerate(pieces)]
        if any(b.ns_first <= a.ns_last for a, b in zip(out, out[1:])):
            raise InvalidParameter("--calibration", where, "pieces in ns order, not overlapping")
        khz = d.get("tsc_khz")
        if khz is not None and (type(khz) is not int or not 0 < khz < 1 << 32):
            raise InvalidParameter("--calibration", where, "tsc_khz a positive integer or null")
        boot, notes = d.get("boot_id"), d.get("notes") or []
        counts = [d.get("disturbed") or 0, d.get("median_bracket_cycles") or 0]
        if not all(type(c) is int and 0 <= c < 1 << 64 for c in counts) or not isinstance(notes, list) \
                or not (boot is None or isinstance(boot, str)):
            raise InvalidParameter("--calibration", where, "disturbed and median_bracket_cycles counts, notes a list, "
                                   "boot_id a string")
        return cls(d["clock"], out, khz, boot, counts[0], counts[1], [str(n)[:1000] for n in notes][:100])


def _distance(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Cycles from each x to [lo, hi] (0 inside), exact in uint64."""
    below = np.where(x < lo, lo - x, np.uint64(0))
    above = np.where(x > hi, x - hi, np.uint64(0))
    return below + above


def _fit_piece(ns: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[Piece, int]:
    """One pvclock-shaped piece through pairs (sorted by ns), and how far (cycles) its prediction lies beyond
    the farthest-missed bracket (0: it passes through all of them)."""
    mid = lo + (hi - lo) // np.uint64(2)
    x = (mid - mid[0]).astype(np.float64)
    y = (ns - ns[0]).astype(np.float64)
    slope = float(np.polyfit(x, y, 1)[0]) if len(ns) > 1 and x[-1] > 0 else 0.0
    if slope <= 0:
        raise InvalidParameter("calibration pairs", len(ns), "pairs spread over time (the ns clock did not advance "
                               "with the TSC)")
    # the record's tsc_timestamp before every pair, so that TSCs somewhat earlier than the first pair (events
    # recorded before the calibration) still convert: pvclock arithmetic only runs forward from it
    margin = max(0, min(int(lo[0]), int(int(ns[0]) / slope) - 1, 1 << 40))
    tsc_ts = int(mid[0]) - margin
    pv = pvclock_for(slope, tsc_ts, max(0, int(int(ns[0]) - slope * (int(mid[0]) - tsc_ts))))
    # the intercept: the median of the exact residuals (ns clock minus the record's reading at the bracket middle)
    res = (ns - vec.tsc_to_kvmclock(mid, pv)).view(np.int64)
    pv = Pvclock((pv.system_time + int(np.median(res))) % (1 << 64), pv.tsc_timestamp, pv.tsc_to_system_mul,
                 pv.tsc_shift)
    pred = vec.kvmclock_to_tsc(ns, pv)
    # the true relation is one line through every bracket too: where a bracket is w wide, the two lines differ
    # by at most w there, and by at most the widest of the narrowest brackets of each stretch of the range in
    # between (lines: the difference is largest at an end of a stretch)
    width = hi - lo
    bins = np.array_split(width, max(1, min(BINS, len(width) // MIN_PAIRS)))
    band = max(int(b.min()) for b in bins if len(b))
    beyond = int(_distance(pred, lo, hi).max())
    bound = band + beyond + 1  # +1: the inverse's rounding to a whole cycle
    return Piece(pv, int(ns[0]), int(ns[-1]), int(lo[0]), int(hi[-1]), len(ns), bound), beyond


def _split(ns: np.ndarray, lo: np.ndarray, hi: np.ndarray, depth: int = 0) -> list[Piece]:
    piece, beyond = _fit_piece(ns, lo, hi)
    # a step is a map that misses brackets by far; wide brackets alone (a loaded machine) are none
    if beyond <= STEP_CYCLES or len(ns) < 2 * MIN_PAIRS or depth >= 12:
        return [piece]
    # a step: cut where the residual (predicted TSC minus bracket middle) jumps the most
    pred = vec.kvmclock_to_tsc(ns, piece.pv).view(np.int64)
    mid = (lo + (hi - lo) // np.uint64(2)).view(np.int64)
    jumps = np.abs(np.diff(pred - mid))
    jumps[:MIN_PAIRS - 1] = 0
    jumps[len(jumps) - MIN_PAIRS + 1:] = 0
    cut = int(np.argmax(jumps)) + 1
    if jumps[cut - 1] <= STEP_CYCLES:
        cut = len(ns) // 2
    try:
        return _split(ns[:cut], lo[:cut], hi[:cut], depth + 1) + _split(ns[cut:], lo[cut:], hi[cut:], depth + 1)
    except InvalidParameter:
        # a short stretch on either side too noisy for a line of its own (its ns did not advance with its TSC
        # middles: brackets wide against the stretch, as on a nested guest): the one piece, with its wider bound
        return [piece]


def fit(ns: Sequence[int] | np.ndarray, lo: Sequence[int] | np.ndarray, hi: Sequence[int] | np.ndarray,
        clock: str, tsc_khz: int | None = None, boot_id: str | None = None,
        sched_clock_stable: bool | None = None) -> Calibration:
    """The calibration of ``clock`` from pairs: ns stamps and the TSC brackets [lo, hi] around them.
    ``sched_clock_stable`` False (the node's kernel log: tsalign.node.dmesg) notes what that means for ``perf``."""
    ns_a, lo_a, hi_a = (np.asarray(v, dtype=np.uint64) for v in (ns, lo, hi))
    if not (ns_a.shape == lo_a.shape == hi_a.shape) or ns_a.ndim != 1:
        raise InvalidParameter("calibration pairs", ns_a.shape, "three equally long lists")
    if bool(np.any(hi_a < lo_a)):
        raise InvalidParameter("calibration pairs", int(np.argmax(hi_a < lo_a)), "brackets with lo <= hi")
    order = np.argsort(ns_a, kind="stable")
    ns_a, lo_a, hi_a = ns_a[order], lo_a[order], hi_a[order]
    width = hi_a - lo_a
    median = int(np.median(width)) if len(width) else 0
    keep = width <= np.uint64(max(median, 1) * DISTURBED_FACTOR)
    if int(keep.sum()) < MIN_PAIRS:
        raise InvalidParameter("calibration pairs", int(keep.sum()), f"at least {MIN_PAIRS} undisturbed pairs")
    pieces = _split(ns_a[keep], lo_a[keep], hi_a[keep])
    cal = Calibration(clock, pieces, tsc_khz, boot_id, int((~keep).sum()), median)
    if len(pieces) > 1:
        cal.notes.append(f"{len(pieces) - 1} step(s) of the {clock} clock against the TSC (a new pvclock record, "
                         "a migration or a clock adjustment): one piece each")
    if clock == "perf" and sched_clock_stable is False:
        cal.notes.append(UNSTABLE_PERF_NOTE)
    return cal


#: a calibration's note for the perf clock of a node whose kernel never marked sched_clock stable
UNSTABLE_PERF_NOTE = (
    "sched_clock is not stable on this node (its kernel log never marked it so: e.g. kvm-clock without a TSC-stable "
    "pvclock), so perf's clock (local_clock()) is re-anchored to the timekeeping clock at every tick and held at most "
    "one tick past it: a reading taken after its CPU was away (a vCPU preempted) before the overdue tick ran lags "
    "the TSC by up to that time, which this fit cannot see (the evidence judges it). ftrace's local clock "
    "(sched_clock()) has no such lag: prefer it, or x86-tsc")


def save(path: str, cals: Sequence[Calibration], measured: dict[str, Any] | None = None) -> None:
    """Write ``cals`` (one per clock) to ``path`` as JSON (atomically), with what the measurement said."""
    from ..jsonfile import save_json

    save_json(path, {"format": FORMAT, "version": 1, "clocks": {c.clock: c.to_dict() for c in cals},
                     "measured": measured or {}}, "-o")


def load(path: str) -> dict[str, Calibration]:
    """clock -> calibration, from a file :func:`save` wrote; every field checked."""
    from ..jsonfile import load_json

    doc = load_json(path, "--calibration", "a calibration file (tsalign calibrate -o FILE)", MAX_FILE_BYTES)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1 \
            or not isinstance(doc.get("clocks"), dict) or not doc["clocks"]:
        raise InvalidParameter("--calibration", path, "a tsalign calibration (tsalign calibrate -o FILE)")
    out = {}
    for clock, d in doc["clocks"].items():
        cal = Calibration.from_dict(d, f"{path} clock {str(clock)[:20]}")
        if cal.clock != clock:
            raise InvalidParameter("--calibration", path, f"clock {clock!r} holding a calibration of {cal.clock!r}")
        out[clock] = cal
    return out
