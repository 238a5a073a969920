"""The aligned timeline as columns: one numpy array per field, events in guest-axis order.

``align`` converts the host side per vCPU in whole columns (:func:`host_on_guest_axis`) and sorts once;
the outputs are written from the columns a chunk at a time (:meth:`AlignedColumns.write_jsonl`,
:meth:`AlignedColumns.record_batches`, tsalign.report.perfetto); dicts (:meth:`AlignedColumns.rows`) are made
only of the rows a reader of dicts needs (:meth:`AlignedColumns.select`: an analysis' events).

Columns: ``guest_tsc`` (uint64, guest TSC cycles: the common axis), ``is_host`` (bool), ``host_tsc``
(uint64, host TSC cycles; 0 on guest rows), ``cpu``, ``pid``, ``tgid``, ``vcpu`` (int32, int64 where a value
needs it; ``vcpu`` -1 where the event is not on a vCPU thread or is a guest event), ``comm_code`` and
``event_code`` (int32 codes into the vocabularies ``comms`` and ``names``; the ``comm`` and ``event`` properties
give the strings), ``payload`` (object array of str; None where a payload policy left the text in its side's
spill, which :meth:`AlignedColumns.blocks` reads back, as a pyarrow string array per block; with a policy, a
:class:`~tsalign.traces.sparse.SparseTexts` of the few it kept).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..heap import release_freed_memory
from ..jit import compiled
from ..offsets import OffsetTimeline
from ..traces.events import Events, narrow, objects
from ..traces.fastprint import decimal_text
from ..traces.sparse import SparseTexts, payload_strings, placed
from ..traces.table import Vocab
from .jsonl import jsonl_lines

__all__ = ["AlignedColumns", "host_on_guest_axis", "record_batches", "vcpu_of_threads",
           "write_jsonl_blocks"]

_enc = json.encoder.encode_basestring_ascii  # C; as json.dumps(ensure_ascii=True) quotes a str


#: the per-row columns (the others, ``comms`` and ``names``, are the vocabularies the codes index)
_ROW = ("guest_tsc", "is_host", "host_tsc", "cpu", "pid", "tgid", "vcpu", "comm_code", "event_code", "payload")


def _joined(vocabs: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One vocabulary of ``vocabs`` (distinct values, first seen first) and, per vocabulary, the code of each of
    its values in it (int32; a one-entry table for an empty one, so that indexing an empty code array works)."""
    v = Vocab()
    luts = [v.codes(voc.tolist()) if len(voc) else np.zeros(1, dtype=np.int32) for voc in vocabs]
    return objects(v.items), luts


