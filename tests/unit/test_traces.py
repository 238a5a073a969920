"""Trace readers on synthetic input with known answers (real recorded files: tests/integration/test_traces_real.py)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.infra.ringpages import PAGE, PageWriter, payload, write_v7
from tsalign.errors import InvalidParameter
from tsalign.traces import rawpage, ringbuf
from tsalign.traces.eventformat import parse_format
from tsalign.traces.events import Events
from tsalign.traces.reader import detect, open_trace
from tsalign.traces.table import Chunk, merge_sorted
from tsalign.traces.text import TextTrace


def walk(data: bytes, both: bool = True) -> tuple[list[int], list[int], np.ndarray]:
    raw = np.frombuffer(data, dtype=np.uint8)
    res = []
    for fn in ((ringbuf.walk_pages, ringbuf.walk_pages_py) if both else (ringbuf.walk_pages,)):
        cap = len(raw) // 8 + 1
        ts, off, ln = np.empty(cap, np.uint64), np.empty(cap, np.int64), np.empty(cap, np.int32)
        info = np.zeros((len(raw) // PAGE, 4), np.int64)
        n = fn(raw, PAGE, 16, 8, ts, off, ln, info)
        res.append((ts[:n].tolist(), off[:n].tolist(), ln[:n].tolist(), info))
    if both:
        a, b = res
        assert a[:3] == b[:3] and (a[3] == b[3]).all(), "compiled and interpreted walks differ"
    # the node's standard-library walk (calibrate --pairs-out): the same stamps, or an error where these see one
    info = res[0][3]
    if info[:, 2].any():
        with pytest.raises(InvalidParameter, match="ring-buffer pages"):
            rawpage.page_timestamps(data, PAGE, 16, 8)
    else:
        assert rawpage.page_timestamps(data, PAGE, 16, 8) == (res[0][0], int(info[:, 1].sum()))
    return res[0][0], res[0][1], res[0][3]


def test_walk_known_events() -> None:
    w = PageWriter(1_000_000, missed_first=True)
    expect = [w.event(0, payload(7, 1, 10)), w.event(5, payload(7, 1, 11))]
    expect.append(w.event(3 << 27, payload(7, 1, 12)))  # needs a time extend
    w.discarded(9, 12)
    expect.append(w.event(1, payload(7, 1, 13) + b"x" * 200))  # length word (type_len 0)
    w.absolute((1 << 40) + 77)
    expect.append(w.event(0, payload(7, 1, 14)))
    ts, _, info = walk(w.pages())
    assert ts == expect
    assert expect[3] == expect[2] + 9 + 1 and expect[4] == (1 << 40) + 77
    assert info[0, 1] == 1 and info[0, 0] == 5


@given(st.lists(st.tuples(st.integers(0, (1 << 33)), st.integers(0, 140)), min_size=1, max_size=400))
def test_walk_roundtrip_random(events: list[tuple[int, int]]) -> None:
    """Any sequence of deltas and payload sizes, spread over pages, comes back exactly."""
    w = PageWriter(123)
    expect = [w.event(d, payload(7, 2, 0) + b"\1" * n) for d, n in events]
    ts, _, info = walk(w.pages(), both=len(events) < 60)
    assert ts == expect and info[:, 2].sum() == 0


def test_walk_reports_corrupt_page() -> None:
    w = PageWriter(0)
    w.event(1, payload(7, 1, 1))
    data = bytearray(w.pages())
    struct.pack_into("<q", data, 8, 5000)  # commit larger than a page
    _, _, info = walk(bytes(data))
    assert info[0, 2] == 1


@given(st.lists(st.tuples(st.integers(8, 4095), st.integers(0, 255)), min_size=1, max_size=8))
def test_walks_agree_on_mutated_pages(flips: list[tuple[int, int]]) -> None:
    """Bytes of a valid page overwritten anywhere past its timestamp (commit included): the compiled walk, the interpreted one and
    the node's standard-library walk agree (stamps, or an error) — walk() compares them."""
    w = PageWriter(77)
    for i in range(40):
        w.event(i * 1000 + (3 << 27) * (i == 7), payload(7, 1, i) + b"y" * (i % 9) * 4)
    data = bytearray(w.pages())
    for pos, val in flips:
        data[pos] = val
    walk(bytes(data))


def test_merge_sorted_equals_stable_sort() -> None:
    rng = np.random.default_rng(1)
    streams = []
    for cpu in range(4):
        ts = np.sort(rng.integers(0, 1000, 500)).astype(np.uint64)
        chunks = []
        for i in range(0, 500, 37):
            t = ts[i:i + 37]
            z = np.full(len(t), cpu, np.int32)
            chunks.append(Chunk(t, z, z, z, z, [f"{cpu}"] * len(t)))
        streams.append(iter(chunks))
    merged = list(merge_sorted(streams))
    ts = np.concatenate([c.ts for c in merged])
    cpus = np.concatenate([c.cpu for c in merged])
    assert len(ts) == 2000 and (np.diff(ts.astype(np.int64)) >= 0).all()
    order = np.lexsort((cpus, ts))
    assert (cpus == cpus[order]).all()  # ties ordered by stream (CPU), like trace-cmd


