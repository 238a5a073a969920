"""The Perfetto writer: its column encoder gives the bytes the protobuf library gives packet by packet (a reference
writer here builds every packet with the perfetto package's message classes, as the writer did before it was
encoded in columns); the file parses as one Trace with every event, in order, on its track; a failure part-way
leaves no file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import perfetto.protos.perfetto.trace.perfetto_trace_pb2 as pb  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsalign.align.columns import AlignedColumns
from tsalign.errors import InconsistentData
from tsalign.report.perfetto import SEQ_ID, write_perfetto
from tsalign.report.protowire import varint, varints, varints_numpy

KHZ = 2_000_000


def _columns(n: int, seed: int = 1) -> AlignedColumns:
    """``n`` rows: host rows on and off vCPU threads, guest rows, payloads of 0-300 bytes (non-ASCII ones, empty
    ones), event names of several lengths, guest TSCs across varint size boundaries."""
    rng = np.random.default_rng(seed)
    edges = [0, 1, 127, 128, 16383, 16384, (1 << 35) - 1, 1 << 35, (1 << 63) + 5, (1 << 64) - 1]
    tsc = rng.integers(0, 1 << 62, n, dtype=np.uint64)
    tsc[: min(n, len(edges))] = np.asarray(edges[: min(n, len(edges))], dtype=np.uint64)
    host = rng.random(n) < 0.6
    vcpu = np.where(host & (rng.random(n) < 0.5), rng.integers(0, 3, n), -1)
    words = ["", "x", "vcpu 0 rip 0xffffffff81000000", "é→ü " * 40, "y" * 300]
    payload = np.empty(n, dtype=object)
    payload[:] = [words[i % len(words)] + str(i) * (i % 3) for i in range(n)]
    names = np.asarray(["kvm_exit", "e", "tsalign_msr" * 20, "sched_switch"], dtype=object)
    return AlignedColumns(tsc, host, np.where(host, tsc, 0).astype(np.uint64), rng.integers(0, 4, n),
                          rng.integers(1, 5000, n), rng.integers(1, 5000, n), vcpu.astype(np.int64),
                          np.zeros(n, dtype=np.int32), rng.integers(0, len(names), n).astype(np.int32), payload,
                          np.asarray(["qemu"], dtype=object), names)


def _reference(cols: AlignedColumns, khz: int) -> bytes:
    """The trace as the perfetto package's classes serialize it, one packet at a time (process descriptors, then
    each event, a track's descriptor before its first event)."""
    trace = pb.Trace()
    pkt = trace.packet.add()
    out = []
    tracks: dict[tuple[str, str], int] = {}
    for side, (uuid, pid) in {"host": (1, 1000), "guest": (2, 2000)}.items():
        pkt.track_descriptor.uuid = uuid
        pkt.track_descriptor.process.pid = pid
        pkt.track_descriptor.process.process_name = f"{side} (guest TSC axis)"
        out.append(trace.SerializeToString())
        pkt.Clear()
    for i, ev in enumerate(cols.rows()):
        k = (ev["side"], ev["track"])
        if k not in tracks:
            tracks[k] = 100 + len(tracks)
            pkt.track_descriptor.uuid = tracks[k]
            pkt.track_descriptor.parent_uuid = 1 if ev["side"] == "host" else 2
            pkt.track_descriptor.name = f"{ev['side']} {ev['track']}"
            out.append(trace.SerializeToString())
            pkt.Clear()
        pkt.timestamp = ev["guest_tsc"] * 1_000_000 // khz
        pkt.trusted_packet_sequence_id = SEQ_ID
        if i == 0:
            pkt.sequence_flags = 1
        te = pkt.track_event
        te.type = pb.TrackEvent.TYPE_INSTANT
        te.track_uuid = tracks[k]
        te.name = ev["event"]
        a = te.debug_annotations.add()
        a.name, a.string_value = "payload", ev["payload"]
        b = te.debug_annotations.add()
        b.name, b.uint_value = "guest_tsc", ev["guest_tsc"]
        out.append(trace.SerializeToString())
        pkt.Clear()
    return b"".join(out)


