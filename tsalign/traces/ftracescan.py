"""ftrace text lines split into their fields by a compiled scanner: what pyarrow's RE2 kernel extracts with
:data:`tsalign.traces.text._FTRACE_BARE` (no instance prefix, TGID or irq-flags column), in one pass (numba).

RE2 extracting submatches spends ~1.4 us a line (most of reading a guest's ftrace text). The pattern::

    ^\\s*(?P<comm>.*?)-(?P<pid>\\d{1,10})\\s+\\[(?P<cpu>\\d{1,5})\\]\\s+(?P<ts>\\d{1,20}|\\d{1,11}\\.\\d{1,12}):\\s+
    (?P<event>[\\w:.-]+):\\s?(?P<payload>.*)\\n?$

is matched here as the regex engine would: after the leading blanks, each ``-`` from the left is tried as the end
of the comm (the lazy ``.*?``), and from a ``-`` on every step is forced — digits up to the blank that must follow,
the CPU in brackets, the timestamp's digits up to ``:`` (or ``.`` then the fraction's), the event up to the last
``:`` of its run of ``[\\w:.-]`` characters (the greedy class gives back to the ``:``), one optional blank, the rest.
The first ``-`` from which the rest matches gives the fields. Character classes are RE2's (ASCII): ``\\s`` is
tab, newline, form feed, carriage return and space; ``\\w`` letters, digits and ``_``. tests/unit/test_fast_readers.py
checks it against the regex (and the line reader) on generated lines.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..jit import compiled

__all__ = ["FIELDS", "scan"]

#: the groups, in the pattern's order
FIELDS = ("comm", "pid", "cpu", "ts", "event", "payload")

_SPACE = np.zeros(256, dtype=np.bool_)
_SPACE[[9, 10, 12, 13, 32]] = True
_DIGIT = np.zeros(256, dtype=np.bool_)
_DIGIT[48:58] = True
_EVENT = _DIGIT.copy()  # [\w:.-]
_EVENT[65:91] = _EVENT[97:123] = True
_EVENT[[ord("_"), ord(":"), ord("."), ord("-")]] = True


def run_end_py(data: np.ndarray, i: int, end: int, cls: np.ndarray) -> int:
    """The end of the run of ``cls`` bytes from ``data[i]`` (at most ``end``) (compiled)."""
    while i < end and cls[data[i]]:
        i += 1
    return i


_run_end = compiled(run_end_py, run_end_py, inline=True)


def scan_py(data: np.ndarray, starts: np.ndarray, space: np.ndarray, digit: np.ndarray, event: np.ndarray,
            out: np.ndarray) -> None:
    """For each line ``data[starts[i]:starts[i + 1]]``: ``out[i] = (matched, start, end of each group)``
    (compiled)."""
    for i in range(starts.size - 1):
        a, end = starts[i], starts[i + 1]
        out[i, 0] = 0
        if end > a and data[end - 1] == 10:
            end -= 1
        c0 = _run_end(data, a, end, space)
        for d in range(c0, end):
            if data[d] != 45:  # '-'
                continue
            p = d + 1
            q = _run_end(data, p, end, digit)
            if q == p or q - p > 10:
                continue
            r = _run_end(data, q, end, space)
            if r == q or r >= end or data[r] != 91:  # '['
                continue
            c_s = r + 1
            c_e = _run_end(data, c_s, end, digit)
            if c_e == c_s or c_e - c_s > 5 or c_e >= end or data[c_e] != 93:  # ']'
                continue
            t_s = _run_end(data, c_e + 1, end, space)
            if t_s == c_e + 1:
                continue
            t_e = _run_end(data, t_s, end, digit)
            k = t_e - t_s
            if k == 0 or t_e >= end:
                continue
            if data[t_e] == 46:  # '.': secs.frac
                if k > 11:
                    continue
                f_e = _run_end(data, t_e + 1, end, digit)
                if f_e == t_e + 1 or f_e - t_e - 1 > 12 or f_e >= end or data[f_e] != 58:
                    continue
                t_e = f_e
            elif data[t_e] != 58 or k > 20:  # ':'
                continue
            e_s = _run_end(data, t_e + 1, end, space)
            if e_s == t_e + 1:
                continue
            run = e_s
            last = -1
            while run < end and event[data[run]]:
                if data[run] == 58 and run > e_s:
                    last = run
                run += 1
            if last < 0:
                continue
            pay = last + 1
            if pay < end and space[data[pay]]:
                pay += 1
            out[i, 0] = 1
            out[i, 1], out[i, 2] = c0, d
            out[i, 3], out[i, 4] = p, q
            out[i, 5], out[i, 6] = c_s, c_e
            out[i, 7], out[i, 8] = t_s, t_e
            out[i, 9], out[i, 10] = e_s, last
            out[i, 11], out[i, 12] = pay, end
            break


def gather_py(data: np.ndarray, begin: np.ndarray, stop: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """``data[begin[i]:stop[i]]`` one after the other into ``out``, their offsets into ``offsets`` (compiled)."""
    pos = 0
    offsets[0] = 0
    for i in range(begin.size):
        for j in range(begin[i], stop[i]):
            out[pos] = data[j]
            pos += 1
        offsets[i + 1] = pos


_scan, _gather = compiled(scan_py), compiled(gather_py)


def scan(block: bytes, starts: np.ndarray) -> Any:
    """The lines of ``block`` (``starts``: each line's start offset, then the end) as a pyarrow struct array of
    :data:`FIELDS` (strings; null where a line does not match, as ``pyarrow.compute.extract_regex`` gives them);
    None without numba."""
    import pyarrow as pa

    if _scan is None or _gather is None:
        return None
    data = np.frombuffer(block, dtype=np.uint8)
    n = starts.size - 1
    spans = np.zeros((n, 13), dtype=np.int64)
    _scan(data, np.ascontiguousarray(starts, dtype=np.int64), _SPACE, _DIGIT, _EVENT, spans)
    ok = spans[:, 0] == 1
    arrays = []
    for k in range(len(FIELDS)):
        begin, stop = spans[:, 1 + 2 * k], spans[:, 2 + 2 * k]
        offsets = np.empty(n + 1, dtype=np.int32)
        out = np.empty(int((stop - begin).sum()), dtype=np.uint8)
        _gather(data, begin, stop, offsets, out)
        arrays.append(pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out)))
    return pa.StructArray.from_arrays(arrays, names=list(FIELDS), mask=pa.array(~ok))