def _v7(tmp_path: Path, **kw: object) -> Path:
    w0, w1 = PageWriter(1000), PageWriter(1001)
    for i in range(300):
        w0.event(10, payload(7, 100, i))
        w1.event(10, payload(7, 100, 1000 + i))
    p = tmp_path / "t.dat"
    write_v7(str(p), {"inst": {0: w0.pages(), 1: w1.pages()}}, **kw)  # type: ignore[arg-type]
    return p


@pytest.mark.parametrize("compression", ["zlib", "none"])
def test_v7_file_zlib_and_plain(tmp_path: Path, compression: str) -> None:
    p = _v7(tmp_path, compression=compression)
    assert detect(str(p)) == "dat"
    with open_trace(str(p), block_bytes=PAGE) as t:
        chunks = list(t.chunks())
        ts = np.concatenate([c.ts for c in chunks])
        assert len(ts) == 600 and (np.diff(ts.astype(np.int64)) >= 0).all()
        assert t.info.clock == "x86-tsc" and t.info.domain == "tsc" and t.info.buffer == "inst"
        seqs = []
        for c in chunks:
            _, f = t.fields(c, "test:tick")
            seqs += f["seq"].tolist()
            assert set(t.comms.decode(c.comm)) == {"worker"}
        assert sorted(seqs) == list(range(300)) + list(range(1000, 1300))


def test_corrupt_compressed_chunk_names_offset(tmp_path: Path) -> None:
    p = _v7(tmp_path, compression="zlib")
    data = bytearray(p.read_bytes())
    from tsalign.traces.tracedat import TraceDat

    with TraceDat(str(p)) as d:
        cpu = d.buffers[0].cpus[1]
    data[cpu.offset + 12: cpu.offset + 20] = b"\xff" * 8  # inside the first compressed chunk
    p.write_bytes(bytes(data))
    with pytest.raises(InvalidParameter, match=r"CPU 1 chunk 0 at offset \d+.*zlib|corrupt"), open_trace(str(p)) as t:
        list(t.chunks())


