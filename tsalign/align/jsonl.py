"""The timeline's JSON lines written by one compiled loop (numba): each byte of a block's lines written once.

tsalign.align.columns builds a block's lines from whole columns with pyarrow's kernels (decimal text of each
integer column, takes of the vocabularies, then one join of ~20 pieces per row: every byte is copied two or three
times). :func:`jsonl_lines` writes the same bytes straight from the columns: the integers' digits, the escaped
strings (comm and event vocabularies, payloads, track labels: escaped by the caller, as JSON string contents) and
the keys between them. The line of a host row (keys sorted, as ``json.dumps(row, sort_keys=True)``)::

    {"comm": "C", "cpu": N, "event": "E", "guest_tsc": N, "host_tsc": N, "payload": "P", "pid": N,
     "side": "host", "tgid": N, "track": "T", "vcpu": N|null}

and of a guest row the same without ``host_tsc`` and ``vcpu``.
"""

from __future__ import annotations

import numpy as np

from ..jit import compiled, put_bytes
from ..traces.digits import PAIRS, POW10, put_decimal
from ..traces.strbuf import pack, string_buffers

__all__ = ["jsonl_lines"]

#: the keys and punctuation between a row's values, in the order written (host rows; guest rows skip two)
_PIECES = ['{"comm": "', '", "cpu": ', ', "event": "', '", "guest_tsc": ', ', "host_tsc": ', ', "payload": "',
           '", "pid": ', ', "side": "host", "tgid": ', ', "side": "guest", "tgid": ', ', "track": "',
           '", "vcpu": ', "}\n", '"}\n', "null"]
_LIT, _LIT_OFFS = pack([p.encode("ascii") for p in _PIECES])
#: bytes of the pieces a row can hold at most, and room for 6 integers (20 digits and a sign each)
_ROW_FIXED = sum(len(p) for p in _PIECES) + 6 * 21


def _put_int_py(out: np.ndarray, pos: int, v: np.int64, pow10: np.ndarray, pairs: np.ndarray) -> int:
    """The signed integer ``v`` in decimal into ``out`` from ``pos`` (compiled)."""
    if v < 0:
        return int(put_decimal(out, pos, np.uint64(-(v + 1)) + np.uint64(1), True, pow10, pairs))
    return int(put_decimal(out, pos, np.uint64(v), False, pow10, pairs))


_put_int = compiled(_put_int_py, _put_int_py, inline=True)


