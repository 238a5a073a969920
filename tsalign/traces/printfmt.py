"""Binary events printed as the kernel prints them, by libtraceevent from the trace's own format files.

tsalign's consumers (offset sources, evidence, analyses) read event payloads in the kernel's text form
(``pio_write at 0x10 size 4 count 1 val 0x...``, ``prev_comm=... prev_state=R+ ==> ...``); a
tracefs text trace carries them as printed. For a binary trace (trace-cmd .dat) libtraceevent — the
library trace-cmd itself prints with — evaluates each event's ``print fmt`` (ternaries,
``__print_symbolic``, ``__print_flags``, ``__get_str``) on the raw record, so both kinds of input give
the same text. It is called through ctypes on ``libtraceevent.so.1`` (Debian ``libtraceevent1``, a
dependency of trace-cmd).

Safety: only the formats of events that occur are parsed, each batch first in a forked child (a
corrupt format that crashes the library is named as an error); each record is copied into a
zero-padded buffer and its ``__data_loc``/``__rel_loc`` fields are checked against the record's size
first; a record that fails the check gets an empty payload and is counted in
:attr:`EventPrinter.bad`, never handed to the library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import InvalidParameter, Unavailable
from .eventformat import EventFormat
from .fastprint import ColumnPrinter, NotColumnar, compile_print_fmt
from .fields import decode
from .table import Chunk, distinct

__all__ = ["EventPrinter"]

_PAD = 4096  # zero bytes after each record: a string without its NUL stops here
_MAX_RECORD = 1 << 16  # a ring-buffer event never exceeds a page
#: events of each type printed by both libtraceevent and the column printer before the latter is trusted
CHECK_EVENTS = 64
_MEMO = 1 << 16  # texts remembered (cleared when full)


class _TepRecord(ctypes.Structure):
    """``struct tep_record`` (libtraceevent's public event-parse.h)."""

    _fields_ = [("ts", ctypes.c_ulonglong), ("offset", ctypes.c_ulonglong), ("missed_events", ctypes.c_longlong),
                ("record_size", ctypes.c_int), ("size", ctypes.c_int), ("data", ctypes.c_void_p),
                ("cpu", ctypes.c_int), ("ref_count", ctypes.c_int), ("locked", ctypes.c_int),
                ("priv", ctypes.c_void_p)]


class _TraceSeq(ctypes.Structure):
    """``struct trace_seq`` (trace-seq.h), with room to spare."""

    _fields_ = [("buffer", ctypes.c_void_p), ("buffer_size", ctypes.c_uint), ("len", ctypes.c_uint),
                ("readpos", ctypes.c_uint), ("state", ctypes.c_int), ("_spare", ctypes.c_char * 64)]


def _library() -> Any:
    name = ctypes.util.find_library("traceevent") or "libtraceevent.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise Unavailable("printing the events of a binary trace needs libtraceevent (Debian/Ubuntu: apt install "
                          "libtraceevent1; it comes with trace-cmd)") from None
    lib.tep_alloc.restype = ctypes.c_void_p
    lib.tep_free.argtypes = [ctypes.c_void_p]
    lib.tep_set_long_size.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.tep_set_file_bigendian.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.tep_parse_event.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    for f in ("trace_seq_init", "trace_seq_reset", "trace_seq_destroy", "trace_seq_terminate"):
        getattr(lib, f).argtypes = [ctypes.POINTER(_TraceSeq)]
    return lib


class EventPrinter:
    """Prints events of one binary trace. ``formats``: the trace's event formats (with their text);
    only the formats of events that occur are handed to libtraceevent, each batch first in a forked
    child: a format whose parsing crashes the library (a corrupt file) is named, never fatal here."""

    def __init__(self, formats: Mapping[int, EventFormat] | Iterable[EventFormat], long_size: int = 8,
                 big_endian: bool = False, source: str = "<trace>") -> None:
        self.lib = _library()
        self.tep = self.lib.tep_alloc()
        if not self.tep:
            raise Unavailable("libtraceevent could not allocate a handle (out of memory?)")
        self.lib.tep_set_long_size(self.tep, long_size)
        self.long_size = long_size
        #: event id -> its column printer (None: not in the subset); id -> whether it printed as libtraceevent
        self.compiled: dict[int, ColumnPrinter | None] = {}
        self.checked: dict[int, bool] = {}
        #: per event type, the (argument, field values) of its expression arguments checked against libtraceevent
        self.seen: dict[int, set[tuple[int, tuple[int, ...]]]] = {}
        #: (event id, record bytes from its own fields on) -> text printed (records repeat: sched_switch pairs)
        self.memo: dict[tuple[int, bytes], str] = {}
        self.body: dict[int, int] = {}
        self.lib.tep_set_file_bigendian(self.tep, 1 if big_endian else 0)
        self.endian = ">" if big_endian else "<"
        self.source = source
        #: formats by ID (a mapping given is used as it is: a .dat's formats are parsed when first used)
        self.formats: Mapping[int, EventFormat] = formats if isinstance(formats, Mapping) else {f.id: f for f in formats}
        self.parsed: set[int] = set()
        #: event id -> [(offset, size) of each __data_loc / __rel_loc field, relative flag]
        self.locs: dict[int, list[tuple[int, int, bool]]] = {}
        self.known: set[int] = set()
        self.seq = _TraceSeq()
        self.lib.trace_seq_init(ctypes.byref(self.seq))
        self.buf = ctypes.create_string_buffer(_MAX_RECORD + _PAD)
        self.rec = _TepRecord()
        self.rec.data = ctypes.cast(self.buf, ctypes.c_void_p)
        self.bad = 0

    def _parse(self, ids: list[int]) -> None:
        """Hand the formats of ``ids`` to libtraceevent, after a forked child survived the same."""
        todo = [self.formats[i] for i in ids if i in self.formats]
        self.parsed.update(ids)
        if not todo:
            return
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the probe: parse in a throw-away copy of this process, naming each format first
            os.close(r)
            tep = self.lib.tep_alloc()
            for f in todo:
                os.write(w, f.full_name.encode()[:200] + b"\n")
                text = f.text.encode("utf-8", "replace")
                self.lib.tep_parse_event(tep, text, len(text), f.system.encode())
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            names = pipe.read().decode("utf-8", "replace").splitlines()
        _, status = os.waitpid(pid, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status):
            why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
            raise InvalidParameter("trace.dat", self.source,
                                   f"event formats libtraceevent can parse: the format of {names[-1] if names else '?'} "
                                   f"crashed it ({why}); the file's format section is corrupt")
        for f in todo:
            text = f.text.encode("utf-8", "replace")
            if self.lib.tep_parse_event(self.tep, text, len(text), f.system.encode()) == 0:
                self.known.add(f.id)
                self.locs[f.id] = [(x.offset, x.size, x.kind == "rel_loc") for x in f.fields
                                   if x.kind in ("data_loc", "rel_loc")]

    def close(self) -> None:
        if self.tep:
            self.lib.trace_seq_destroy(ctypes.byref(self.seq))
            self.lib.tep_free(self.tep)
            self.tep = None

    def __enter__(self) -> EventPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _locs_ok(self, data: bytes, ev_id: int) -> bool:
        """Every dynamic field of the record lies inside it."""
        size = len(data)
        for off, fsize, rel in self.locs.get(ev_id, ()):
            if off + fsize > size:
                return False
            if fsize == 4:
                v = int.from_bytes(data[off:off + 4], "big" if self.endian == ">" else "little")
                start, length = v & 0xFFFF, v >> 16
                if rel:
                    start += off + 4
                if start + length > size:
                    return False
        return True

    def payloads(self, chunk: Chunk) -> Any:
        """The print-fmt text of every event of ``chunk`` (a binary chunk), trailing blanks removed, as a pyarrow
        string array.

        Event types whose print fmt :mod:`tsalign.traces.fastprint` evaluates in columns are printed that way
        once their first events (:data:`CHECK_EVENTS`) came out the same as libtraceevent prints them; the
        rest, and records too short for their fields, one by one through libtraceevent."""
        import pyarrow as pa

        assert chunk.src is not None and chunk.off is not None and chunk.size is not None and chunk.type_id is not None
        types = distinct(chunk.type_id).tolist()
        new = [int(i) for i in types if int(i) not in self.parsed]
        if new:
            self._parse(new)
        where: list[np.ndarray] = []
        texts: list[Any] = []
        slow = np.ones(len(chunk), dtype=bool)
        for t in types:
            cp = self._column_printer(int(t))
            if cp is None:
                continue
            rows = np.nonzero((chunk.type_id == t) & (chunk.size >= cp.min_size) & (chunk.size <= _MAX_RECORD))[0]
            if not rows.size:
                continue
            cols = decode(chunk.raws, chunk.src[rows], chunk.off[rows], chunk.size[rows], cp.fmt, cp.fields,
                          self.endian, arrow_strings=True)
            try:
                text = cp.format_arrow(cols, int(rows.size))
            except NotColumnar:  # (a value whose text only libtraceevent knows: this chunk's events of the type)
                continue
            if int(t) not in self.checked:
                k = rows[:CHECK_EVENTS]
                self.checked[int(t)] = self._print_rows(chunk, k) == text.slice(0, len(k)).to_pylist()
                if not self.checked[int(t)]:
                    continue
            fresh = cp.new_values(cols, self.seen.setdefault(int(t), set()))
            if fresh.size and self._print_rows(chunk, rows[fresh]) != text.take(pa.array(fresh)).to_pylist():
                self.checked[int(t)] = False  # an expression argument printed otherwise: the type stays with the library
                continue
            where.append(rows)
            texts.append(text)
            slow[rows] = False
        rows = np.nonzero(slow)[0]
        if rows.size:
            where.append(rows)
            texts.append(pa.array(self._print_rows(chunk, rows), pa.string()))
        if len(texts) == 1:
            return texts[0]  # (one part: every row, in order)
        at = np.empty(len(chunk), dtype=np.int64)
        at[np.concatenate(where)] = np.arange(len(chunk), dtype=np.int64)
        return pa.concat_arrays([x.cast(pa.string()) for x in texts]).take(pa.array(at))

    def fields(self, chunk: Chunk, wanted: Mapping[str, tuple[tuple[str, ...], Any]]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(field 0, field 1, matched, rows covered) of ``chunk`` (a binary chunk) for the event types named in
        ``wanted`` (bare name -> (integer fields read, their columns -> (field 0, field 1, matched) or None)) whose
        formats hold those fields and whose records are long enough; None when no row is covered."""
        assert chunk.src is not None and chunk.off is not None and chunk.size is not None and chunk.type_id is not None
        n = len(chunk)
        out = (np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=bool),
               np.zeros(n, dtype=bool))
        for t in distinct(chunk.type_id).tolist():
            fmt = self.formats.get(int(t))
            how = wanted.get(fmt.name) if fmt is not None else None
            if fmt is None or how is None:
                continue
            fs = [fmt.get(name) for name in how[0]]
            if any(f is None or f.kind != "int" or f.size not in (1, 2, 4, 8) for f in fs):
                continue
            need = max(f.offset + f.size for f in fs if f is not None)
            rows = np.nonzero((chunk.type_id == t) & (chunk.size >= need))[0]
            got = how[1](decode(chunk.raws, chunk.src[rows], chunk.off[rows], chunk.size[rows], fmt, list(how[0]),
                                self.endian)) if rows.size else None
            if got is not None:
                out[0][rows], out[1][rows], out[2][rows] = got
                out[3][rows] = True
        return out if out[3].any() else None

    def _column_printer(self, ev: int) -> ColumnPrinter | None:
        """The column printer of event type ``ev``, unless it is unknown, has dynamic fields or failed its check."""
        if ev not in self.known or self.locs.get(ev) or self.checked.get(ev) is False or ev not in self.formats:
            return None
        if ev not in self.compiled:
            self.compiled[ev] = compile_print_fmt(self.formats[ev], self.long_size)
        return self.compiled[ev]

    def _print_rows(self, chunk: Chunk, rows: np.ndarray) -> list[str]:
        """libtraceevent's text of events ``rows`` of ``chunk``, one call each."""
        assert chunk.src is not None and chunk.off is not None and chunk.size is not None and chunk.type_id is not None
        out = [""] * len(rows)
        lib, seq, rec, buf = self.lib, ctypes.byref(self.seq), self.rec, self.buf
        ptr = ctypes.byref(rec)
        fmt, info = ctypes.c_char_p(b"%s"), ctypes.c_char_p(b"INFO")  # tep_print_event is variadic: typed here
        tep = ctypes.c_void_p(self.tep)
        zeros = bytes(_PAD)
        memo = self.memo
        for i, (src, off, size, ev, ts, cpu) in enumerate(zip(chunk.src[rows].tolist(), chunk.off[rows].tolist(),
                                                           chunk.size[rows].tolist(), chunk.type_id[rows].tolist(),
                                                           chunk.ts[rows].tolist(), chunk.cpu[rows].tolist())):
            if ev not in self.known:
                continue
            data = np.asarray(chunk.raws[src][off:off + size]).tobytes()
            key = (ev, data[self._body(ev):])
            hit = memo.get(key)
            if hit is not None:
                out[i] = hit
                continue
            if len(data) > _MAX_RECORD or not self._locs_ok(data, ev):
                self.bad += 1
                continue
            ctypes.memmove(buf, data + zeros, len(data) + _PAD)
            rec.ts, rec.size, rec.record_size, rec.cpu = ts, len(data), len(data), cpu
            lib.trace_seq_reset(seq)
            lib.tep_print_event(tep, seq, ptr, fmt, info)
            lib.trace_seq_terminate(seq)
            if self.seq.buffer and self.seq.len:
                out[i] = ctypes.string_at(self.seq.buffer, self.seq.len).decode("utf-8", "replace").rstrip()
            if len(memo) >= _MEMO:
                memo.clear()
            memo[key] = out[i]
        return out

    def _body(self, ev: int) -> int:
        """Where event type ``ev``'s own fields start (after ``common_*``): a print fmt that reads only those
        prints records equal from there the same; one that reads a ``common_*`` field keys on the whole record."""
        b = self.body.get(ev)
        if b is None:
            f = self.formats.get(ev)
            own = [x.offset for x in f.fields if not x.name.startswith("common_")] if f else []
            b = self.body[ev] = 0 if f is None or "common_" in f.print_fmt else min(own, default=0)
        return b
