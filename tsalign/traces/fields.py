"""Decode event fields from raw payload bytes, vectorised over many events of one type.

Integers become numpy arrays (the field's width and signedness); ``char[N]`` and ``__data_loc char[]``
strings become lists of str (``char[N]``: a pyarrow string array with ``arrow_strings``, made in whole columns);
other arrays become lists of bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..jit import compiled
from .eventformat import EventFormat, Field
from .table import distinct

__all__ = ["decode"]


def gather_rows_py(raw: np.ndarray, offs: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = raw[offs[i]:offs[i] + out.shape[1]]`` for every row (compiled; the caller checks the bounds)."""
    size = out.shape[1]
    for i in range(offs.size):
        a = offs[i]
        for j in range(size):
            out[i, j] = raw[a + j]


_gather_rows = compiled(gather_rows_py)


def _gather(raw: np.ndarray, offs: np.ndarray, size: int) -> np.ndarray:
    """(n, size) uint8 matrix of the bytes at offs[i] .. offs[i]+size: one compiled pass where every row lies in
    ``raw`` (an index outside it raises IndexError, as numpy's gather does: a corrupt record)."""
    o = offs.astype(np.int64)
    if _gather_rows is not None and o.size and int(o.min()) >= 0 and int(o.max()) + size <= raw.size:
        out = np.empty((o.size, size), dtype=np.uint8)
        _gather_rows(raw, o, out)
        return out
    idx = o[:, None] + np.arange(size, dtype=np.int64)[None, :]
    got: np.ndarray = raw[idx]
    return got


def _int(raw: np.ndarray, offs: np.ndarray, f: Field, endian: str) -> np.ndarray:
    m = _gather(raw, offs + f.offset, f.size)
    kind = "i" if f.signed else "u"
    return np.ascontiguousarray(m).view(f"{endian}{kind}{f.size}").reshape(-1)


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def _cstr_column(ms: list[tuple[np.ndarray, np.ndarray]], n: int) -> Any:
    """``char[N]`` values (``(rows, (k, N) bytes)`` per source) as a pyarrow string array: each up to its first NUL,
    invalid UTF-8 replaced as ``bytes.decode("utf-8", "replace")`` does (those rows decoded one by one)."""
    import pyarrow as pa

    width = ms[0][1].shape[1] if ms else 0
    m = np.zeros((n, width), dtype=np.uint8)
    for rows, part in ms:
        m[rows] = part
    nul = m == 0
    length = np.where(nul.any(axis=1), nul.argmax(axis=1), width).astype(np.int64)
    data = m[np.arange(width)[None, :] < length[:, None]]
    offs = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=offs[1:])
    if offs[-1] >= 1 << 31:
        return pa.array([_cstr(r.tobytes()) for r in m], pa.string())
    arr = pa.StringArray.from_buffers(n, pa.py_buffer(offs.astype(np.int32)), pa.py_buffer(data))
    if data.size and int(data.max()) >= 0x80:
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid:  # not UTF-8 somewhere: those rows as Python decodes them
            big = np.nonzero((m >= 0x80).any(axis=1))[0]
            fixed = pa.array([_cstr(m[i].tobytes()) for i in big.tolist()], pa.string())
            import pyarrow.compute as pc

            mask = np.zeros(n, dtype=bool)
            mask[big] = True
            arr = pc.replace_with_mask(arr, pa.array(mask), fixed)
    return arr


def decode(raws: list[np.ndarray], src: np.ndarray, off: np.ndarray, size: np.ndarray, fmt: EventFormat,
           names: list[str] | None = None, endian: str = "<", arrow_strings: bool = False) -> dict[str, Any]:
    """Fields of events (all of format ``fmt``) whose payloads are at ``raws[src[i]][off[i]:]``."""
    n = int(off.shape[0])
    out: dict[str, Any] = {}
    wanted = [f for f in fmt.fields if not f.name.startswith("common_") and (names is None or f.name in names)]
    groups = [(s, np.nonzero(src == s)[0]) for s in distinct(src).tolist()] if n else []
    ints = [f for f in wanted if f.kind == "int" and f.size in (1, 2, 4, 8)]
    lo, hi = min((f.offset for f in ints), default=0), max((f.offset + f.size for f in ints), default=0)
    if ints and hi - lo > 2 * sum(f.size for f in ints):  # fields far apart: one gather each
        for f in ints:
            col = np.zeros(n, dtype=f"{'i' if f.signed else 'u'}{f.size}")
            for s, rows in groups:
                col[rows] = _int(raws[s], off[rows], f, endian)
            out[f.name] = col
    elif ints:  # one gather of the span the integer fields cover, each field a slice of it
        span = np.zeros((n, hi - lo), dtype=np.uint8)
        for s, rows in groups:
            span[rows] = _gather(raws[s], off[rows] + lo, hi - lo)
        for f in ints:
            kind = "i" if f.signed else "u"
            out[f.name] = np.ascontiguousarray(span[:, f.offset - lo:f.offset - lo + f.size]).view(
                f"{endian}{kind}{f.size}").reshape(-1).astype(f"{kind}{f.size}")
    for f in wanted:
        if f.kind == "int" and f.size in (1, 2, 4, 8):
            continue
        if f.kind == "string" and arrow_strings:
            out[f.name] = _cstr_column([(rows, _gather(raws[s], off[rows] + f.offset, f.size)) for s, rows in groups], n)
            continue
        vals: list[Any] = [None] * n
        for s, rows in groups:
            raw = raws[s]
            if f.kind in ("string", "array"):
                m = _gather(raw, off[rows] + f.offset, f.size)
                conv = _cstr if f.kind == "string" else bytes
                for i, r in zip(rows.tolist(), m):
                    vals[i] = conv(r.tobytes())
            elif f.kind in ("data_loc", "rel_loc"):
                loc = _int(raw, off[rows], Field(f.name, "u32", f.offset, 4, False, "int"), endian).astype(np.int64)
                start = loc & 0xFFFF
                ln = loc >> 16
                if f.kind == "rel_loc":
                    start = start + f.offset + 4
                base = off[rows].astype(np.int64)
                limit = base + size[rows].astype(np.int64)
                for i, b, st, ln_, lim in zip(rows.tolist(), base.tolist(), start.tolist(), ln.tolist(), limit.tolist()):
                    a, z = b + st, min(b + st + ln_, lim)
                    data = raw[a:z].tobytes() if a < z else b""
                    vals[i] = _cstr(data) if "char" in f.type else data
            else:
                m = _gather(raw, off[rows] + f.offset, f.size)
                for i, r in zip(rows.tolist(), m):
                    vals[i] = r.tobytes()
        out[f.name] = vals
    return out
