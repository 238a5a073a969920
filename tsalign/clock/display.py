"""cycles <-> ns from tsc_khz, for display only (integer floor division, signed allowed)."""

from __future__ import annotations

from ..errors import InvalidParameter

__all__ = ["cycles_to_ns", "ns_or_none", "ns_to_cycles"]


def _check_khz(tsc_khz: int) -> None:
    if tsc_khz <= 0:
        raise InvalidParameter("tsc_khz", tsc_khz, "a positive TSC frequency in kHz, e.g. 2596000")


def cycles_to_ns(cycles: int, tsc_khz: int) -> int:
    """A duration in cycles -> ns (rounded toward minus infinity)."""
    _check_khz(tsc_khz)
    return cycles * 1_000_000 // tsc_khz


def ns_or_none(cycles: int | None, tsc_khz: int | None) -> int | None:
    """:func:`cycles_to_ns`, or None when either the cycles or the frequency is unknown."""
    return None if cycles is None or not tsc_khz else cycles_to_ns(cycles, tsc_khz)


def ns_to_cycles(ns: int, tsc_khz: int) -> int:
    """A duration in ns -> cycles (rounded toward minus infinity)."""
    _check_khz(tsc_khz)
    return ns * tsc_khz // 1_000_000
