"""Trace readers on files recorded on this machine, checked against the tools that wrote them.

One private tracefs instance (x86-tsc, TGID recorded) is read three ways: its own ``trace`` text (with
and without the irq-info columns), a trace-cmd .dat made by ``trace-cmd extract`` (v7 zstd, converted by
trace-cmd to v6 and to uncompressed v7), and ``trace-cmd report -t`` of that file. ``perf record`` +
``perf script`` (default and --ns) give the perf files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import need
from tests.infra import recorded
from tsalign.errors import InvalidParameter
from tsalign.traces.reader import open_trace
from tsalign.traces.text import parse_kv

TRACEFS = "/sys/kernel/tracing"


def _tools() -> None:
    need(os.geteuid() == 0, "needs root (tracefs instances, perf record -a)")
    need(os.path.isdir(f"{TRACEFS}/instances"), "needs tracefs at /sys/kernel/tracing")
    need(shutil.which("trace-cmd") is not None, "needs trace-cmd (make deps installs it)")
    need(shutil.which("perf") is not None, "needs perf (Debian linux-perf; make deps installs it)")


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _tools()
    return recorded.record(tmp_path_factory.mktemp("recorded"))


def rows(path: Path, **kw: Any) -> tuple[list[tuple[int, int, int, str, str]], Any]:
    out = []
    with open_trace(str(path), **kw) as t:
        for c in t.chunks():
            ts = c.ts.tolist()
            assert ts == sorted(ts)
            out += list(zip(ts, c.cpu.tolist(), c.pid.tolist(), t.comms.decode(c.comm),
                            [e.split(":")[-1] for e in t.events.decode(c.event)]))
        return out, t.info


@pytest.mark.parametrize("variant", ["v7zstd", "v6", "v7none"])
def test_dat_equals_trace_cmd_report(rec: dict[str, Path], variant: str) -> None:
    ours, info = rows(rec[variant])
    theirs, _ = rows(rec["report"], clock="x86-tsc")
    assert len(ours) == len(theirs) > 1000
    assert sorted(ours) == sorted(theirs)  # same events, timestamps to the cycle, cpus, pids, comms
    assert info.clock == "x86-tsc" and info.domain == "tsc"
    assert any("labels this buffer's clock 'local'" in w for w in info.warnings), info.warnings


@pytest.mark.parametrize("variant", ["text", "text_noirq"])
def test_tracefs_text_equals_dat(rec: dict[str, Path], variant: str) -> None:
    ours, info = rows(rec[variant])
    dat, _ = rows(rec["v7zstd"])
    assert info.clock == "x86-tsc"  # integers this large: TSC cycles
    assert sorted((t, c, p, e) for t, c, p, _, e in ours) == sorted((t, c, p, e) for t, c, p, _, e in dat)
    head = rec[variant].read_text().splitlines()[:20]
    assert any("TGID" in line for line in head)
    assert any("irqs-off" in line for line in head) is (variant == "text")


def test_dat_fields_equal_tracefs_text(rec: dict[str, Path]) -> None:
    want = []
    with open_trace(str(rec["text"])) as t:
        for c in t.chunks():
            r, _ = t.fields(c, "sched_switch")
            want += [(int(c.ts[i]), int(parse_kv(c.payload[i])["prev_pid"]), int(parse_kv(c.payload[i])["next_pid"]),
                      parse_kv(c.payload[i])["next_comm"]) for i in r.tolist()]  # type: ignore[index]
    got = []
    with open_trace(str(rec["v6"])) as t:
        for c in t.chunks():
            r, f = t.fields(c, "sched:sched_switch")
            got += list(zip(c.ts[r].tolist(), f["prev_pid"].tolist(), f["next_pid"].tolist(), f["next_comm"]))
    assert len(got) == len(want) > 50 and sorted(got) == sorted(want)


def test_perf_script_default_and_ns(rec: dict[str, Path]) -> None:
    ns, info_ns = rows(rec["perf_ns"])
    us, info_us = rows(rec["perf"])
    ref = [line.split() for line in rec["perf_times"].read_text().splitlines() if line.strip()]
    ref_ts = sorted(int(w[1].rstrip(":").replace(".", "")) for w in ref)  # '[000] 11129.868688158:' -> ns
    assert len(ns) == len(us) == len(ref_ts) > 20
    assert sorted(r[0] for r in ns) == ref_ts
    assert sorted(r[0] for r in us) == sorted(t // 1000 * 1000 for t in ref_ts)
    assert info_ns.resolution == 1 and info_us.resolution == 1000 and info_ns.clock == "perf"


def test_cli_summary_and_parquet(rec: dict[str, Path], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    r = subprocess.run([sys.executable, "-m", "tsalign", "events", str(rec["v7zstd"]), str(rec["perf_ns"]), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 6, r.stderr  # a warning: the .dat labels its x86-tsc buffer "local"
    docs = json.loads(r.stdout)["traces"]
    n_dat = len(rows(rec["v7zstd"])[0])
    assert docs[0]["events"] == n_dat and docs[0]["clock"] == "x86-tsc" and docs[0]["buffer"].startswith("tsalign-")
    assert docs[1]["format"] == "perf-script" and docs[1]["per_event"]["sched:sched_switch"] > 0
    out = tmp_path / "e.parquet"
    r = subprocess.run([sys.executable, "-m", "tsalign", "events", str(rec["v7zstd"]), "--parquet", str(out),
                        "--tsc-offset", "0xffee6aba03eccaac", "--json"], capture_output=True, text=True)
    assert r.returncode == 6, r.stderr
    t = pq.read_table(out)
    assert t.num_rows == n_dat and t.schema.metadata[b"tsalign.clock"] == b"x86-tsc"
    ts = np.array(t.column("ts").to_pylist(), dtype=np.uint64)
    g = np.array(t.column("guest_tsc").to_pylist(), dtype=np.uint64)
    assert (g - ts == np.uint64(0xFFEE6ABA03ECCAAC)).all()  # exact mod 2^64
    sw = [json.loads(p) for p, e in zip(t.column("payload").to_pylist(), t.column("event").to_pylist())
          if e == "sched:sched_switch"]
    assert sw and all("prev_pid" in d and "next_comm" in d for d in sw)


def test_real_dat_corruption_is_named(rec: dict[str, Path], tmp_path: Path) -> None:
    from tsalign.traces.tracedat import TraceDat

    data = rec["v7zstd"].read_bytes()
    with TraceDat(str(rec["v7zstd"])) as d:
        buf = d.buffer(None)
        cpu = max(buf.cpus, key=lambda c: c.size)
    bad = bytearray(data)
    bad[cpu.offset + 20: cpu.offset + 60] = os.urandom(40)
    p = tmp_path / "corrupt.dat"
    p.write_bytes(bytes(bad))
    with pytest.raises(InvalidParameter, match=rf"CPU {cpu.cpu} chunk 0 at offset \d+"), open_trace(str(p)) as t:
        list(t.chunks())
    p.write_bytes(data[: cpu.offset + cpu.size // 2])
    with pytest.raises(InvalidParameter, match="truncated"), open_trace(str(p)) as t:
        list(t.chunks())


def test_bundle_reader_matches_bundle_records() -> None:
    from tsalign.traces.bundle import Bundle

    src = Path(__file__).resolve().parents[2] / "examples" / "selftest"
    for side in ("host", "guest"):
        b = Bundle.open(str(src / side))
        want = sorted((r.ts, r.cpu, r.pid, r.event) for r in b.records())
        got, info = rows(src / side)
        assert sorted((t, c, p, e) for t, c, p, _, e in got) == sorted((t, c, p, e.split(":")[-1]) for t, c, p, e in want)
        assert info.domain == "tsc" and info.format == "bundle"