def test_varints_by_hand() -> None:
    values = [0, 1, 127, 128, 300, 16384, (1 << 64) - 1]
    arr, n = varints(np.asarray(values, dtype=np.uint64))
    assert arr.to_pylist() == [varint(v) for v in values] == varints_numpy(np.asarray(values, np.uint64))[0].to_pylist()
    assert arr.to_pylist()[:5] == [b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02"]  # protobuf's docs: 300
    assert n.tolist() == [1, 1, 1, 2, 2, 3, 10]
    with pytest.raises(ValueError):
        varint(1 << 64)


@given(st.lists(st.integers(0, (1 << 64) - 1), max_size=50))
@settings(max_examples=200, deadline=None)
def test_compiled_varints_equal_the_numpy_ones_and_the_scalar_encoder(values: list[int]) -> None:
    a, an = varints(np.asarray(values, dtype=np.uint64))
    b, bn = varints_numpy(np.asarray(values, dtype=np.uint64))
    assert a.to_pylist() == b.to_pylist() == [varint(v) for v in values]
    assert an.tolist() == bn.tolist()


@pytest.mark.parametrize("chunk", [7, 1 << 16])
def test_columns_encode_as_the_protobuf_library(tmp_path: Path, chunk: int) -> None:
    """Byte for byte the reference's file, with tracks first seen in later chunks (chunk 7) and in one."""
    cols = _columns(500)
    path = tmp_path / "t.perfetto-trace"
    assert write_perfetto(str(path), cols, KHZ, chunk=chunk) == 500
    assert path.read_bytes() == _reference(cols, KHZ)


def test_the_three_packet_writers_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled packet loop, that loop interpreted and the pyarrow-kernel path give the same bytes and row
    offsets for a block (first or not); without numba the file is still the reference's."""
    from tsalign.report import perfetto

    cols = _columns(300, seed=3)
    wire = perfetto._Wire(pb.TrackEvent)
    uuids = np.arange(300, dtype=np.uint64) * np.uint64(997) + np.uint64(100)
    for first in (True, False):
        want_data, want_offs = wire.events_by_kernels(cols, uuids, KHZ, first)
        for force in (False, True):
            data, offs = wire.events(cols, uuids, KHZ, first, force_python=force)
            assert bytes(data) == bytes(want_data) and offs.tolist() == want_offs.tolist(), (first, force)
    monkeypatch.setattr(perfetto, "_packets", None)
    path = tmp_path / "k.perfetto-trace"
    assert write_perfetto(str(path), cols, KHZ, chunk=64) == 300
    assert path.read_bytes() == _reference(cols, KHZ)


def test_streamed_trace_parses_with_every_event_and_slices(tmp_path: Path) -> None:
    cols = _columns(3000, seed=2)
    cols.guest_tsc[:] = np.sort(cols.guest_tsc >> np.uint64(4))
    slices = [{"side": "host", "track": "vcpu0", "name": "s", "start": 10 * i, "end": 10 * i + 5} for i in range(20)]
    path = tmp_path / "t.perfetto-trace"
    assert write_perfetto(str(path), cols, KHZ, slices, chunk=1000) == 3000
    trace = pb.Trace()
    trace.ParseFromString(path.read_bytes())
    names = {p.track_descriptor.uuid: p.track_descriptor.name for p in trace.packet if p.HasField("track_descriptor")}
    instants = [p for p in trace.packet if p.HasField("track_event") and p.track_event.type == pb.TrackEvent.TYPE_INSTANT]
    rows: list[dict[str, Any]] = cols.rows()
    assert [p.track_event.name for p in instants] == [e["event"] for e in rows]
    assert [p.track_event.debug_annotations[0].string_value for p in instants] == [e["payload"] for e in rows]
    assert [p.track_event.debug_annotations[1].uint_value for p in instants] == [e["guest_tsc"] for e in rows]
    assert [names[p.track_event.track_uuid] for p in instants] == [f"{e['side']} {e['track']}" for e in rows]
    assert [p.timestamp for p in instants] == [e["guest_tsc"] // 2 for e in rows]  # cycles at 2 GHz -> ns
    assert [p.sequence_flags for p in instants[:2]] == [1, 0]
    assert sum(p.track_event.type == pb.TrackEvent.TYPE_SLICE_BEGIN for p in trace.packet) == 20


def test_a_failure_leaves_no_file(tmp_path: Path) -> None:
    """ns beyond 64 bits (a TSC of 2^64 - 1 at 1 MHz) is an error naming it, after a first chunk was written."""
    cols = _columns(50)
    cols.guest_tsc[:] = 1000
    cols.guest_tsc[-1] = (1 << 64) - 1
    path = tmp_path / "t.perfetto-trace"
    with pytest.raises(InconsistentData, match="beyond the 64 bits"):
        write_perfetto(str(path), cols, 1000, chunk=10)
    assert not path.exists()