def test_truncated_file_names_offset(tmp_path: Path) -> None:
    p = _v7(tmp_path, compression="zlib")
    data = p.read_bytes()
    for cut in (5, 40, len(data) // 2, len(data) - 30):
        q = tmp_path / f"cut{cut}.dat"
        q.write_bytes(data[:cut])
        with pytest.raises(InvalidParameter, match=r"truncated|trace-cmd data file|offset"), open_trace(str(q), "dat") as t:
            list(t.chunks())


def test_unknown_event_type_kept_with_warning(tmp_path: Path) -> None:
    w = PageWriter(5)
    w.event(1, payload(7, 100, 1))
    w.event(1, payload(99, 100, 2))
    p = tmp_path / "u.dat"
    write_v7(str(p), {"": {0: w.pages()}}, compression="none")
    with open_trace(str(p)) as t:
        s = t.summary()
    assert s["per_event"] == {"test:tick": 1, "unknown:99": 1}
    assert any("event type 99 has no format" in x for x in s["warnings"])


SEED = """2023-03-28 18:49:24.554854       CPU 68/KVM 183456 d... [049] 86344.182710: kprobes:kvm_vcpu_kick: (ffffffffc045ace0) tsc_offset=0xffee6aba03eccaac
2023-03-28 18:53:53.757492           <idle>      0 dNh. [024] 5696917.795461: sched:sched_wakeup: pal_session:57886 [100] success=1 CPU:024
"""


def test_perf_prof_seed_lines() -> None:
    t = TextTrace("<seed>", "perf-prof", stream=io.StringIO("TSC conversion is not supported.\n" + SEED))
    chunks = list(t.chunks())
    c = chunks[0]
    assert c.ts.tolist() == [86344182710000, 5696917795461000]  # sorted, exact from the digits
    assert t.comms.decode(c.comm) == ["CPU 68/KVM", "<idle>"] and c.cpu.tolist() == [49, 24]
    _, f = t.fields(c, "kprobes:kvm_vcpu_kick")
    assert f["tsc_offset"] == ["0xffee6aba03eccaac"]
    assert t.info.resolution == 1000 and any("resolution 1000" in n for n in t.info.notes)


def test_perf_script_thread_perf_does_not_know() -> None:
    """`perf script` prints a sample of a thread it has no comm for as comm ":-1", tid -1 (seen in CI run 27's
    real recording: a task that exited); such a line is an event, not an error."""
    text = ("      python  8450 [000] 89726.029930000: sched:sched_switch: prev_comm=python prev_pid=8450\n"
            "         :-1    -1 [000] 89726.029938462: sched:sched_switch: prev_comm=python prev_pid=8450\n")
    t = TextTrace("<perf>", "perf-script", stream=io.StringIO(text))
    c = next(iter(t.chunks()))
    assert c.ts.tolist() == [89726029930000, 89726029938462] and t.comms.decode(c.comm) == ["python", ":-1"]
    assert c.pid.tolist() == [8450, -1]


def test_ftrace_variants_and_garbage(tmp_path: Path) -> None:
    lines = [
        "# tracer: nop",
        "          <idle>-0       [001] d.h.. 27178704201442: irq_handler_entry: irq=11 name=virtio0",  # irq-info
        "            bash-31073   [001] 27178704209999: sched_switch: prev_comm=bash prev_pid=31073",  # no irq-info
        "            bash-31073   (  31073) [000] ..... 27178704300000: sched_wakeup: comm=x pid=1",  # TGID column
        "tsx:    sleep-31077 [001] 27178704400000: sched_switch: prev_comm=sleep",  # trace-cmd report with buffer
    ]
    p = tmp_path / "t.txt"
    p.write_text("\n".join(lines) + "\n")
    assert detect(str(p)) == "ftrace"
    with open_trace(str(p)) as t:
        c = next(iter(t.chunks()))
        assert c.ts.tolist() == [27178704201442, 27178704209999, 27178704300000, 27178704400000]
        assert t.info.clock == "x86-tsc" and c.pid.tolist() == [0, 31073, 31073, 31077]
    p.write_text("\n".join([*lines, "garbage in the middle", lines[2]]) + "\n")
    with pytest.raises(InvalidParameter, match=r"t\.txt:6.*--lenient"), open_trace(str(p)) as t:
        list(t.chunks())
    with open_trace(str(p), strict=False) as t:
        assert sum(len(c) for c in t.chunks()) == 5 and any("t.txt:6" in w for w in t.info.warnings)
    p.write_text("  bash-1 [000] 1.1234567890: x: y\n")
    with pytest.raises(InvalidParameter, match="at most 9"), open_trace(str(p), "ftrace") as t:
        list(t.chunks())


def test_not_a_trace(tmp_path: Path) -> None:
    (tmp_path / "perf.data").write_bytes(b"PERFILE2" + b"\0" * 100)
    with pytest.raises(InvalidParameter, match="perf script --ns"):
        detect(str(tmp_path / "perf.data"))
    (tmp_path / "x.txt").write_text("hello\nworld\n")
    with pytest.raises(InvalidParameter, match="pass --format"):
        detect(str(tmp_path / "x.txt"))
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(InvalidParameter, match="empty"):
        detect(str(tmp_path / "e.txt"))


def test_format_parser_kinds() -> None:
    text = """name: demo
ID: 42
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;
\tfield:unsigned long args[6];\toffset:32;\tsize:48;\tsigned:0;
\tfield:s64 delta;\toffset:80;\tsize:8;\tsigned:1;

print fmt: "x"
"""
    f = parse_format(text, "sys")
    kinds = {x.name: (x.kind, x.offset, x.size, x.signed) for x in f.fields}
    assert f.full_name == "sys:demo" and f.id == 42
    assert kinds["prev_comm"] == ("string", 8, 16, False) and kinds["name"][0] == "data_loc"
    assert kinds["args"][0] == "array" and kinds["delta"] == ("int", 80, 8, True)
    with pytest.raises(InvalidParameter, match="name:.* and .ID:"):
        parse_format("format:\n", "x")


def test_align_writes_parquet_timeline(tmp_path: Path) -> None:
    """`tsalign align` on the shipped real selftest bundles: the Parquet timeline holds every merged event."""
    import json as _json
    import subprocess
    import sys

    import pyarrow.parquet as pq

    ex = Path(__file__).resolve().parents[2] / "examples" / "selftest"
    r = subprocess.run([sys.executable, "-m", "tsalign", "align", "--host", str(ex / "host"), "--guest", str(ex / "guest"),
                        "-o", str(tmp_path / "al"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    arts = _json.loads(r.stdout)["artifacts"]
    t = pq.read_table(arts["parquet"])
    lines = Path(arts["timeline"]).read_text().splitlines()
    assert t.num_rows == len(lines) > 1000
    g = t.column("guest_tsc").to_pylist()
    assert g == sorted(g) and g == [_json.loads(x)["guest_tsc"] for x in lines]
    assert set(t.column("side").to_pylist()) == {"host", "guest"}
    # every offset segment in offsets.jsonl; the verdict counts them and keeps the first ones
    segs = [_json.loads(x) for x in Path(arts["offsets"]).read_text().splitlines()]
    summary = _json.loads(Path(arts["verdict"]).read_text())["offsets"]["timeline"]["vcpus"]
    assert len(segs) == sum(v["segments"] for v in summary.values()) > 0
    for v, s in summary.items():
        mine = [{k: x for k, x in r.items() if k != "vcpu"} for r in segs if r["vcpu"] == int(v)]
        assert s["first"] == mine[:4] and s["distinct_offsets"] == len({r["offset"] for r in mine})


def test_aligned_parquet_is_written_in_row_groups(tmp_path: Path) -> None:
    """Row groups of ``chunk`` events, each column equal to the events' values (nulls kept), dictionaries per group."""
    import numpy as np
    import pyarrow.parquet as pq

    from tsalign.align.columns import AlignedColumns
    from tsalign.traces.export import write_aligned_parquet
    from tsalign.traces.ftrace_text import Record

    host = [Record(i, i % 2, 7, "c", f"e{i % 5}", str(i)) for i in range(1000) if i % 3]
    guest = [Record((1 << 63) + i, i % 2, 7, "c", f"e{i % 5}", str(i)) for i in range(1000) if not i % 3]
    cols = AlignedColumns.merged([
        AlignedColumns.from_events(Events.from_records(host), np.array([(1 << 63) + r.ts for r in host], dtype=np.uint64), True,
                                    np.zeros(len(host), dtype=np.int64)),
        AlignedColumns.from_events(Events.from_records(guest), np.array([r.ts for r in guest], dtype=np.uint64), False)])
    evs = cols.rows()
    path = str(tmp_path / "t.parquet")
    assert write_aligned_parquet(path, cols, {"axis": "guest_tsc"}, chunk=300) == 1000
    f = pq.ParquetFile(path)
    assert f.num_row_groups == 4 and [f.metadata.row_group(i).num_rows for i in range(4)] == [300, 300, 300, 100]
    t = f.read()
    assert [e["guest_tsc"] for e in evs] == [(1 << 63) + i for i in range(1000)]
    for name in ("guest_tsc", "side", "host_tsc", "tgid", "vcpu", "event", "payload", "track"):
        assert t.column(name).to_pylist() == [e.get(name) for e in evs], name
    assert t.schema.metadata[b"tsalign.axis"] == b"guest_tsc"


def test_events_cli_summarises_each_buffer(tmp_path: Path) -> None:
    """A .dat with two instance buffers: one summary per buffer; --buffer picks one; a wrong name lists them."""
    import json as _json
    import subprocess
    import sys

    a, b = PageWriter(10), PageWriter(20)
    for i in range(5):
        a.event(3, payload(7, 100, i))
    for i in range(7):
        b.event(3, payload(7, 100, i))
    p = tmp_path / "two.dat"
    write_v7(str(p), {"alpha": {0: a.pages()}, "beta": {1: b.pages()}})
    run = lambda *x: subprocess.run([sys.executable, "-m", "tsalign", "events", str(p), "--json", *x],
                                    capture_output=True, text=True)
    r = run()
    assert r.returncode == 0, r.stderr
    docs = _json.loads(r.stdout)["traces"]
    assert [(d["buffer"], d["events"], d["cpus"]) for d in docs] == [("alpha", 5, [0]), ("beta", 7, [1])]
    assert _json.loads(run("--buffer", "beta").stdout)["traces"][0]["events"] == 7
    r = run("--buffer", "gamma")
    assert r.returncode == 3 and "'alpha', 'beta'" in r.stderr


def test_syscall_lines_named_as_their_tracepoints(tmp_path: Path) -> None:
    """Syscall tracepoints print `sys_write(...)` / `sys_write -> ret`; a kprobe called sys_* keeps its name; the
    TGID column is kept (a dashed one is -1)."""
    from tsalign.align.sides import _read

    p = tmp_path / "t.txt"
    p.write_text("  CPU 1/TCG-2397    (   2393) [000] ..... 31789024823090: sys_write(fd: 9, buf: 0x56, count: 8)\n"
                 "  worker-2400 (2393) [001] ..... 31789024823999: sys_pwritev -> 0x10000\n"
                 "  qemu-1 (-------) [000] ..... 31789024824000: sys_kick: (ffffffffc045ace0) tsc_offset=0x1\n")
    enter, leave, probe = _read(str(p), None, None, False)[0].records()
    assert (enter.event, enter.comm, enter.pid, enter.tgid) == ("sys_enter_write", "CPU 1/TCG", 2397, 2393)
    assert (leave.event, leave.payload, leave.tgid) == ("sys_exit_pwritev", "-> 0x10000", 2393)
    assert (probe.event, probe.payload, probe.tgid) == ("sys_kick", "(ffffffffc045ace0) tsc_offset=0x1", -1)
