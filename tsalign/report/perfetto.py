"""Write a merged timeline as a Perfetto trace (protobuf, offline, with the ``perfetto`` package):
one process per side (host, guest), one thread track per vCPU / CPU, an instant event per trace
event; timestamps are guest-TSC ns."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import Any, BinaryIO

from ..clock.display import cycles_to_ns

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


def write_perfetto(path: str, events: Iterable[dict[str, Any]], tsc_khz: int,
                   slices: Iterable[dict[str, Any]] = ()) -> int:
    """Write ``events`` (dicts with guest_tsc, side, track, event, payload) to ``path``, plus analysis
    ``slices`` ({side, track, name, start, end} in guest TSC cycles) as duration slices.
    Returns the number of events written. Raises ImportError without the perfetto package.

    Streamed: each packet is written as it is made, as a one-packet Trace (serialized Traces concatenated are
    one Trace: protobuf merges repeated fields), so memory does not grow with the trace; a failure leaves no
    file behind."""
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (  # type: ignore[import-untyped]
        Trace,
        TrackEvent,
    )

    try:
        with open(path, "wb") as f:
            return _stream(f, Trace(), TrackEvent, events, tsc_khz, slices)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _stream(f: BinaryIO, trace: Any, track_event: Any, events: Iterable[dict[str, Any]], tsc_khz: int,
            slices: Iterable[dict[str, Any]]) -> int:
    """The packets of :func:`write_perfetto` written to ``f`` one by one, each the one packet of ``trace``."""
    pkt = trace.packet.add()
    tracks: dict[tuple[str, str], int] = {}
    procs = {"host": (1, 1000), "guest": (2, 2000)}
    n = 0
    first = True

    def put() -> None:
        f.write(trace.SerializeToString())
        pkt.Clear()

    def track(side: str, name: str, key: tuple[str, str]) -> int:
        if key not in tracks:
            tracks[key] = 100 + len(tracks)
            pkt.track_descriptor.uuid = tracks[key]
            pkt.track_descriptor.parent_uuid = procs[side][0]
            pkt.track_descriptor.name = name
            put()
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
    for ev in events:
        uuid = track(ev["side"], f"{ev['side']} {ev['track']}", (ev["side"], ev["track"]))
        stamp(ev["guest_tsc"])
        te = pkt.track_event
        te.type = track_event.Type.TYPE_INSTANT
        te.track_uuid = uuid
        te.name = ev["event"]
        ann = te.debug_annotations.add()
        ann.name = "payload"
        ann.string_value = ev.get("payload", "")
        ann2 = te.debug_annotations.add()
        ann2.name = "guest_tsc"
        ann2.uint_value = ev["guest_tsc"]
        put()
        n += 1
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
