"""Write a merged timeline as a Perfetto trace (protobuf, offline, with the ``perfetto`` package):
one process per side (host, guest), one thread track per vCPU / CPU, an instant event per trace
event; timestamps are guest-TSC ns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
    Returns the number of events written. Raises ImportError without the perfetto package."""
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TrackEvent  # type: ignore[import-untyped]
    from perfetto.trace_builder.proto_builder import TraceProtoBuilder  # type: ignore[import-untyped]

    builder = TraceProtoBuilder()
    tracks: dict[tuple[str, str], int] = {}
    procs = {"host": (1, 1000), "guest": (2, 2000)}
    for side, (uuid, pid) in procs.items():
        pkt = builder.add_packet()
        pkt.track_descriptor.uuid = uuid
        pkt.track_descriptor.process.pid = pid
        pkt.track_descriptor.process.process_name = f"{side} (guest TSC axis)"
    n = 0
    first = True
    for ev in events:
        key = (ev["side"], ev["track"])
        if key not in tracks:
            uuid = 100 + len(tracks)
            tracks[key] = uuid
            pkt = builder.add_packet()
            pkt.track_descriptor.uuid = uuid
            pkt.track_descriptor.parent_uuid = procs[ev["side"]][0]
            pkt.track_descriptor.name = f"{ev['side']} {ev['track']}"
        pkt = builder.add_packet()
        pkt.timestamp = cycles_to_ns(ev["guest_tsc"], tsc_khz)
        pkt.trusted_packet_sequence_id = SEQ_ID
        if first:
            pkt.sequence_flags = 1  # SEQ_INCREMENTAL_STATE_CLEARED
            first = False
        pkt.track_event.type = TrackEvent.Type.TYPE_INSTANT
        pkt.track_event.track_uuid = tracks[key]
        pkt.track_event.name = ev["event"]
        ann = pkt.track_event.debug_annotations.add()
        ann.name = "payload"
        ann.string_value = ev.get("payload", "")
        ann2 = pkt.track_event.debug_annotations.add()
        ann2.name = "guest_tsc"
        ann2.uint_value = ev["guest_tsc"]
        n += 1
    for name, sl in _lanes(slices):
        key = (sl["side"], name)
        if key not in tracks:
            tracks[key] = 100 + len(tracks)
            pkt = builder.add_packet()
            pkt.track_descriptor.uuid = tracks[key]
            pkt.track_descriptor.parent_uuid = procs[sl["side"]][0]
            pkt.track_descriptor.name = name
        for ts, kind in ((sl["start"], TrackEvent.Type.TYPE_SLICE_BEGIN), (sl["end"], TrackEvent.Type.TYPE_SLICE_END)):
            pkt = builder.add_packet()
            pkt.timestamp = cycles_to_ns(ts, tsc_khz)
            pkt.trusted_packet_sequence_id = SEQ_ID
            if first:
                pkt.sequence_flags = 1
                first = False
            pkt.track_event.type = kind
            pkt.track_event.track_uuid = tracks[key]
            if kind == TrackEvent.Type.TYPE_SLICE_BEGIN:
                pkt.track_event.name = sl["name"]
    with open(path, "wb") as f:
        f.write(builder.serialize())
    return n
