"""``tsalign align --outputs``: the timeline's outputs a long capture's user picks (JSON lines are the biggest and
slowest), on the shipped real selftest bundles (examples/selftest) and the shipped foreign pair (examples/foreign).
Each output asked for is the same rows as the default run's (read back with pyarrow and the json module); the verdict
does not depend on them; an output not asked for is not left from an earlier run; a wrong list is refused before
anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.unit.test_verify import SHIPPED, _tsalign
from tsalign import exitcodes

FOREIGN = Path(__file__).resolve().parents[2] / "examples" / "foreign"


def _align(out: Path, *more: str) -> tuple[int, dict]:
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o", str(out), "--json",
                 *more)
    return r.returncode, json.loads(r.stdout)


def _verdict(out: Path) -> dict:
    v = json.loads((out / "verdict.json").read_text())
    v.pop("artifacts")
    return v


def test_parquet_only_the_same_rows_and_verdict(tmp_path: Path) -> None:
    code, full = _align(tmp_path / "full")
    assert code == 0 and {"timeline", "parquet", "offsets"} <= set(full["artifacts"])
    out = tmp_path / "lean"
    _align(out)  # an earlier alignment's files in the same directory
    code, lean = _align(out, "--outputs", "parquet")
    assert (code, lean["verdict"]) == (0, full["verdict"])
    assert sorted(p.name for p in out.iterdir()) == ["offsets.jsonl", "timeline.parquet", "verdict.json"]
    assert set(lean["artifacts"]) == {"offsets", "parquet", "verdict"}
    assert _verdict(out) == _verdict(tmp_path / "full")
    rows = [json.loads(x) for x in (tmp_path / "full" / "timeline.jsonl").open()]
    table = pq.read_table(out / "timeline.parquet")
    assert table.num_rows == len(rows) > 1000
    assert table.column("guest_tsc").to_pylist() == [r["guest_tsc"] for r in rows]
    assert table.column("payload").to_pylist() == [r["payload"] for r in rows]


def test_none_writes_the_verdict_only(tmp_path: Path) -> None:
    code, v = _align(tmp_path / "v", "--outputs", "none")
    assert code == 0 and v["verdict"] == "pass"
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["offsets.jsonl", "verdict.json"]


def test_jsonl_and_perfetto_in_the_order_asked_any(tmp_path: Path) -> None:
    code, v = _align(tmp_path / "a", "--outputs", "perfetto,jsonl")
    assert code == 0 and set(v["artifacts"]) == {"offsets", "timeline", "perfetto", "verdict"}
    assert (tmp_path / "a" / "trace.perfetto-trace").stat().st_size > 0
    assert not (tmp_path / "a" / "timeline.parquet").exists()


def test_a_wrong_list_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o",
                 str(tmp_path / "x"), "--outputs", "jsonl,csv")
    assert r.returncode == exitcodes.USAGE and "jsonl, parquet, perfetto" in r.stderr and "'jsonl,csv'" in r.stderr
    # perfetto asked for where no TSC frequency is known (a .dat and a text trace, no --tsc-khz): its ns cannot be
    r = _tsalign("align", "--host", str(FOREIGN / "host.dat"), "--guest", str(FOREIGN / "guest.txt"), "-o",
                 str(tmp_path / "y"), "--outputs", "perfetto")
    assert r.returncode == exitcodes.INVALID_INPUT and "--tsc-khz" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _instants(path: Path) -> list[tuple[str, int]]:
    """(event name, guest_tsc) of each instant event in a Perfetto trace, parsed with the protobuf library."""
    import perfetto.protos.perfetto.trace.perfetto_trace_pb2 as pb  # type: ignore[import-untyped]

    trace = pb.Trace()
    trace.ParseFromString(path.read_bytes())
    return [(p.track_event.name, p.track_event.debug_annotations[1].uint_value) for p in trace.packet
            if p.HasField("track_event") and p.track_event.type == pb.TrackEvent.TYPE_INSTANT]


def test_window_and_only_cut_the_files_not_the_verdict(tmp_path: Path) -> None:
    """--window 0.01:0.02 --only kvm_pio,tsalign_beacon: each file holds exactly the full run's rows of those events
    whose guest_tsc is 10 ms to 20 ms (exclusive) after the first row, the window's cycles computed here by hand from
    the bundle's TSC frequency (ceil(s * kHz * 1000)); the verdict is the full run's but for what it records of the
    cut."""
    code, _ = _align(tmp_path / "full")
    assert code == 0
    khz = json.loads((SHIPPED / "host" / "manifest.json").read_text())["node"]["tsc_khz"]
    rows = [json.loads(x) for x in (tmp_path / "full" / "timeline.jsonl").open()]
    first = rows[0]["guest_tsc"]
    lo, hi = first + -(-khz * 1000 // 100), first + -(-khz * 1000 * 2 // 100)
    want = [r for r in rows if lo <= r["guest_tsc"] < hi and r["event"].split(":")[-1] in ("kvm_pio", "tsalign_beacon")]
    assert 100 < len(want) < len(rows) // 2 and {r["side"] for r in want} == {"host", "guest"}
    out = tmp_path / "cut"
    code, cut = _align(out, "--window", "0.01:0.02", "--only", "kvm_pio,tsalign_beacon")
    assert code == 0
    assert [json.loads(x) for x in (out / "timeline.jsonl").open()] == want
    table = pq.read_table(out / "timeline.parquet")
    assert table.column("guest_tsc").to_pylist() == [r["guest_tsc"] for r in want]
    assert _instants(out / "trace.perfetto-trace") == [(r["event"], r["guest_tsc"]) for r in want]
    sel = cut.pop("timeline_selection")
    assert sel == {"window_s": [0.01, 0.02], "window_guest_tsc": [lo, hi], "only": ["kvm_pio", "tsalign_beacon"],
                   "rows": len(want), "of": len(rows)}
    assert _verdict(out) | {"timeline_selection": None} == _verdict(tmp_path / "full") | {"timeline_selection": None}
    # the same window in cycles, open at its end
    code, _ = _align(tmp_path / "tsc", "--window-tsc", f"{lo}:", "--outputs", "parquet")
    got = pq.read_table(tmp_path / "tsc" / "timeline.parquet").column("guest_tsc").to_pylist()
    assert code == 0 and got == [r["guest_tsc"] for r in rows if r["guest_tsc"] >= lo]
    # a window past the capture: empty files, and said so, with the capture's span
    code, v = _align(tmp_path / "past", "--window", "1000:", "--outputs", "jsonl")
    span = f"the events span guest TSC {first}..{rows[-1]['guest_tsc']}"
    assert code == 0 and (tmp_path / "past" / "timeline.jsonl").read_text() == ""
    assert v["timeline_selection"]["rows"] == 0 and any(span in n for n in v["notes"]), v["notes"]


def test_a_cut_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    """Refused with the option named, no file left: a name no event has (a typo would write empty files), seconds
    without a TSC frequency (the foreign pair without --tsc-khz), ends the wrong way round, both windows."""
    cases = [
        ((SHIPPED / "host", SHIPPED / "guest"), ["--only", "kvm_pio,kvm_exti"],
         "--only: invalid value 'kvm_pio,kvm_exti'; expected names of events in these traces (none is kvm_exti"),
        ((FOREIGN / "host.dat", FOREIGN / "guest.txt"), ["--tsc-offset", "0=0", "--window", "1:2"],
         "expected a TSC frequency to count seconds in: give --tsc-khz"),
        ((SHIPPED / "host", SHIPPED / "guest"), ["--window", "2:1"], "expected FROM:TO with FROM before TO"),
        ((SHIPPED / "host", SHIPPED / "guest"), ["--window", "1e3:"], "expected FROM:TO in seconds after the first"),
        ((SHIPPED / "host", SHIPPED / "guest"), ["--window", "5"], "expected FROM:TO"),
        ((SHIPPED / "host", SHIPPED / "guest"), ["--window", "1:", "--window-tsc", "1:"], "one of them, not both"),
        ((SHIPPED / "host", SHIPPED / "guest"), ["--only", "a b"], "expected event names, comma-separated"),
        ((SHIPPED / "host", SHIPPED / "guest"), ["--only", "kvm:*"], "expected event names, comma-separated"),
    ]
    for i, ((h, g), more, said) in enumerate(cases):
        out = tmp_path / f"x{i}"
        r = _tsalign("align", "--host", str(h), "--guest", str(g), "-o", str(out), *more)
        assert r.returncode == exitcodes.INVALID_INPUT and said in r.stderr, (more, r.stderr)
        assert not out.exists()
