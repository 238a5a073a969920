"""A print fmt's pieces written row by row by one compiled loop (numba), trailing blanks trimmed as it goes.

:meth:`tsalign.traces.fastprint.ColumnPrinter.format_arrow` evaluates each conversion of a print fmt in whole
columns; joining them with pyarrow's kernels makes a text column per conversion (digits, a take of an expression's
texts, a ternary's if_else), then one join of all the pieces and a trim: every byte is copied three or four times.
:func:`join_pieces` writes each row's bytes once, from what the pieces are before they become text:

- a literal (the fmt's text between conversions);
- a vocabulary and a code per row (an expression's texts per distinct value tuple; a ternary's two texts);
- an integer per row printed as ``%d``/``%u`` (sign and decimal digits) or ``%x``/``%X``, without width, precision
  or a ``+``/blank flag (the others are text columns already, made by the caller's kernels);
- a text column (one string per row).

Only ASCII text is written here (the caller checks its pieces): then Python's ``str.rstrip()``, which the printer
matches, removes exactly the ASCII bytes that ``str.isspace`` calls blank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..jit import compiled, put_bytes
from .digits import PAIRS, POW10, put_decimal, put_hex
from .strbuf import pack, string_buffers

__all__ = ["Piece", "join_pieces"]

#: piece kinds
LIT, VOCAB, DEC, HEX, HEXU, COL = range(6)
#: rows whose values are copied into the loop's buffer at a time (memory, not speed: see join_pieces)
_BLOCK_ROWS = 8192

#: ASCII bytes ``str.isspace`` calls blank (what str.rstrip() removes from ASCII text)
_BLANK = np.zeros(256, dtype=np.bool_)
_BLANK[[b for b in range(128) if chr(b).isspace()]] = True
_HEX_LOWER = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


@dataclass
class Piece:
    """One piece of a row (see the module doc): ``kind``; ``texts`` (LIT: one; VOCAB: the vocabulary; COL: one per
    row: a sequence of str or a pyarrow string array); ``values`` (VOCAB: codes; DEC/HEX/HEXU: magnitudes, uint64);
    ``neg`` (DEC: a ``-`` first)."""

    kind: int
    texts: Any = None
    values: np.ndarray | None = None
    neg: np.ndarray | None = None


def join_rows_py(kinds: np.ndarray, base: np.ndarray, vals: np.ndarray, negs: np.ndarray, rows: int, row0: int,
                 sdata: np.ndarray, soffs: np.ndarray, blank: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                 pow10: np.ndarray, pairs: np.ndarray, out: np.ndarray, pos: int, offsets: np.ndarray) -> int:
    """Rows ``row0 + i`` for i < ``rows``: each one's pieces ``k`` one after the other into ``out`` from ``pos``, then
    trailing ``blank`` bytes removed; ``offsets[row0 + i + 1]`` gets each row's end; returns the position after them
    (compiled by numba). A string piece is string ``base[k] + j`` of ``sdata``/``soffs`` (j: ``vals[k, i]`` for a
    vocabulary, the row for a column, 0 for a literal); an integer piece is ``vals[k, i]`` (``negs[k, i]``: a ``-``
    first)."""
    for i in range(rows):
        start = pos
        for k in range(kinds.size):
            kind = kinds[k]
            if kind == DEC:
                pos = put_decimal(out, pos, vals[k, i], negs[k, i], pow10, pairs)
            elif kind == HEX or kind == HEXU:
                if negs[k, i]:  # (as Python's % prints a negative number in hex)
                    out[pos] = 45
                    pos += 1
                pos = put_hex(out, pos, vals[k, i], lower if kind == HEX else upper)
            else:
                s = base[k] + (np.int64(vals[k, i]) if kind == VOCAB else row0 + i if kind == COL else 0)
                pos = put_bytes(out, pos, sdata, soffs[s], soffs[s + 1])
        while pos > start and blank[out[pos - 1]]:
            pos -= 1
        offsets[row0 + i + 1] = pos
    return pos


_join_rows = compiled(join_rows_py)


def _texts(t: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(the bytes of the strings ``t`` back to back (uint8), their lengths (int64)); None where one is not ASCII.
    A pyarrow string array is read from its buffers (a text column: no Python string per row)."""
    import pyarrow as pa

    if isinstance(t, (pa.Array, pa.ChunkedArray)):
        got = string_buffers(t.combine_chunks() if isinstance(t, pa.ChunkedArray) else t)
        if got is None:
            return None
        data, offs = got
        data = data[int(offs[0]):int(offs[-1])]
    else:
        data, offs = pack([s.encode("utf-8") for s in ([t] if isinstance(t, str) else t)])
    if data.size and int(data.max()) >= 0x80:
        return None
    return data, np.diff(offs)