def jsonl_rows_py(is_host: np.ndarray, guest_tsc: np.ndarray, host_tsc: np.ndarray, cpu: np.ndarray,
                  pid: np.ndarray, tgid: np.ndarray, vcpu: np.ndarray, comm_code: np.ndarray, c_data: np.ndarray,
                  c_offs: np.ndarray, event_code: np.ndarray, e_data: np.ndarray, e_offs: np.ndarray,
                  p_data: np.ndarray, p_offs: np.ndarray, track_code: np.ndarray, t_data: np.ndarray,
                  t_offs: np.ndarray, lit: np.ndarray, lo: np.ndarray, pow10: np.ndarray, pairs: np.ndarray,
                  out: np.ndarray) -> int:
    """Each row's JSON line into ``out``; returns the bytes written (compiled by numba). Strings come as data and
    offsets (string ``k``: ``data[offs[k]:offs[k + 1]]``): the vocabularies of comms, events and tracks (indexed by
    the rows' codes) and the payloads (one per row); ``lit``/``lo``: the pieces of :data:`_PIECES`."""
    pos = 0
    for i in range(is_host.size):
        h = is_host[i]
        pos = put_bytes(out, pos, lit, lo[0], lo[1])
        c = comm_code[i]
        pos = put_bytes(out, pos, c_data, c_offs[c], c_offs[c + 1])
        pos = put_bytes(out, pos, lit, lo[1], lo[2])
        pos = _put_int(out, pos, cpu[i], pow10, pairs)
        pos = put_bytes(out, pos, lit, lo[2], lo[3])
        e = event_code[i]
        pos = put_bytes(out, pos, e_data, e_offs[e], e_offs[e + 1])
        pos = put_bytes(out, pos, lit, lo[3], lo[4])
        pos = put_decimal(out, pos, guest_tsc[i], False, pow10, pairs)
        if h:
            pos = put_bytes(out, pos, lit, lo[4], lo[5])
            pos = put_decimal(out, pos, host_tsc[i], False, pow10, pairs)
        pos = put_bytes(out, pos, lit, lo[5], lo[6])
        pos = put_bytes(out, pos, p_data, p_offs[i], p_offs[i + 1])
        pos = put_bytes(out, pos, lit, lo[6], lo[7])
        pos = _put_int(out, pos, pid[i], pow10, pairs)
        pos = put_bytes(out, pos, lit, lo[7], lo[8]) if h else put_bytes(out, pos, lit, lo[8], lo[9])
        pos = _put_int(out, pos, tgid[i], pow10, pairs)
        pos = put_bytes(out, pos, lit, lo[9], lo[10])
        t = track_code[i]
        pos = put_bytes(out, pos, t_data, t_offs[t], t_offs[t + 1])
        if h:
            pos = put_bytes(out, pos, lit, lo[10], lo[11])
            pos = _put_int(out, pos, vcpu[i], pow10, pairs) if vcpu[i] >= 0 else put_bytes(out, pos, lit, lo[13],
                                                                                            lo[14])
            pos = put_bytes(out, pos, lit, lo[11], lo[12])
        else:
            pos = put_bytes(out, pos, lit, lo[12], lo[13])
    return pos


_rows = compiled(jsonl_rows_py)


def jsonl_lines(is_host: np.ndarray, guest_tsc: np.ndarray, host_tsc: np.ndarray, cpu: np.ndarray, pid: np.ndarray,
                tgid: np.ndarray, vcpu: np.ndarray, comm_code: np.ndarray, comms: object, event_code: np.ndarray,
                names: object, payloads: object, track_code: np.ndarray, tracks: object,
                force_python: bool = False) -> memoryview | None:
    """The rows' JSON lines (ASCII bytes, a view of the buffer written); ``comms``, ``names``, ``tracks``: the
    vocabularies' JSON string contents and ``payloads`` the rows' (pyarrow string arrays, escaped already; the
    tracks' labels need no escaping). None without numba (unless
    ``force_python``: the same loop interpreted, for tests) or where a string column is not a plain string array
    (the caller's kernels write those)."""
    fn = jsonl_rows_py if force_python else _rows
    cols = [string_buffers(a) for a in (comms, names, payloads, tracks)]
    if fn is None or any(c is None for c in cols):
        return None
    (c_data, c_offs), (e_data, e_offs), (p_data, p_offs), (t_data, t_offs) = cols  # type: ignore[misc]
    n = len(is_host)
    if not n:
        return memoryview(b"")
    size = n * _ROW_FIXED + int(p_offs[-1] - p_offs[0])
    for code, offs in ((comm_code, c_offs), (event_code, e_offs), (track_code, t_offs)):
        size += int(np.diff(offs)[code].sum())
    out = np.empty(size, dtype=np.uint8)
    i64 = np.int64
    used = fn(np.ascontiguousarray(is_host, dtype=np.bool_), np.ascontiguousarray(guest_tsc, dtype=np.uint64),
              np.ascontiguousarray(host_tsc, dtype=np.uint64), cpu.astype(i64), pid.astype(i64), tgid.astype(i64),
              vcpu.astype(i64), comm_code.astype(i64), c_data, c_offs, event_code.astype(i64), e_data, e_offs,
              p_data, p_offs, track_code.astype(i64), t_data, t_offs, _LIT, _LIT_OFFS, POW10, PAIRS, out)
    return out[:used].data
