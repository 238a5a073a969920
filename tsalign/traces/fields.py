"""Decode event fields from raw payload bytes, vectorised over many events of one type.

Integers become numpy arrays (the field's width and signedness); ``char[N]`` and ``__data_loc char[]``
strings become lists of str; other arrays become lists of bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .eventformat import EventFormat, Field

__all__ = ["decode"]


def _gather(raw: np.ndarray, offs: np.ndarray, size: int) -> np.ndarray:
    """(n, size) uint8 matrix of the bytes at offs[i] .. offs[i]+size."""
    idx = offs.astype(np.int64)[:, None] + np.arange(size, dtype=np.int64)[None, :]
    out: np.ndarray = raw[idx]
    return out


def _int(raw: np.ndarray, offs: np.ndarray, f: Field, endian: str) -> np.ndarray:
    m = _gather(raw, offs + f.offset, f.size)
    kind = "i" if f.signed else "u"
    return np.ascontiguousarray(m).view(f"{endian}{kind}{f.size}").reshape(-1)


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode(raws: list[np.ndarray], src: np.ndarray, off: np.ndarray, size: np.ndarray, fmt: EventFormat,
           names: list[str] | None = None, endian: str = "<") -> dict[str, Any]:
    """Fields of events (all of format ``fmt``) whose payloads are at ``raws[src[i]][off[i]:]``."""
    n = int(off.shape[0])
    out: dict[str, Any] = {}
    wanted = [f for f in fmt.fields if not f.name.startswith("common_") and (names is None or f.name in names)]
    groups = [(s, np.nonzero(src == s)[0]) for s in np.unique(src).tolist()] if n else []
    for f in wanted:
        if f.kind == "int" and f.size in (1, 2, 4, 8):
            col = np.zeros(n, dtype=f"{'i' if f.signed else 'u'}{f.size}")
            for s, rows in groups:
                col[rows] = _int(raws[s], off[rows], f, endian)
            out[f.name] = col
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
