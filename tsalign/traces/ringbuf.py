"""Walk raw ftrace ring-buffer pages (as trace-cmd stores them) -> event timestamps and payload offsets.

The walk is sequential (each event header gives the next one's position), so it is compiled with numba
when available; :func:`walk_pages_py` is the same function run by the interpreter (the reference the
compiled one is tested against). Layout, from the kernel's ring_buffer.c and ``events/header_event``:
page = {u64 timestamp, local_t commit (bits 30/31 flag missed events), data}; event header = u32
``type_len:5, time_delta:27``; type_len 1..28 -> payload of type_len*4 bytes; 0 -> payload length in
the next u32 (which it includes); 29 padding; 30 time extend; 31 absolute time stamp.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..jit import compiled

__all__ = ["ERRORS", "walk_pages", "walk_pages_py"]

#: error codes written to ``err_code``
ERRORS = {1: "commit size larger than the page", 2: "event runs past the end of the page's data",
          3: "zero-length event"}

_TS_MASK59 = (1 << 59) - 1
_COMMIT_MASK = (1 << 20) - 1  # the kernel's RB flags live in bits 30/31; real sizes are < 1 MiB
_MISSED = 1 << 31


def walk_pages_py(buf: Any, page_size: int, data_off: int, commit_size: int,
                  ts_out: Any, off_out: Any, len_out: Any, page_info: Any) -> Any:
    """Walk every page of ``buf`` (uint8, a whole number of pages).

    Writes per event: ``ts_out`` (raw clock units), ``off_out`` (payload start in ``buf``, bytes),
    ``len_out`` (payload bytes). ``page_info[p]`` = (events, missed-events flag, error code, error offset).
    Returns the number of events written.
    """
    n = 0
    npages = buf.shape[0] // page_size
    for p in range(npages):
        base = p * page_size
        ts = np.uint64(0)
        for k in range(8):
            ts |= np.uint64(buf[base + k]) << np.uint64(8 * k)
        commit = 0
        for k in range(commit_size):
            commit |= int(buf[base + 8 + k]) << (8 * k)
        page_info[p, 1] = 1 if (commit & _MISSED) else 0
        size = commit & _COMMIT_MASK
        if size > page_size - data_off:
            page_info[p, 2] = 1
            page_info[p, 3] = base + 8
            continue
        pos = base + data_off
        end = pos + size
        count = 0
        while pos < end:
            if pos + 4 > end:
                page_info[p, 2] = 2
                page_info[p, 3] = pos
                break
            hdr = int(buf[pos]) | (int(buf[pos + 1]) << 8) | (int(buf[pos + 2]) << 16) | (int(buf[pos + 3]) << 24)
            type_len = hdr & 31
            delta = hdr >> 5
            if (type_len == 0 or type_len >= 29) and pos + 8 > end:  # these headers have a second word
                page_info[p, 2] = 2
                page_info[p, 3] = pos
                break
            if type_len == 29:  # padding / discarded event
                if delta == 0:
                    break
                ln = int(buf[pos + 4]) | (int(buf[pos + 5]) << 8) | (int(buf[pos + 6]) << 16) | (int(buf[pos + 7]) << 24)
                if ln == 0:
                    page_info[p, 2] = 3
                    page_info[p, 3] = pos
                    break
                ts += np.uint64(delta)
                pos += 4 + ln
                continue
            if type_len == 30 or type_len == 31:
                arr = int(buf[pos + 4]) | (int(buf[pos + 5]) << 8) | (int(buf[pos + 6]) << 16) | (int(buf[pos + 7]) << 24)
                val = np.uint64((arr << 27) + delta)
                if type_len == 30:
                    ts += val
                else:  # absolute: 59 bits, the top bits stay those of the running stamp
                    ts = (ts & ~np.uint64(_TS_MASK59)) | (val & np.uint64(_TS_MASK59))
                pos += 8
                continue
            ts += np.uint64(delta)
            if type_len == 0:
                ln = int(buf[pos + 4]) | (int(buf[pos + 5]) << 8) | (int(buf[pos + 6]) << 16) | (int(buf[pos + 7]) << 24)
                if ln < 4:
                    page_info[p, 2] = 3
                    page_info[p, 3] = pos
                    break
                start = pos + 8
                plen = ln - 4
                nxt = pos + 4 + ln
            else:
                start = pos + 4
                plen = type_len * 4
                nxt = start + plen
            if nxt > end:
                page_info[p, 2] = 2
                page_info[p, 3] = pos
                break
            ts_out[n] = ts
            off_out[n] = start
            len_out[n] = plen
            n += 1
            count += 1
            pos = nxt
        page_info[p, 0] = count
    return n


walk_pages: Callable[..., Any] = compiled(walk_pages_py, walk_pages_py)
