"""Which rows of an alignment its timeline outputs hold (``tsalign align --window/--window-tsc/--only``): a window
of the guest TSC axis and the events named. The verdict always judges every row; only the files written are cut
(a 50 M-event capture's 12 GB of JSON lines, or a Perfetto trace too large for its UI, narrowed to what is looked at).

Pure functions: the window's parse (decimal seconds, exact: no float), the cycles it spans, and the rows it keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from ..capture.tracefs import EVENT_NAME
from ..errors import InvalidParameter
from ..numbers import MAX_SECONDS

if TYPE_CHECKING:
    from .columns import AlignedColumns

__all__ = ["Selection", "parse_only", "parse_seconds_window", "parse_tsc_window", "selected_rows"]


@dataclass(frozen=True)
class Selection:
    """``seconds``: [from, to) in seconds after the alignment's first row (either end None: open); ``tsc``: [from, to)
    in guest TSC cycles; ``only``: event names (``kvm_exit`` or ``kvm:kvm_exit``: host and guest events of that
    name). ``None``: no cut."""

    seconds: tuple[Fraction | None, Fraction | None] | None = None
    tsc: tuple[int | None, int | None] | None = None
    only: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.seconds is not None and self.tsc is not None:
            raise InvalidParameter("--window/--window-tsc", "both given", "one of them, not both")

    def __bool__(self) -> bool:
        return self.seconds is not None or self.tsc is not None or self.only is not None


def _ends(text: str, opt: str, parse: Any, expected: str) -> tuple[Any, Any]:
    lo_s, sep, hi_s = text.partition(":")
    if not sep:
        raise InvalidParameter(opt, text, f"FROM:TO ({expected}; either may be left out: 10: or :20)")
    lo = parse(lo_s.strip()) if lo_s.strip() else None
    hi = parse(hi_s.strip()) if hi_s.strip() else None
    if lo is None and hi is None:
        raise InvalidParameter(opt, text, f"FROM:TO with at least one end ({expected})")
    if lo is not None and hi is not None and not lo < hi:
        raise InvalidParameter(opt, text, f"FROM:TO with FROM before TO ({expected})")
    return lo, hi


def parse_seconds_window(text: str) -> tuple[Fraction | None, Fraction | None]:
    """``FROM:TO`` in decimal seconds after the first row (``10:12.5``, ``:30``, ``100:``), exact."""
    def sec(s: str) -> Fraction:
        if not s or any(c not in "0123456789." for c in s) or s.count(".") > 1 or s == ".":
            raise InvalidParameter("--window", text, "FROM:TO in seconds after the first event, decimals (10:12.5)")
        v = Fraction(s)
        if v > MAX_SECONDS:
            raise InvalidParameter("--window", text, "seconds up to a year")
        return v
    lo, hi = _ends(text, "--window", sec, "seconds after the first event, decimals")
    return lo, hi


def parse_tsc_window(text: str) -> tuple[int | None, int | None]:
    """``FROM:TO`` in guest TSC cycles (decimal or 0x-hex, unsigned 64-bit)."""
    from ..numbers import parse_u64

    lo, hi = _ends(text, "--window-tsc", lambda s: parse_u64(s, "--window-tsc"), "guest TSC cycles")
    return lo, hi


def parse_only(text: str) -> tuple[str, ...]:
    """``--only``'s event names, comma-separated: ``name`` or ``system:name``, spelt as a capture's ``--events``
    takes them (``tsalign.capture.tracefs.EVENT_NAME``) but for ``*``."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names or not all(n.partition(":")[2] != "*" and EVENT_NAME.fullmatch(n if ":" in n else f"any:{n}")
                            for n in names):
        raise InvalidParameter("--only", text, "event names, comma-separated (kvm_exit or kvm:kvm_exit)")
    return names


def seconds_to_tsc(window: tuple[Fraction | None, Fraction | None], first: int, tsc_khz: int
                   ) -> tuple[int | None, int | None]:
    """The guest TSC span of ``window`` (seconds after ``first``): each end ``first + ceil(s * kHz * 1000)``, so
    that a row is in the window exactly when its time after ``first``, in seconds, is in [from, to)."""
    def at(s: Fraction | None) -> int | None:
        if s is None:
            return None
        return first + math.ceil(s * tsc_khz * 1000)
    return at(window[0]), at(window[1])


def selected_rows(c: AlignedColumns, sel: Selection, tsc_khz: int | None) -> tuple[slice | np.ndarray, dict[str, Any]]:
    """The rows of ``c`` ``sel`` keeps (a slice where only a window cuts: the rows are in guest TSC order) and what it was,
    for the verdict: the window in cycles, the names matched, the rows kept. Raises :class:`InvalidParameter` for a
    seconds window without a TSC frequency and for a name no event of the alignment has (a typo would write empty
    files)."""
    guest_tsc = c.guest_tsc
    n = len(guest_tsc)
    doc: dict[str, Any] = {}
    lo, hi = 0, n
    span = sel.tsc
    if sel.seconds is not None:
        if not tsc_khz:
            raise InvalidParameter("--window", ":".join("" if s is None else str(float(s)) for s in sel.seconds),
                                   "a TSC frequency to count seconds in: give --tsc-khz (neither input records one), "
                                   "or a window in cycles with --window-tsc")
        span = seconds_to_tsc(sel.seconds, int(guest_tsc[0]) if n else 0, tsc_khz)
        doc["window_s"] = [None if s is None else float(s) for s in sel.seconds]
    if span is not None:
        if span[0] is not None:
            lo = int(np.searchsorted(guest_tsc, np.uint64(span[0]), side="left"))
        if span[1] is not None:
            hi = max(lo, int(np.searchsorted(guest_tsc, np.uint64(span[1]), side="left")))
        doc["window_guest_tsc"] = list(span)
    rows: slice | np.ndarray = slice(lo, hi)
    if sel.only is not None:
        bare = c.bare_names()
        want = {o.split(":")[-1] for o in sel.only}
        missing = sorted(want - set(bare.tolist()))
        if missing:
            raise InvalidParameter("--only", ",".join(sel.only),
                                   f"names of events in these traces (none is {', '.join(missing)}; they hold "
                                   f"{', '.join(sorted(set(bare.tolist()))[:40])})")
        rows = np.nonzero(np.isin(bare, list(want))[c.event_code[lo:hi]])[0] + lo
        doc["only"] = sorted(want)
    doc["rows"] = (hi - lo) if isinstance(rows, slice) else len(rows)
    doc["of"] = n
    if n and not doc["rows"]:  # (said, not only written as empty files)
        length = int(guest_tsc[-1]) - int(guest_tsc[0])
        doc["note"] = ("the timeline's files hold no event: none is in the window (and of the events named); the "
                       f"events span guest TSC {int(guest_tsc[0])}..{int(guest_tsc[-1])}"
                       + (f", {length / (tsc_khz * 1000):.6f} s" if tsc_khz else ""))
    return rows, doc
