"""The Perfetto writer streams packets: the file parses as one Trace with every event, in order, on its track;
a failure part-way leaves no file."""

from __future__ import annotations

from pathlib import Path

import perfetto.protos.perfetto.trace.perfetto_trace_pb2 as pb  # type: ignore[import-untyped]
import pytest

from tsalign.report.perfetto import write_perfetto


def _events(n: int) -> list[dict]:
    return [{"guest_tsc": 1_000_000 * i + (1 << 40), "side": "host" if i % 2 else "guest", "track": f"vcpu{i % 3}",
             "event": f"e{i % 4}", "payload": "x" * (i % 200)} for i in range(n)]


def test_streamed_trace_parses_with_every_event(tmp_path: Path) -> None:
    evs = _events(3000)
    slices = [{"side": "host", "track": "vcpu0", "name": "s", "start": 10 * i, "end": 10 * i + 5} for i in range(20)]
    path = tmp_path / "t.perfetto-trace"
    assert write_perfetto(str(path), evs, 2_000_000, slices) == 3000
    trace = pb.Trace()
    trace.ParseFromString(path.read_bytes())
    names = {p.track_descriptor.uuid: p.track_descriptor.name for p in trace.packet if p.HasField("track_descriptor")}
    instants = [p for p in trace.packet if p.HasField("track_event") and p.track_event.type == pb.TrackEvent.TYPE_INSTANT]
    assert [p.track_event.name for p in instants] == [e["event"] for e in evs]
    assert [p.track_event.debug_annotations[1].uint_value for p in instants] == [e["guest_tsc"] for e in evs]
    assert [names[p.track_event.track_uuid] for p in instants] == [f"{e['side']} {e['track']}" for e in evs]
    # guest TSC cycles at 2 GHz -> ns (exact here: multiples of 2)
    assert instants[1].timestamp == (evs[1]["guest_tsc"]) // 2
    assert sum(p.track_event.type == pb.TrackEvent.TYPE_SLICE_BEGIN for p in trace.packet) == 20


def test_a_failure_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "t.perfetto-trace"
    with pytest.raises(KeyError):
        write_perfetto(str(path), [*_events(10), {"side": "host"}], 2_000_000)
    assert not path.exists()