@dataclass
class AlignedColumns:
    """Both sides' events on the guest TSC axis (see the module doc for the columns)."""

    guest_tsc: np.ndarray
    is_host: np.ndarray
    host_tsc: np.ndarray
    cpu: np.ndarray
    pid: np.ndarray
    tgid: np.ndarray
    vcpu: np.ndarray
    comm_code: np.ndarray
    event_code: np.ndarray
    payload: np.ndarray | SparseTexts
    comms: np.ndarray
    names: np.ndarray
    #: where a side's payloads are in a spill (:class:`tsalign.traces.spill.PayloadSpill`; ``payload`` holds None for
    #: the rows its policy did not keep): each row's row number in its side's spill (int32 below 2^31), and the spills
    src: np.ndarray | None = None
    spill_host: Any = None
    spill_guest: Any = None
    #: payload fields parsed as the events were read (tsalign.traces.events.Events.fields): field 0, field 1
    #: (uint64), matched (bool) per row, for the rows of the (is_host, bare event name) pairs in ``parsed``
    f0: np.ndarray | None = None
    f1: np.ndarray | None = None
    fok: np.ndarray | None = None
    parsed: frozenset[tuple[bool, str]] = frozenset()

    def __len__(self) -> int:
        return int(self.guest_tsc.shape[0])

    @property
    def comm(self) -> np.ndarray:
        """Every row's comm (object array of str)."""
        return self.comms[self.comm_code] if len(self.comms) else np.zeros(len(self), dtype=object)

    @property
    def event(self) -> np.ndarray:
        """Every row's event name (object array of str)."""
        return self.names[self.event_code] if len(self.names) else np.zeros(len(self), dtype=object)

    @classmethod
    def from_events(cls, ev: Events, guest_tsc: np.ndarray, is_host: bool, vcpu: np.ndarray | None = None) -> AlignedColumns:
        """One side's events with their guest-axis timestamps (``vcpu``: host rows' vCPU ids, -1 for none); its
        columns are shared with ``ev`` where their types agree."""
        n = len(ev)
        rows = ev.spill_rows()
        rows = None if rows is None else narrow(rows)  # (int32 below 2^31 rows)
        return cls(np.asarray(guest_tsc, dtype=np.uint64), np.full(n, is_host),
                   np.asarray(ev.ts, dtype=np.uint64) if is_host else np.zeros(n, np.uint64),
                   narrow(ev.cpu), narrow(ev.pid), narrow(ev.tgid),
                   np.full(n, -1, dtype=np.int32) if vcpu is None else narrow(vcpu),
                   np.asarray(ev.comm, dtype=np.int32), np.asarray(ev.event, dtype=np.int32), ev.payload,
                   objects(ev.comms), objects(ev.names), src=rows,
                   spill_host=ev.spill if is_host else None, spill_guest=None if is_host else ev.spill,
                   f0=None if ev.fields is None else ev.fields[0], f1=None if ev.fields is None else ev.fields[1],
                   fok=None if ev.fields is None else ev.fields[2], parsed=frozenset((is_host, n) for n in ev.parsed))

    def take(self, idx: np.ndarray) -> AlignedColumns:
        def sel(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]
        return AlignedColumns(**{f: getattr(self, f)[idx] for f in _ROW}, comms=self.comms, names=self.names,
                              src=sel(self.src), spill_host=self.spill_host, spill_guest=self.spill_guest,
                              f0=sel(self.f0), f1=sel(self.f1), fok=sel(self.fok), parsed=self.parsed)

    def filled(self) -> AlignedColumns:
        """These rows with every payload: where a policy left some in the spills, the payload column is a pyarrow
        string array read back from them (what the outputs take; a block's, not a trace's)."""
        if self.src is None:
            return self
        import pyarrow as pa

        parts, where, at = [], np.empty(len(self), dtype=np.int64), 0
        for side, spill in ((self.is_host, self.spill_host), (~self.is_host, self.spill_guest)):
            rows = np.nonzero(side)[0]
            parts.append(payload_strings(self.payload[rows]) if spill is None else spill.take(self.src[rows]))
            where[rows] = at + np.arange(rows.size)
            at += rows.size
        payload = pa.concat_arrays(parts).take(pa.array(where))
        return AlignedColumns(**{f: getattr(self, f) for f in _ROW if f != "payload"}, payload=payload,
                              comms=self.comms, names=self.names)

    def blocks(self, size: int = 1 << 16, rows: slice | np.ndarray | None = None) -> Iterator[AlignedColumns]:
        """The rows ``size`` at a time, in order, each block :meth:`filled` (what the outputs are written from);
        ``rows``: only these (a slice, or increasing row numbers: :func:`tsalign.align.selection.selected_rows`)."""
        if rows is None or isinstance(rows, slice):
            lo, hi, _ = (rows or slice(None)).indices(len(self))
            for at in range(lo, hi, size):
                yield self.take(slice(at, min(at + size, hi))).filled()  # type: ignore[arg-type]
            return
        for at in range(0, len(rows), size):
            yield self.take(rows[at:at + size]).filled()

    @staticmethod
    def merged(parts: Sequence[AlignedColumns], consume: bool = False) -> AlignedColumns:
        """The parts' rows in one table ordered by guest TSC; at equal TSCs guest events first, each part in its
        own order (stable). The vocabularies are joined; each column is concatenated and ordered on its own, so
        the peak holds the parts, the result and one column more. ``consume``: each part's column is let go (set
        to None) once it is in the result — with nothing else holding them, the peak holds about one copy."""
        comms, comm_luts = _joined([p.comms for p in parts])
        names, name_luts = _joined([p.names for p in parts])
        positions = _merge_positions(parts)
        if positions is None:
            order = np.lexsort((np.concatenate([p.is_host for p in parts]),
                                np.concatenate([p.guest_tsc for p in parts])))

        def place(got: list[np.ndarray]) -> np.ndarray:
            if positions is None:
                out: np.ndarray = np.concatenate(got)[order]
                return out
            out = np.empty(sum(len(x) for x in got), dtype=np.result_type(*got))
            for pos, x in zip(positions, got):
                out[pos] = x
            return out

        luts = {"comm_code": comm_luts, "event_code": name_luts}
        zeros = {"src": np.int32, "f0": np.uint64, "f1": np.uint64, "fok": bool}  # optional: where any part has it
        cols: dict[str, Any] = {}
        for f in (*_ROW, *zeros):
            got = [getattr(p, f) for p in parts]
            if f in zeros and all(x is None for x in got):
                cols[f] = None
                continue
            if f in luts:
                got = [lut[x] for lut, x in zip(luts[f], got)]
            elif f in zeros:
                got = [np.zeros(len(p), dtype=zeros[f]) if x is None else x for p, x in zip(parts, got)]
            if f == "payload" and any(isinstance(x, SparseTexts) for x in got):
                cols[f] = placed(got, sum(len(x) for x in got), positions, None if positions is not None else order)
            else:
                cols[f] = place(got)
            del got
            if consume:
                for p in parts:
                    setattr(p, f, None)
                release_freed_memory()  # the parts' column: too small a hole for the next result column to reuse
        return AlignedColumns(**cols, comms=comms, names=names,
                              spill_host=next((p.spill_host for p in parts if p.spill_host is not None), None),
                              spill_guest=next((p.spill_guest for p in parts if p.spill_guest is not None), None),
                              parsed=frozenset().union(*(p.parsed for p in parts)))

    def tracks(self) -> list[str]:
        """Per row: ``vcpuN`` (a guest event's CPU, a host event's vCPU thread) or ``cpuN`` (other host events)."""
        inv, labels = self.track_codes()
        return [labels[i] for i in inv.tolist()]

    def bare_names(self) -> np.ndarray:
        """The event vocabulary (indexed by ``event_code``) without systems: ``kvm:kvm_exit`` -> ``kvm_exit``."""
        return np.asarray([str(n).split(":")[-1] for n in self.names.tolist()], dtype=object)

    def select(self, host: Iterable[str], guest: Iterable[str]) -> AlignedColumns:
        """The rows of the host events named ``host`` and the guest events named ``guest`` (names without their
        system, as ``sched_switch``), in order — e.g. what an analysis reads, before its rows become dicts."""
        bare = self.bare_names()
        if not len(bare):  # no event names: no rows
            return self
        want_h, want_g = np.isin(bare, list(set(host))), np.isin(bare, list(set(guest)))
        keep = np.where(self.is_host, want_h[self.event_code], want_g[self.event_code])
        return self.take(np.nonzero(keep)[0])

    def track_codes(self) -> tuple[np.ndarray, list[str]]:
        """:meth:`tracks` as codes (the one rule of a row's track): (each row's index into the labels (intp), the
        distinct labels)."""
        on_vcpu = self.vcpu >= 0
        num = np.where(on_vcpu, self.vcpu, self.cpu).astype(np.int64)
        key = np.where(on_vcpu | ~self.is_host, num, -1 - num)  # >= 0: vcpuN; < 0: cpu(-1 - key)
        uniq, inv = np.unique(key, return_inverse=True)
        return inv.reshape(-1), [f"vcpu{k}" if k >= 0 else f"cpu{-1 - k}" for k in uniq.tolist()]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per event (host: guest_tsc, side, host_tsc, cpu, pid, tgid, comm, event, payload, vcpu (None
        off vCPU threads), track; guest: the same without host_tsc and vcpu)."""
        out: list[dict[str, Any]] = []
        add = out.append
        for g, h, ht, c, p, t, v, cm, ev, pl, tr in zip(
                self.guest_tsc.tolist(), self.is_host.tolist(), self.host_tsc.tolist(), self.cpu.tolist(),
                self.pid.tolist(), self.tgid.tolist(), self.vcpu.tolist(), self.comm.tolist(), self.event.tolist(),
                self.payload.tolist(), self.tracks()):
            if h:
                add({"guest_tsc": g, "side": "host", "host_tsc": ht, "cpu": c, "pid": p, "tgid": t, "comm": cm,
                     "event": ev, "payload": pl, "vcpu": v if v >= 0 else None, "track": tr})
            else:
                add({"guest_tsc": g, "side": "guest", "cpu": c, "pid": p, "tgid": t, "comm": cm, "event": ev,
                     "payload": pl, "track": tr})
        return out

    def write_jsonl(self, f: Any, chunk: int = 1 << 16) -> None:
        """:meth:`rows` as JSON lines (keys sorted, as ``json.dumps(row, sort_keys=True)`` writes them: ASCII) to
        the binary file ``f``, made ``chunk`` rows at a time: in whole columns with pyarrow's string kernels where
        it is installed."""
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            self._write_jsonl_rows(f, chunk)
            return
        write_jsonl_blocks(f, self.blocks(chunk))

    def _write_jsonl_rows(self, f: Any, chunk: int) -> None:
        """:meth:`write_jsonl` a row at a time (without pyarrow)."""
        cache: dict[str, str] = {}

        def enc(s: str) -> str:
            e = cache.get(s)
            if e is None:
                e = cache[s] = _enc(s)
            return e

        host = ('{"comm": %s, "cpu": %d, "event": %s, "guest_tsc": %d, "host_tsc": %d, "payload": %s, "pid": %d, '
                '"side": "host", "tgid": %d, "track": "%s", "vcpu": %s}\n')
        guest = ('{"comm": %s, "cpu": %d, "event": %s, "guest_tsc": %d, "payload": %s, "pid": %d, "side": "guest", '
                 '"tgid": %d, "track": "%s"}\n')
        for part in self.blocks(chunk):
            f.write("".join(
                (host % (enc(cm), c, enc(ev), g, ht, _enc(pl), p, t, tr, v if v >= 0 else "null") if h else
                 guest % (enc(cm), c, enc(ev), g, _enc(pl), p, t, tr))
                for g, h, ht, c, p, t, v, cm, ev, pl, tr in zip(
                    part.guest_tsc.tolist(), part.is_host.tolist(), part.host_tsc.tolist(), part.cpu.tolist(),
                    part.pid.tolist(), part.tgid.tolist(), part.vcpu.tolist(), part.comm.tolist(),
                    part.event.tolist(), part.payload.tolist(), part.tracks())).encode("ascii"))

    def record_batches(self, schema: Any, chunk: int = 1 << 16) -> Iterator[Any]:
        """pyarrow tables of ``chunk`` rows in ``schema`` (tsalign.traces.export.write_aligned_parquet's), from the
        columns."""
        return record_batches(self.blocks(chunk), schema)

def record_batches(blocks: Iterable[AlignedColumns], schema: Any) -> Iterator[Any]:
    """A pyarrow table in ``schema`` (tsalign.traces.export.write_aligned_parquet's) of each of ``blocks`` (filled)."""
    import pyarrow as pa

    for p in blocks:
        guest = ~p.is_host
        cols = {
            "guest_tsc": pa.array(p.guest_tsc, pa.uint64()),
            "side": pa.DictionaryArray.from_arrays(pa.array(p.is_host.astype(np.int8)), pa.array(["guest", "host"])),
            "host_tsc": pa.array(p.host_tsc, pa.uint64(), mask=guest),
            "cpu": pa.array(p.cpu, pa.int32()), "pid": pa.array(p.pid, pa.int32()),
            "tgid": pa.array(p.tgid, pa.int32()), "vcpu": pa.array(p.vcpu, pa.int32(), mask=p.vcpu < 0),
            "comm": pa.array(p.comms, pa.string()).take(pa.array(p.comm_code)),
            "event": pa.DictionaryArray.from_arrays(pa.array(p.event_code), pa.array(p.names, pa.string())),
            "payload": payload_strings(p.payload), "track": _track_array(p)}
        yield pa.Table.from_arrays([cols[f.name].cast(f.type) for f in schema], schema=schema)


def write_jsonl_blocks(f: Any, blocks: Iterable[AlignedColumns]) -> None:
    """:meth:`AlignedColumns.write_jsonl` of ``blocks`` (filled), one after the other (pyarrow needed)."""
    for block in blocks:
        f.write(_jsonl_block(block))


def _json_strings(values: np.ndarray) -> Any:
    """JSON string literals of ``values`` (object array of str, or pyarrow strings) as ``json.dumps`` writes them
    (ASCII, escaped): :func:`_json_inner` quoted."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise('"', _json_inner(values), '"', "")


def _json_inner(values: Any) -> Any:
    """What ``json.dumps`` writes between the quotes of each of ``values``: the text itself where it is printable
    ASCII without ``"`` or ``\\`` (no copy), escaped one by one elsewhere."""
    import pyarrow as pa
    import pyarrow.compute as pc

    a = payload_strings(values)
    bad = _escaped_rows(a)
    if not bad.any():
        return a
    return pc.replace_with_mask(a, pa.array(bad), pa.array([_enc(v)[1:-1] for v in a.filter(pa.array(bad)).to_pylist()],
                                                           pa.string()))


#: the bytes a JSON string literal holds as they are (printable ASCII but ``"`` and ``\\``)
_PLAIN_BYTE = np.zeros(256, dtype=bool)
_PLAIN_BYTE[0x20:0x7F] = True
_PLAIN_BYTE[[ord('"'), ord("\\")]] = False


def _escaped_rows(a: Any) -> np.ndarray:
    """Which strings of ``a`` (a pyarrow string array) hold a byte JSON escapes (or a non-ASCII one): one compiled
    pass over the data buffer (numba; else a table lookup; a chunked array, rare, by pyarrow's regex kernel)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(a, pa.ChunkedArray) or a.type != pa.string():
        plain = pc.match_substring_regex(a, r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$").fill_null(True)
        return ~np.asarray(plain.to_numpy(zero_copy_only=False), dtype=bool)
    n = len(a)
    bufs = a.buffers()
    bad = np.zeros(n, dtype=bool)
    if not n or bufs[2] is None:
        return bad
    offs = np.frombuffer(bufs[1], dtype=np.int32)[a.offset:a.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8)
    if _escaped_compiled is not None:
        _escaped_compiled(data, offs, _PLAIN_BYTE, bad)
        return bad
    where = np.flatnonzero(~_PLAIN_BYTE[data[int(offs[0]):int(offs[-1])]]) + int(offs[0])
    if where.size:
        bad[np.searchsorted(offs, where, side="right") - 1] = True
    return bad


def escaped_rows_py(data: np.ndarray, offs: np.ndarray, plain: np.ndarray, bad: np.ndarray) -> None:
    """``bad[i]``: string ``i`` (``data[offs[i]:offs[i + 1]]``) holds a byte that is not ``plain`` (compiled)."""
    for i in range(bad.size):
        for j in range(offs[i], offs[i + 1]):
            if not plain[data[j]]:
                bad[i] = True
                break


_escaped_compiled = compiled(escaped_rows_py)


def _track_array(p: AlignedColumns) -> Any:
    """:meth:`AlignedColumns.tracks` as a pyarrow string array: each distinct track named once, then taken."""
    import pyarrow as pa

    inv, labels = p.track_codes()
    return pa.array(labels, pa.string()).take(pa.array(inv.astype(np.int32)))


def _jsonl_block(p: AlignedColumns) -> Any:
    """Rows of ``p`` as JSON lines (ASCII bytes of the text :meth:`AlignedColumns._write_jsonl_rows` writes, as a
    buffer): one compiled pass (tsalign.align.jsonl), or pyarrow's kernels (:func:`_jsonl_block_kernels`)."""
    import pyarrow as pa

    if not len(p):
        return b""
    inv, labels = p.track_codes()
    lines = jsonl_lines(p.is_host, p.guest_tsc, p.host_tsc, p.cpu, p.pid, p.tgid, p.vcpu, p.comm_code,
                        _json_inner(p.comms), p.event_code, _json_inner(p.names), _json_inner(p.payload), inv,
                        pa.array(labels, pa.string()))
    if lines is not None:  # (one compiled pass; else pyarrow's kernels, below)
        return lines
    return _jsonl_block_kernels(p)


def _jsonl_block_kernels(p: AlignedColumns) -> Any:
    """:func:`_jsonl_block` by pyarrow's kernels, column by column: the fields only host rows have (``host_tsc``,
    ``vcpu``) are pieces that are empty on guest rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    host = pa.array(p.is_host)
    host_tsc = pc.if_else(host, pc.binary_join_element_wise(', "host_tsc": ', decimal_text(p.host_tsc), ""), "")
    vcpu = pc.if_else(pa.array(p.vcpu >= 0), decimal_text(p.vcpu), "null")
    tail = pc.if_else(host, pc.binary_join_element_wise('", "vcpu": ', vcpu, "}\n", ""), '"}\n')
    lines = pc.binary_join_element_wise(
        '{"comm": "', _json_inner(p.comms).take(pa.array(p.comm_code)), '", "cpu": ', decimal_text(p.cpu),
        ', "event": "', _json_inner(p.names).take(pa.array(p.event_code)), '", "guest_tsc": ',
        decimal_text(p.guest_tsc), host_tsc, ', "payload": "', _json_inner(p.payload), '", "pid": ',
        decimal_text(p.pid), pc.if_else(host, ', "side": "host", "tgid": ', ', "side": "guest", "tgid": '),
        decimal_text(p.tgid), ', "track": "', _track_array(p), tail, "")
    offs = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    return memoryview(lines.buffers()[2])[int(offs[0]):int(offs[-1])]


def _merge_positions(parts: Sequence[AlignedColumns]) -> list[np.ndarray] | None:
    """Where each row of a host part and a guest part goes in :meth:`AlignedColumns.merged`'s order (int64 per part),
    when each part is one side's and in guest TSC order already (the usual case: one offset per vCPU, or offsets
    that only grow): two sorted runs merged by binary searches, guest rows first at equal TSCs, each part in its
    own order — lexsort's order, without its keys and order array or a concatenated copy of each column. None
    otherwise."""
    if len(parts) != 2:
        return None
    sides = []
    for p in parts:
        if len(p) and (bool(p.is_host.any()) != bool(p.is_host.all())):
            return None  # a part of both sides
        t = p.guest_tsc
        if len(t) > 1 and not bool((t[1:] >= t[:-1]).all()):
            return None
        sides.append(bool(p.is_host[0]) if len(p) else None)
    if sides[0] is not None and sides[0] == sides[1]:
        return None
    host_first = sides[0] is True or sides[1] is False
    hp, gp = (parts[0], parts[1]) if host_first else (parts[1], parts[0])
    pos_h = np.searchsorted(gp.guest_tsc, hp.guest_tsc, side="right").astype(np.int64)  # guest rows at or before
    pos_h += np.arange(len(hp), dtype=np.int64)
    pos_g = np.searchsorted(hp.guest_tsc, gp.guest_tsc, side="left").astype(np.int64)  # host rows strictly before
    pos_g += np.arange(len(gp), dtype=np.int64)
    return [pos_h, pos_g] if host_first else [pos_g, pos_h]


def vcpu_of_threads(tids: np.ndarray, tid_to_vcpu: dict[int, int]) -> np.ndarray:
    """The vCPU id of each thread id (int64; -1: not one of ``tid_to_vcpu``'s vCPU threads), by one sorted lookup."""
    tids = np.asarray(tids, dtype=np.int64)
    out = np.full(len(tids), -1, dtype=np.int64)
    if tid_to_vcpu and len(tids):
        keys = np.asarray(sorted(tid_to_vcpu), dtype=np.int64)
        vals = np.asarray([tid_to_vcpu[k] for k in keys.tolist()], dtype=np.int64)
        at = np.minimum(np.searchsorted(keys, tids), len(keys) - 1)
        hit = keys[at] == tids
        out[hit] = vals[at[hit]]
    return out


#: host events converted at a time by :func:`host_on_guest_axis`
CONVERT_ROWS = 1 << 20


def host_on_guest_axis(timeline: OffsetTimeline, host_tsc: np.ndarray, vcpu: np.ndarray,
                       axis_vcpu: int | None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Host TSCs (uint64) on the guest axis, each with the parameters in force at it: a vCPU thread's event
    (``vcpu`` >= 0) with its vCPU's, any other with those all vCPUs share there, or, where they differ, with
    ``axis_vcpu``'s. Returns (guest TSCs of the kept rows, mask of kept rows, spreads): rows of a vCPU with no
    known offset, and other rows when no vCPU has one, are not kept; ``spreads`` (sorted, cycles): for each
    other row placed while the vCPUs' offsets differed, the largest minus the smallest signed offset."""
    host_tsc = np.asarray(host_tsc, dtype=np.uint64)
    if len(host_tsc) > CONVERT_ROWS:  # a block at a time: the conversion's temporaries follow the block, not the trace
        out, kept = np.zeros(len(host_tsc), dtype=np.uint64), np.zeros(len(host_tsc), dtype=bool)
        every: list[int] = []
        for lo in range(0, len(host_tsc), CONVERT_ROWS):
            hi = min(lo + CONVERT_ROWS, len(host_tsc))
            g, k, sp = host_on_guest_axis(timeline, host_tsc[lo:hi], vcpu[lo:hi], axis_vcpu)
            kept[lo:hi] = k
            out[lo:hi][k] = g
            every.extend(sp)
        return (out if kept.all() else out[kept]), kept, sorted(every)
    vcpu = np.asarray(vcpu, dtype=np.int64)
    on_vcpu = vcpu >= 0
    keep = np.where(on_vcpu, np.isin(vcpu, np.asarray(timeline.vcpus, dtype=np.int64)), axis_vcpu is not None)
    eff = np.where(on_vcpu, vcpu, -1 if axis_vcpu is None else axis_vcpu)
    spreads: list[int] = []
    others = ~on_vcpu & keep
    if len(timeline.vcpus) > 1 and others.any():
        at = host_tsc[others]
        ids = [timeline.params_ids(v, at) for v in timeline.vcpus]
        table = ids[0][1]
        stack = np.stack([i for i, _ in ids])
        differ = (stack != stack[0]).any(axis=0)
        if differ.any():
            signed = np.asarray([p.signed_offset for p in table], dtype=np.int64)[stack[:, differ]]
            spreads = sorted(int(hi) - int(lo) for hi, lo in zip(signed.max(axis=0).tolist(), signed.min(axis=0).tolist()))
    if not keep.any():
        return np.zeros(0, dtype=np.uint64), keep, spreads
    return np.asarray(timeline.host_to_guest_many(eff[keep], host_tsc[keep]), dtype=np.uint64), keep, spreads
