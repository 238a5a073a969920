"""Write a merged timeline as a Perfetto trace (protobuf, offline, with the ``perfetto`` package):
one process per side (host, guest), one thread track per vCPU / CPU, an instant event per trace
event; timestamps are guest-TSC ns."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from ..clock.display import cycles_to_ns
from ..errors import InconsistentData
from ..jit import compiled, put_bytes
from ..traces.sparse import payload_strings
from ..traces.strbuf import pack, string_buffers
from .protowire import LEN, VARINT, binary_of, key, put_varint, varint, varint_len, varints

__all__ = ["write_perfetto"]

SEQ_ID = 0x7A5A


def _lanes(slices: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Give each slice a track name where it overlaps no other slice (Perfetto slices must nest)."""
    ends: dict[str, list[int]] = {}
    out = []
    for s in sorted(slices, key=lambda s: s["start"]):
        base = f"{s['side']} {s['track']} analysis"
        lanes = ends.setdefault(base, [])
        k = next((i for i, e in enumerate(lanes) if e <= s["start"]), None)
        if k is None:
            lanes.append(s["end"])
            k = len(lanes) - 1
        else:
            lanes[k] = s["end"]
        out.append((f"{base}" + (f" {k}" if k else ""), s))
    return out


def write_perfetto(path: str, columns: Any, tsc_khz: int, slices: Iterable[dict[str, Any]] = (),
                   chunk: int = 1 << 16) -> int:
    """Write an aligned timeline (``columns``: :class:`tsalign.align.columns.AlignedColumns`) to ``path`` as
    instant events (name, payload and guest_tsc annotations) on a track per side and vCPU/CPU, plus analysis
    ``slices`` ({side, track, name, start, end} in guest TSC cycles) as duration slices. Returns the number of
    events written. Raises ImportError without the perfetto package.

    Streamed, ``chunk`` events at a time: their packets are encoded in whole columns (:meth:`_Wire.events`:
    the bytes the protobuf library gives one packet at a time — a test compares them), each track's descriptor
    written before its first event, so memory does not grow with the trace; a failure leaves no file behind."""
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (  # type: ignore[import-untyped]
        Trace,
        TrackEvent,
    )

    try:
        with open(path, "wb") as f:
            return _stream(f, Trace(), TrackEvent, columns, tsc_khz, slices, chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _stream(f: BinaryIO, trace: Any, track_event: Any, columns: Any, tsc_khz: int,
            slices: Iterable[dict[str, Any]], chunk: int) -> int:
    """The packets of :func:`write_perfetto` written to ``f``: descriptors and slices one by one, each the one
    packet of ``trace``; events a chunk at a time."""
    pkt = trace.packet.add()
    tracks: dict[tuple[str, str], int] = {}
    procs = {"host": (1, 1000), "guest": (2, 2000)}
    first = True

    def put() -> None:
        f.write(trace.SerializeToString())
        pkt.Clear()

    def describe(side: str, name: str, uuid: int) -> None:
        pkt.track_descriptor.uuid = uuid
        pkt.track_descriptor.parent_uuid = procs[side][0]
        pkt.track_descriptor.name = name
        put()

    def track(side: str, name: str, key: tuple[str, str]) -> int:
        if key not in tracks:
            tracks[key] = 100 + len(tracks)
            describe(side, name, tracks[key])
        return tracks[key]

    def stamp(ts: int) -> None:
        nonlocal first
        pkt.timestamp = cycles_to_ns(ts, tsc_khz)
        pkt.trusted_packet_sequence_id = SEQ_ID
        if first:
            pkt.sequence_flags = 1  # SEQ_INCREMENTAL_STATE_CLEARED
            first = False

    for side, (uuid, pid) in procs.items():
        pkt.track_descriptor.uuid = uuid
        pkt.track_descriptor.process.pid = pid
        pkt.track_descriptor.process.process_name = f"{side} (guest TSC axis)"
        put()
    wire = _Wire(track_event)
    n = 0
    for p in columns.blocks(chunk):
        n += len(p)
        codes, labels = p.track_codes()
        keys, at, inv = np.unique(codes.astype(np.int64) * 2 + p.is_host, return_index=True, return_inverse=True)
        names = [("host" if k % 2 else "guest", labels[k // 2]) for k in keys.tolist()]  # a track per side and label
        new = sorted((int(at[j]), j) for j, nm in enumerate(names) if nm not in tracks)
        for _, j in new:  # numbered in the order their first events come
            tracks[names[j]] = 100 + len(tracks)
        uuids = np.asarray([tracks[nm] for nm in names], dtype=np.uint64)
        data, offsets = wire.events(p, uuids[inv.reshape(-1)], tsc_khz, first)
        done = 0
        for row, j in new:  # each new track's descriptor just before its first event
            f.write(data[offsets[done]:offsets[row]])
            describe(names[j][0], f"{names[j][0]} {names[j][1]}", tracks[names[j]])
            done = row
        f.write(data[offsets[done]:offsets[len(p)]])
        first = False
    for name, sl in _lanes(slices):
        uuid = track(sl["side"], name, (sl["side"], name))
        for ts, kind in ((sl["start"], track_event.Type.TYPE_SLICE_BEGIN), (sl["end"], track_event.Type.TYPE_SLICE_END)):
            stamp(ts)
            pkt.track_event.type = kind
            pkt.track_event.track_uuid = uuid
            if kind == track_event.Type.TYPE_SLICE_BEGIN:
                pkt.track_event.name = sl["name"]
            put()
    return n




class _Wire:
    """The wire bytes of event packets, in whole columns: per event ``Trace.packet`` {timestamp (guest-TSC ns),
    trusted_packet_sequence_id, track_event {debug_annotations {string_value payload, name "payload"},
    debug_annotations {uint_value guest_tsc, name "guest_tsc"}, type INSTANT, track_uuid, name event},
    sequence_flags (the trace's first packet only)} — fields in number order, as the protobuf library writes
    them; field numbers read from the messages' descriptors."""

    def __init__(self, track_event: Any) -> None:
        from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
            DebugAnnotation,
            Trace,
            TracePacket,
        )

        def num(msg: Any, field: str) -> int:
            return int(msg.DESCRIPTOR.fields_by_name[field].number)

        te, da, tp = track_event, DebugAnnotation, TracePacket
        self.packet = key(num(Trace, "packet"), LEN)
        self.timestamp = key(num(tp, "timestamp"), VARINT)
        self.seq = key(num(tp, "trusted_packet_sequence_id"), VARINT) + varint(SEQ_ID)
        self.track_event = key(num(tp, "track_event"), LEN)
        self.flags = key(num(tp, "sequence_flags"), VARINT) + varint(1)  # SEQ_INCREMENTAL_STATE_CLEARED
        self.annotation = key(num(te, "debug_annotations"), LEN)
        self.string_value = key(num(da, "string_value"), LEN)
        self.payload_name = self._named(da, num, "payload")
        self.uint_value = key(num(da, "uint_value"), VARINT)
        self.tsc_name = self._named(da, num, "guest_tsc")
        self.instant = key(num(te, "type"), VARINT) + varint(int(te.Type.TYPE_INSTANT))
        self.uuid = key(num(te, "track_uuid"), VARINT)
        self.name = key(num(te, "name"), LEN)
        #: the constant pieces of an event's packet, in the order :func:`packets_py` writes them
        pieces = [self.packet, self.timestamp, self.seq, self.track_event, self.annotation, self.string_value,
                  self.payload_name, self.uint_value, self.tsc_name, self.instant, self.uuid, self.flags]
        self.lit, self.lit_offs = pack(pieces)

    @staticmethod
    def _named(da: Any, num: Any, name: str) -> bytes:
        raw = name.encode()
        return key(num(da, "name"), LEN) + varint(len(raw)) + raw

    def events(self, p: Any, uuids: np.ndarray, tsc_khz: int, first: bool, force_python: bool = False
               ) -> tuple[Any, np.ndarray]:
        """(the bytes of the packets of ``p``'s rows, back to back; each row's start offset in them, and the end):
        one compiled loop (:func:`packets_py`) where numba is installed (``force_python``: that loop interpreted,
        for tests), else :meth:`events_by_kernels`."""
        fn = packets_py if force_python else _packets
        payload = string_buffers(payload_strings(p.payload))
        if fn is None or payload is None:
            return self.events_by_kernels(p, uuids, tsc_khz, first)
        n = len(p)
        p_data, p_offs = payload
        e_data, e_offs = pack([self.name + varint(len(b)) + b for b in (nm.encode() for nm in p.names.tolist())])
        codes = np.asarray(p.event_code, dtype=np.int64)
        bound = n * (len(self.lit) + 6 * 10) + int(p_offs[-1] - p_offs[0]) + int(np.diff(e_offs)[codes].sum())
        out = np.empty(bound, dtype=np.uint8)
        offsets = np.zeros(n + 1, dtype=np.int64)
        fn(_ns(p.guest_tsc, tsc_khz), np.ascontiguousarray(p.guest_tsc, dtype=np.uint64),
           np.ascontiguousarray(uuids, dtype=np.uint64), p_data, p_offs, codes, e_data, e_offs, self.lit,
           self.lit_offs, first, out, offsets)
        return out[:int(offsets[-1])].data, offsets

    def events_by_kernels(self, p: Any, uuids: np.ndarray, tsc_khz: int, first: bool) -> tuple[Any, np.ndarray]:
        """:meth:`events` in pyarrow's kernels: each field's column, then one join of the pieces per row."""
        import pyarrow.compute as pc

        n = len(p)
        payload = payload_strings(p.payload).cast(pa.large_binary())
        plen = np.asarray(pc.binary_length(payload), dtype=np.int64)
        raw_names = [nm.encode() for nm in p.names.tolist()]
        ename = pa.array([self.name + varint(len(b)) + b for b in raw_names], pa.large_binary())
        ename_len = np.asarray([len(self.name) + len(varint(len(b))) + len(b) for b in raw_names], dtype=np.int64)
        codes = np.asarray(p.event_code, dtype=np.int64)
        ns, ns_n = varints(_ns(p.guest_tsc, tsc_khz))
        tsc, tsc_n = varints(p.guest_tsc)
        uuid, uuid_n = varints(uuids)
        plen_v, plen_n = varints(plen.astype(np.uint64))
        a1 = len(self.string_value) + plen_n + plen + len(self.payload_name)
        a2 = len(self.uint_value) + tsc_n + len(self.tsc_name)
        a1_v, a1_n = varints(a1.astype(np.uint64))
        a2_v, a2_n = varints(a2.astype(np.uint64))
        te = (2 * len(self.annotation) + a1_n + a1 + a2_n + a2 + len(self.instant) + len(self.uuid) + uuid_n
              + ename_len[codes])
        te_v, te_n = varints(te.astype(np.uint64))
        flags = np.zeros(n, dtype=np.int64)
        if first and n:
            flags[0] = len(self.flags)
        pk = len(self.timestamp) + ns_n + len(self.seq) + len(self.track_event) + te_n + te + flags
        pk_v, pk_n = varints(pk.astype(np.uint64))
        flag_col = binary_of(np.frombuffer(self.flags, dtype=np.uint8)[:flags[0]] if n else np.zeros(0, np.uint8),
                             flags)

        def c(b: bytes) -> Any:
            return pa.scalar(b, pa.large_binary())

        out = pc.binary_join_element_wise(
            c(self.packet), pk_v, c(self.timestamp), ns, c(self.seq), c(self.track_event), te_v,
            c(self.annotation), a1_v, c(self.string_value), plen_v, payload, c(self.payload_name),
            c(self.annotation), a2_v, c(self.uint_value), tsc, c(self.tsc_name),
            c(self.instant), c(self.uuid), uuid, ename.take(pa.array(codes)), flag_col, c(b""))
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(len(self.packet) + pk_n + pk, out=offsets[1:])
        buf = out.buffers()
        base = int(np.frombuffer(buf[1], dtype=np.int64)[out.offset]) if n else 0
        data = memoryview(buf[2])[base:base + int(offsets[-1])] if n else memoryview(b"")
        return data, offsets


def packets_py(ns: np.ndarray, tsc: np.ndarray, uuid: np.ndarray, p_data: np.ndarray, p_offs: np.ndarray,
               codes: np.ndarray, e_data: np.ndarray, e_offs: np.ndarray, lit: np.ndarray, lo: np.ndarray,
               first: bool, out: np.ndarray, offsets: np.ndarray) -> None:
    """Each row's packet (the fields of :class:`_Wire`, sizes and all) into ``out``, its start into ``offsets``
    (then the end) (compiled by numba). ``ns``, ``tsc``, ``uuid``: the rows' timestamp, guest TSC and track;
    payloads ``p_data[p_offs[i]:p_offs[i + 1]]``; ``e_data[e_offs[c]:e_offs[c + 1]]``: event ``c``'s name field
    (key, length, bytes); ``lit[lo[k]:lo[k + 1]]``: the constant pieces (packet, timestamp, seq, track_event,
    annotation, string_value, payload name, uint_value, guest_tsc name, instant type, track_uuid, flags)."""
    pos = 0
    for i in range(ns.size):
        offsets[i] = pos
        plen = p_offs[i + 1] - p_offs[i]  # (sizes in int64: never mixed with uint64, which would give floats)
        a1 = (lo[6] - lo[5]) + varint_len(np.uint64(plen)) + plen + (lo[7] - lo[6])
        a2 = (lo[8] - lo[7]) + varint_len(tsc[i]) + (lo[9] - lo[8])
        c = codes[i]
        te = (2 * (lo[5] - lo[4]) + varint_len(np.uint64(a1)) + a1 + varint_len(np.uint64(a2)) + a2 + (lo[10] - lo[9])
              + (lo[11] - lo[10]) + varint_len(uuid[i]) + (e_offs[c + 1] - e_offs[c]))
        flag = (lo[12] - lo[11]) if first and i == 0 else 0
        pk = (lo[2] - lo[1]) + varint_len(ns[i]) + (lo[3] - lo[2]) + (lo[4] - lo[3]) + varint_len(np.uint64(te)) \
            + te + flag
        pos = put_bytes(out, pos, lit, lo[0], lo[1])
        pos = put_varint(out, pos, np.uint64(pk))
        pos = put_bytes(out, pos, lit, lo[1], lo[2])
        pos = put_varint(out, pos, ns[i])
        pos = put_bytes(out, pos, lit, lo[2], lo[4])  # seq, track_event key
        pos = put_varint(out, pos, np.uint64(te))
        pos = put_bytes(out, pos, lit, lo[4], lo[5])
        pos = put_varint(out, pos, np.uint64(a1))
        pos = put_bytes(out, pos, lit, lo[5], lo[6])
        pos = put_varint(out, pos, np.uint64(plen))
        pos = put_bytes(out, pos, p_data, p_offs[i], p_offs[i + 1])
        pos = put_bytes(out, pos, lit, lo[6], lo[7])
        pos = put_bytes(out, pos, lit, lo[4], lo[5])
        pos = put_varint(out, pos, np.uint64(a2))
        pos = put_bytes(out, pos, lit, lo[7], lo[8])
        pos = put_varint(out, pos, tsc[i])
        pos = put_bytes(out, pos, lit, lo[8], lo[11])  # guest_tsc name, instant type, track_uuid key
        pos = put_varint(out, pos, uuid[i])
        pos = put_bytes(out, pos, e_data, e_offs[c], e_offs[c + 1])
        if flag:
            pos = put_bytes(out, pos, lit, lo[11], lo[12])
    offsets[ns.size] = pos


_packets = compiled(packets_py)


def _ns(tsc: np.ndarray, tsc_khz: int) -> np.ndarray:
    """Guest-TSC cycles -> ns (uint64), exactly as :func:`cycles_to_ns` rounds: q * 10^6 + r * 10^6 // khz for
    (q, r) = divmod(cycles, khz); an error where a value's ns do not fit in 64 bits."""
    cycles_to_ns(0, tsc_khz)  # checks the frequency
    t = np.asarray(tsc, dtype=np.uint64)
    if t.size and cycles_to_ns(int(t.max()), tsc_khz) >= 1 << 64:
        raise InconsistentData(f"guest TSC {int(t.max())} is {cycles_to_ns(int(t.max()), tsc_khz)} ns at {tsc_khz} "
                               "kHz: beyond the 64 bits of a Perfetto timestamp (a wrong offset or frequency?)")
    k = np.uint64(tsc_khz)
    q, r = t // k, t % k
    return q * np.uint64(1_000_000) + (r * np.uint64(1_000_000)) // k
