"""Text timestamps (``secs.frac`` or integers) -> exact uint64, in one compiled pass over a pyarrow string column.

A text trace prints each timestamp as ``secs.frac`` (ns, µs: a clock in ns) or as an integer (TSC cycles, a
counter). :func:`scan_stamps` reads a column of them as the text reader's rules say (``_arrow_stamps`` in
tsalign.traces.text, which keeps the pyarrow-kernel path for an interpreter without numba and for what this
refuses): per row the digits before an optional ``.`` and the fraction's digits after it, each checked to be ASCII
digits to the end of the string. It returns what those rules decide from (see :class:`Stamps`), so that the caller
applies the same limits (secs' length, fraction digits, 2^64) to whole columns. About 10x faster than the regex
extraction, match and casts it replaces (1.6 M stamps: ~0.5 s -> ~0.05 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..jit import compiled
from .digits import POW10
from .strbuf import string_buffers

__all__ = ["Stamps", "scan_stamps"]

@dataclass
class Stamps:
    """One column's stamps as :func:`scan_stamps` read them.

    ``ns``: the digits before the ``.`` times 10^9 plus the fraction in ns on rows with a ``.``, the integer
    itself elsewhere (uint64); ``dotted``: rows with a ``.``; ``max_secs_len``: the longest run of secs
    digits (all rows); ``frac_len``: fraction digits per row (0 where no ``.``); ``secs_overflow``: a row's secs
    digits are ≥ 2^64; ``ns_overflow``: a dotted row's ns would be ≥ 2^64 (its ``ns`` is then not exact)."""

    ns: np.ndarray
    dotted: np.ndarray
    frac_len: np.ndarray
    max_secs_len: int
    secs_overflow: bool
    ns_overflow: bool


def scan_stamps_py(data: np.ndarray, offsets: np.ndarray, pow10: np.ndarray, ns: np.ndarray,
                   dotted: np.ndarray, frac_len: np.ndarray, stat: np.ndarray) -> bool:
    """Each string ``data[offsets[i]:offsets[i + 1]]`` as ``digits[.digits]`` into the arrays (see :class:`Stamps`);
    ``stat`` gets (max secs length, secs overflow, ns overflow). False when a string is not of that shape (compiled
    by numba)."""
    ten = np.uint64(10)
    billion = np.uint64(1_000_000_000)
    u64max = np.uint64(0xFFFFFFFFFFFFFFFF)
    for i in range(offsets.size - 1):
        a, end = offsets[i], offsets[i + 1]
        v = np.uint64(0)
        j = a
        over = False
        while j < end and 48 <= data[j] <= 57:
            d = np.uint64(data[j] - 48)
            if v > (u64max - d) // ten:
                over = True
            else:
                v = v * ten + d
            j += 1
        n_secs = j - a
        if n_secs == 0:
            return False
        stat[0] = max(stat[0], n_secs)
        if over:
            stat[1] = 1
        if j == end:
            ns[i] = v
            dotted[i] = False
            frac_len[i] = 0
            continue
        if data[j] != 46:  # '.'
            return False
        j += 1
        f = np.uint64(0)
        k = 0
        while j < end and 48 <= data[j] <= 57:
            if k < 9:
                f = f * ten + np.uint64(data[j] - 48)
            k += 1
            j += 1
        if j != end:
            return False
        dotted[i] = True
        frac_len[i] = k
        if k < 9:
            f = f * pow10[9 - k]
        if over or v > (u64max - f) // billion:
            stat[2] = 1
            ns[i] = 0
        else:
            ns[i] = v * billion + f
    return True


_scan = compiled(scan_stamps_py)


def scan_stamps(text: Any, force_python: bool = False) -> Stamps | None:
    """The stamps of ``text`` (a pyarrow string array without nulls); None without numba (unless ``force_python``: the
    same loop interpreted, for tests), for another column (chunked, nulls), or where a string is not
    ``digits[.digits]``."""
    fn = scan_stamps_py if force_python else _scan
    got = string_buffers(text)
    if fn is None or got is None:
        return None
    data, offsets = got
    n = len(text)
    ns = np.empty(n, dtype=np.uint64)
    dotted, frac_len = np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.int64)
    stat = np.zeros(3, dtype=np.int64)
    if not fn(data, offsets, POW10, ns, dotted, frac_len, stat):
        return None
    return Stamps(ns, dotted, frac_len, int(stat[0]), bool(stat[1]), bool(stat[2]))
