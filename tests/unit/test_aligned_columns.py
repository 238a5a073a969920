"""The aligned timeline's columns (tsalign.align.columns): the host side converted per vCPU in whole columns
against hand arithmetic, the guest-axis order, and the outputs written from the columns against independent
writers (the json module; pyarrow reading the Parquet back)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from tsalign.align.columns import AlignedColumns, _merge_positions, host_on_guest_axis
from tsalign.clock.kvm import TscParams
from tsalign.offsets import OffsetSnapshot, OffsetTimeline, OffsetWrite
from tsalign.traces.events import Events
from tsalign.traces.ftrace_text import Record

M64 = (1 << 64) - 1


def _timeline() -> OffsetTimeline:
    """vcpu0: offset -1000 from host TSC 0, then +500 from 10 000 (a traced write); vcpu1: -1000 throughout."""
    return OffsetTimeline.build([OffsetSnapshot(0, 0, TscParams(-1000), "debugfs"),
                                 OffsetSnapshot(0, 1, TscParams(-1000), "debugfs")],
                                [OffsetWrite(10_000, 0, (-1000) & M64, 500)])


def test_host_columns_by_hand() -> None:
    ts = np.array([5_000, 12_000, 12_000, 5_000, 12_000, 7], dtype=np.uint64)
    vcpu = np.array([0, 0, 1, -1, -1, 3])  # vcpu 3 has no offset: dropped
    conv, keep, spreads = host_on_guest_axis(_timeline(), ts, vcpu, axis_vcpu=0)
    assert keep.tolist() == [True, True, True, True, True, False]
    # 5000-1000, 12000+500, 12000-1000, an off-vCPU event while both agree (-1000), one while they differ
    # (placed with vcpu0's +500; spread 500 - (-1000))
    assert conv.tolist() == [4_000, 12_500, 11_000, 4_000, 12_500]
    assert spreads == [1_500]


def test_host_columns_a_block_at_a_time(monkeypatch) -> None:
    """Converted CONVERT_ROWS at a time (blocks of 2 here), the by-hand case gives the same rows, mask and spreads."""
    from tsalign.align import columns

    ts = np.array([5_000, 12_000, 12_000, 5_000, 12_000, 7, 13_000], dtype=np.uint64)
    vcpu = np.array([0, 0, 1, -1, -1, 3, -1])
    monkeypatch.setattr(columns, "CONVERT_ROWS", 2)
    conv, keep, spreads = host_on_guest_axis(_timeline(), ts, vcpu, axis_vcpu=0)
    assert keep.tolist() == [True, True, True, True, True, False, True]
    assert conv.tolist() == [4_000, 12_500, 11_000, 4_000, 12_500, 13_500] and spreads == [1_500, 1_500]


def test_host_columns_wrap_and_no_offset_at_all() -> None:
    tl = OffsetTimeline.build([OffsetSnapshot(0, 0, TscParams(-(1 << 40)), "debugfs")])
    conv, keep, _ = host_on_guest_axis(tl, np.array([5, M64], dtype=np.uint64), np.array([0, -1]), axis_vcpu=0)
    assert conv.tolist() == [(5 - (1 << 40)) & M64, (M64 - (1 << 40)) & M64] and keep.all()
    empty = OffsetTimeline.build([])
    conv, keep, _ = host_on_guest_axis(empty, np.array([5, 6], dtype=np.uint64), np.array([-1, 0]), axis_vcpu=None)
    assert conv.tolist() == [] and not keep.any()


def _cols() -> AlignedColumns:
    host = [Record(100, 1, 4242, "qemu-kvm", "kvm_exit", 'reason "HLT" \\ é\x01', 4200),
            Record(90, 0, 77, "kworker/0:1", "sched_switch", "prev_comm=a ==> next_comm=b", -1)]
    guest = [Record(100, 1, 5, "bash", "tsalign_beacon", "seq=1 port=16 \u2603", 5),
             Record(M64, 0, 0, "<idle>", "write_msr", "6e0, value 1", -1)]
    return AlignedColumns.merged([
        AlignedColumns.from_events(Events.from_records(host), np.array([100, 95], dtype=np.uint64), True, np.array([1, -1])),
        AlignedColumns.from_events(Events.from_records(guest), np.array([100, M64], dtype=np.uint64), False)])


def test_order_and_rows() -> None:
    rows = _cols().rows()
    # by guest TSC, a guest event before a host event at the same TSC
    assert [(r["guest_tsc"], r["side"]) for r in rows] == [(95, "host"), (100, "guest"), (100, "host"), (M64, "guest")]
    assert rows[0] == {"guest_tsc": 95, "side": "host", "host_tsc": 90, "cpu": 0, "pid": 77, "tgid": -1,
                       "comm": "kworker/0:1", "event": "sched_switch", "payload": "prev_comm=a ==> next_comm=b",
                       "vcpu": None, "track": "cpu0"}
    assert rows[2]["vcpu"] == 1 and rows[2]["track"] == "vcpu1" and rows[1]["track"] == "vcpu1"
    assert "host_tsc" not in rows[1] and "vcpu" not in rows[1]


def test_merge_of_sorted_parts_is_lexsort_order() -> None:
    """Two sorted parts (the usual case) are merged by binary searches, not sorted: the same order as a stable
    lexsort of (guest TSC, guest before host) over both, many equal TSCs included; an unsorted host part (offsets
    that step back) takes the lexsort path, with the same answer."""
    rng = np.random.default_rng(7)

    def part(n: int, is_host: bool, sort: bool) -> AlignedColumns:
        g = rng.integers(0, 50, n).astype(np.uint64)
        g = np.sort(g) if sort else g
        ev = Events.from_records([Record(int(i), 0, int(i), "c", "e", f"{'h' if is_host else 'g'}{i}", -1)
                                  for i in range(n)])
        return AlignedColumns.from_events(ev, g, is_host)

    for sort in (True, False):
        h, g = part(300, True, sort), part(200, False, True)
        keys_g = np.concatenate([h.guest_tsc, g.guest_tsc])
        want = np.lexsort((np.concatenate([np.ones(300, bool), np.zeros(200, bool)]), keys_g), axis=0)
        want_payload = np.concatenate([h.payload, g.payload])[want].tolist()
        assert (_merge_positions([h, g]) is not None) == sort  # the path taken
        for parts in ([h, g], [g, h]):
            m = AlignedColumns.merged(parts)
            assert m.payload.tolist() == want_payload and m.guest_tsc.tolist() == keys_g[want].tolist()


def test_jsonl_is_what_json_writes() -> None:
    cols = _cols()
    want = "".join(json.dumps(r, sort_keys=True) + "\n" for r in cols.rows()).encode("ascii")
    f, rows = io.BytesIO(), io.BytesIO()
    cols.write_jsonl(f, chunk=3)
    cols._write_jsonl_rows(rows, chunk=3)  # the path without pyarrow
    assert f.getvalue() == want and rows.getvalue() == want


_I32 = st.integers(-(1 << 31), (1 << 31) - 1)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, M64), st.integers(0, M64), _I32, _I32, _I32,
                          st.integers(-1, 70), st.integers(0, 2), st.integers(0, 2), st.text(max_size=10)),
                min_size=1, max_size=12),
       st.lists(st.text(max_size=6), min_size=3, max_size=3), st.lists(st.text(max_size=6), min_size=3, max_size=3))
@settings(max_examples=300, deadline=None)
def test_jsonl_compiled_writer_is_json_dumps(rows: list[tuple], comms: list[str], names: list[str]) -> None:
    """The compiled JSON lines writer (tsalign.align.jsonl), its loop interpreted and the pyarrow-kernel path each
    write exactly ``json.dumps(row, sort_keys=True)`` of every row: integers at their limits (uint64 TSCs, negative
    int32 pids and tgids), vCPU -1 (null), comms, event names and payloads with quotes, backslashes, control and
    non-ASCII characters."""
    import pyarrow as pa

    from tsalign.align import columns
    from tsalign.align.jsonl import jsonl_lines
    from tsalign.traces.events import objects

    h, g, ht, cpu, pid, tgid, v, cc, ec, pl = (np.array(c, dtype=np.uint64 if k in (1, 2) else object)
                                               for k, c in enumerate(zip(*rows)))
    h = h.astype(bool)
    cols = AlignedColumns(g, h, np.where(h, ht, np.uint64(0)).astype(np.uint64),
                          cpu.astype(np.int32), pid.astype(np.int32), tgid.astype(np.int32),
                          np.where(h, v, -1).astype(np.int32), cc.astype(np.int32), ec.astype(np.int32),
                          objects(list(pl)), objects(comms), objects(names))
    want = "".join(json.dumps(r, sort_keys=True) + "\n" for r in cols.rows()).encode("ascii")
    f = io.BytesIO()
    cols.write_jsonl(f, chunk=5)
    assert f.getvalue() == want
    assert bytes(columns._jsonl_block_kernels(cols)) == want
    inv, labels = cols.track_codes()
    py = jsonl_lines(cols.is_host, cols.guest_tsc, cols.host_tsc, cols.cpu, cols.pid, cols.tgid, cols.vcpu,
                     cols.comm_code, columns._json_inner(cols.comms), cols.event_code, columns._json_inner(cols.names),
                     columns._json_inner(cols.payload), inv, pa.array(labels, pa.string()), force_python=True)
    assert py is not None and bytes(py) == want


def test_parquet_holds_the_rows(tmp_path: Path) -> None:
    from tsalign.traces.export import write_aligned_parquet

    cols = _cols()
    assert write_aligned_parquet(str(tmp_path / "t.parquet"), cols, {"axis": "guest_tsc"}, chunk=3) == 4
    back = pq.read_table(tmp_path / "t.parquet").to_pylist()
    want = [{"host_tsc": None, "vcpu": None} | r for r in cols.rows()]
    assert back == want


@given(st.lists(st.text(max_size=12), max_size=30), st.integers(0, 5))
@settings(max_examples=300, deadline=None)
def test_json_string_literals_are_json_dumps_of_any_text(values: list[str], cut: int) -> None:
    """Each payload's literal is ``json.dumps`` of it (quotes, backslashes, control and non-ASCII characters
    escaped), on a sliced array too (the byte check reads the slice's part of the buffer)."""
    import pyarrow as pa

    from tsalign.align import columns
    from tsalign.align.columns import _json_strings

    arr = pa.array(["pad"] * cut + values, pa.string()).slice(cut)
    compiled = _json_strings(arr).to_pylist()
    saved, columns._escaped_compiled = columns._escaped_compiled, None  # the path without numba
    try:
        plain = _json_strings(arr).to_pylist()
    finally:
        columns._escaped_compiled = saved
    assert saved is not None and compiled == plain == [json.dumps(v) for v in values]
