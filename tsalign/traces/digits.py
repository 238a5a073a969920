"""One integer's digits written into a byte buffer, for the compiled writers (numba; each also runs interpreted).

The column writers (tsalign.traces.fastprint's digit columns, tsalign.traces.printjoin's rows, tsalign.align.jsonl's
JSON lines) call these per value inside their own compiled loops.
"""

from __future__ import annotations

import numpy as np

from ..jit import compiled

__all__ = ["PAIRS", "POW10", "put_decimal", "put_hex"]

#: 10^k for k < 20 (uint64: a value's digit count by comparisons)
POW10 = np.asarray([10**k for k in range(20)], dtype=np.uint64)
#: the two digits of 0..99 (two digits written at a time)
PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8)


def put_decimal_py(out: np.ndarray, pos: int, x: np.uint64, neg: bool, pow10: np.ndarray, pairs: np.ndarray) -> int:
    """The decimal digits of ``x`` (uint64; a ``-`` first where ``neg``) into ``out`` from ``pos``; returns the
    position after them (compiled). ``pow10``, ``pairs``: :data:`POW10`, :data:`PAIRS`."""
    hundred = np.uint64(100)  # (uint64 throughout: numba would mix uint64 and int64 into float64)
    k = 1
    while k < 20 and x >= pow10[k]:
        k += 1
    if neg:
        out[pos] = 45  # '-'
        pos += 1
    j = pos + k
    while x >= hundred:
        q = x // hundred
        r = x - q * hundred
        out[j - 2] = pairs[2 * r]
        out[j - 1] = pairs[2 * r + 1]
        j -= 2
        x = q
    if x >= np.uint64(10):
        out[j - 2] = pairs[2 * x]
        out[j - 1] = pairs[2 * x + 1]
    else:
        out[j - 1] = np.uint8(48) + np.uint8(x)
    return pos + k


def put_hex_py(out: np.ndarray, pos: int, x: np.uint64, digits: np.ndarray) -> int:
    """``x`` in hex as ``%x`` prints it (no leading zeros; 0 is "0"; ``digits``: the 16 characters) into ``out``
    from ``pos``; returns the position after it (compiled)."""
    k = 1
    while k < 16 and x >> (4 * k) != 0:
        k += 1
    for j in range(k):
        out[pos + j] = digits[(x >> (4 * (k - 1 - j))) & 15]
    return pos + k


put_decimal = compiled(put_decimal_py, put_decimal_py, inline=True)
put_hex = compiled(put_hex_py, put_hex_py, inline=True)