def join_pieces(pieces: Sequence[Piece], n: int, force_python: bool = False) -> Any | None:
    """The ``n`` rows of ``pieces`` joined and right-trimmed, as a pyarrow string array; None without numba (unless
    ``force_python``: the loop interpreted, for tests), where a text is not ASCII, or over 2 GiB of text."""
    import pyarrow as pa

    fn = join_rows_py if force_python else _join_rows
    if fn is None or not pieces:
        return None
    k = len(pieces)
    kinds = np.asarray([p.kind for p in pieces], dtype=np.int64)
    base = np.zeros(k, dtype=np.int64)
    chunks: list[np.ndarray] = []
    lens: list[np.ndarray] = []
    nstr = 0
    bound = 0
    for j, p in enumerate(pieces):
        if p.kind in (DEC, HEX, HEXU):
            bound += (21 if p.kind == DEC else 17) * n
            continue
        got = _texts(p.texts)
        if got is None:
            return None
        data, ln = got
        if p.kind == COL and len(ln) != n:
            raise ValueError(f"a text column of {len(ln)} rows for {n} rows")
        base[j] = nstr
        chunks.append(data)
        lens.append(ln)
        nstr += len(ln)
        if p.kind == VOCAB:
            assert p.values is not None
            codes = np.asarray(p.values, dtype=np.int64)
            if n and (int(codes.min()) < 0 or int(codes.max()) >= len(ln)):
                raise ValueError("a code outside its vocabulary")
            bound += int(ln[codes].sum()) if n else 0
        else:
            bound += int(ln.sum()) if p.kind == COL else int(ln[0]) * n
    if bound >= 1 << 31:
        return None
    soffs = np.zeros(nstr + 1, dtype=np.int64)
    if lens:
        np.cumsum(np.concatenate(lens), out=soffs[1:])
    sdata = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
    out = np.empty(max(bound, 1), dtype=np.uint8)  # (only the bytes written are touched)
    offsets = np.empty(n + 1, dtype=np.int32)
    offsets[0] = 0
    # the rows' values a block at a time, in a small buffer: a matrix of every row's values would hold ~100 bytes
    # a row more (12 pieces) for as fast a loop (measured: 1 M rows 0.28 s either way)
    step = min(n, _BLOCK_ROWS) or 1
    vals = np.zeros((k, step), dtype=np.uint64)
    negs = np.zeros((k, step), dtype=np.bool_)
    held = [(j, p) for j, p in enumerate(pieces) if p.kind in (VOCAB, DEC, HEX, HEXU)]
    pos = 0
    for lo in range(0, n, step):
        m = min(step, n - lo)
        for j, p in held:
            assert p.values is not None
            vals[j, :m] = p.values[lo:lo + m]
            if p.neg is not None:
                negs[j, :m] = p.neg[lo:lo + m]
        pos = fn(kinds, base, vals, negs, m, lo, sdata, soffs, _BLANK, _HEX_LOWER, _HEX_UPPER, POW10, PAIRS, out, pos,
                 offsets)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out[:int(offsets[-1])]))
