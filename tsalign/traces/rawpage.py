"""Event timestamps of raw ftrace ring-buffer pages, standard library only (node code: a guest's
``tsalign calibrate --pairs-out`` runs where numpy is not installed).

The layout is the one :mod:`tsalign.traces.ringbuf` walks for whole traces (page = {u64 timestamp,
commit, data}; event header u32 ``type_len:5, time_delta:27``; type_len 1..28: payload type_len*4
bytes; 0: payload length in the next u32; 29 padding; 30 time extend; 31 absolute stamp, 59 bits).
Only the timestamps are kept: enough for a few thousand calibration hits per instance.
"""

from __future__ import annotations

import struct

from ..errors import InvalidParameter

__all__ = ["page_timestamps"]

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MASK64 = (1 << 64) - 1
_MASK59 = (1 << 59) - 1
_COMMIT_MASK = (1 << 20) - 1  # the kernel's flags live in bits 30/31
_MISSED = 1 << 31


def page_timestamps(buf: bytes, page_size: int, data_off: int, commit_size: int,
                    source: str = "<pages>") -> tuple[list[int], int]:
    """Timestamps (raw clock units, u64) of every event in ``buf`` (whole pages), and how many pages
    say events were lost before them. A page whose layout is impossible raises InvalidParameter
    naming ``source``, the page and the byte."""
    if page_size <= data_off or commit_size not in (4, 8) or len(buf) % page_size:
        raise InvalidParameter("ring-buffer pages", source, f"whole pages of {page_size} bytes with data at "
                               f"{data_off} and a 4- or 8-byte commit")
    out: list[int] = []
    lost = 0
    for base in range(0, len(buf), page_size):
        ts = _U64.unpack_from(buf, base)[0]
        commit = int.from_bytes(buf[base + 8:base + 8 + commit_size], "little")
        lost += 1 if commit & _MISSED else 0
        size = commit & _COMMIT_MASK
        if size > page_size - data_off:
            raise InvalidParameter("ring-buffer pages", source, f"page {base // page_size}: a commit of at most "
                                   f"{page_size - data_off} bytes (not {size})")
        pos, end = base + data_off, base + data_off + size
        while pos < end:
            hdr = _U32.unpack_from(buf, pos)[0] if pos + 4 <= end else None
            type_len = -1 if hdr is None else hdr & 31
            if hdr is None or ((type_len == 0 or type_len >= 29) and pos + 8 > end):
                raise InvalidParameter("ring-buffer pages", source, f"an event header inside page "
                                       f"{base // page_size}'s data (byte {pos - base} runs past {size})")
            assert hdr is not None
            delta = hdr >> 5
            if type_len == 29 and delta == 0:  # the rest of the page is padding
                break
            word = _U32.unpack_from(buf, pos + 4)[0] if type_len == 0 or type_len >= 29 else 0
            if type_len == 30:  # time extend
                ts = (ts + (word << 27) + delta) & _MASK64
                pos += 8
                continue
            if type_len == 31:  # absolute stamp: its 59 bits replace the running stamp's
                ts = (ts & ~_MASK59 & _MASK64) | (((word << 27) + delta) & _MASK59)
                pos += 8
                continue
            length = word if type_len in (0, 29) else 0
            if type_len in (0, 29) and length < (4 if type_len == 0 else 1):
                raise InvalidParameter("ring-buffer pages", source, f"a non-empty event at page "
                                       f"{base // page_size} byte {pos - base}")
            ts = (ts + delta) & _MASK64
            nxt = pos + 4 + length if type_len in (0, 29) else pos + 4 + type_len * 4
            if nxt > end:
                raise InvalidParameter("ring-buffer pages", source, f"an event inside page {base // page_size}'s "
                                       f"data (byte {pos - base} runs past {size})")
            if type_len != 29:  # padding (a discarded event) carries time, no event
                out.append(ts)
            pos = nxt
    return out, lost
