"""The calibration map (tsalign.clock.calib) on pairs made by hand from known pvclock records: the fit
recovers maps that put every pair's ns inside its TSC bracket, finds a step as a second piece, sets
interrupted (wide) brackets aside, and its file round-trips and refuses edits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tsalign.clock import calib, pvclock
from tsalign.clock.pvclock import Pvclock
from tsalign.errors import InvalidParameter

TRUE = Pvclock(5_000_000_000, 10_000_000_000, 3_510_000_000, -1)  # ~0.4086 ns per cycle (2.447 GHz)


def _pairs(pv: Pvclock, tscs: np.ndarray, before: int = 300, after: int = 400) -> tuple[list[int], list[int], list[int]]:
    ns = [pvclock.tsc_to_kvmclock(int(t), pv) for t in tscs]
    return ns, [int(t) - before for t in tscs], [int(t) + after for t in tscs]


def test_fit_recovers_a_pvclock_clock_within_the_brackets() -> None:
    tscs = np.linspace(10_000_000_000, 10_000_000_000 + 5 * 2_447_000_000, 4000).astype(np.int64)
    ns, lo, hi = _pairs(TRUE, tscs)
    cal = calib.fit(ns, lo, hi, "local", 2_447_000)
    assert len(cal.pieces) == 1 and cal.disturbed == 0
    # every bracket is 700 cycles wide (by hand): the map and the true line differ by at most that, plus the
    # inverse's rounding
    assert int(cal.errors(ns, lo, hi).max()) == 0 and cal.bound_cycles == 701
    back, outside = cal.to_tsc(np.array(ns, dtype=np.uint64))
    assert outside == 0 and np.all(back >= np.array(lo, dtype=np.uint64)) and np.all(back <= np.array(hi, dtype=np.uint64))
    # and TSC -> ns lands within a few ns of the true clock
    got = cal.to_ns(np.array(tscs, dtype=np.uint64)).astype(np.int64)
    assert int(np.abs(got - np.array(ns, dtype=np.int64)).max()) < 200


def test_a_step_becomes_a_second_piece_and_wide_brackets_are_disturbed() -> None:
    a = np.linspace(10_000_000_000, 12_000_000_000, 1000).astype(np.int64)
    b = np.linspace(12_000_100_000, 14_000_000_000, 1000).astype(np.int64)
    stepped = Pvclock(TRUE.system_time + 3_000_000, TRUE.tsc_timestamp, TRUE.tsc_to_system_mul, TRUE.tsc_shift)
    ns1, lo1, hi1 = _pairs(TRUE, a)
    ns2, lo2, hi2 = _pairs(stepped, b)
    lo2[10] -= 500_000  # an interrupt between the two TSC reads of one pair
    cal = calib.fit(ns1 + ns2, lo1 + lo2, hi1 + hi2, "perf")
    assert len(cal.pieces) == 2 and cal.disturbed == 1 and "step" in cal.notes[0]
    assert [p.pairs for p in cal.pieces] == [1000, 999]
    assert int(cal.errors(ns1 + ns2, lo1 + lo2, hi1 + hi2)[np.arange(2000) != 1010].max()) == 0


def test_calibration_file_round_trips_and_refuses_edits(tmp_path: Path) -> None:
    tscs = np.linspace(10_000_000_000, 11_000_000_000, 100).astype(np.int64)
    cal = calib.fit(*_pairs(TRUE, tscs), "local", 2_447_000, "boot-1")
    path = tmp_path / "cal.json"
    calib.save(str(path), [cal])
    again = calib.load(str(path))["local"]
    assert again.pieces == cal.pieces and again.tsc_khz == 2_447_000 and again.boot_id == "boot-1"
    doc = json.loads(path.read_text())
    for edit in ({"format": "other"}, {"clocks": {"local": {"clock": "perf", "pieces": doc["clocks"]["local"]["pieces"]}}},
                 {"clocks": {"local": {**doc["clocks"]["local"], "pieces": [{"system_time": -1}]}}}):
        (tmp_path / "bad.json").write_text(json.dumps({**doc, **edit}))
        with pytest.raises(InvalidParameter):
            calib.load(str(tmp_path / "bad.json"))
    with pytest.raises(InvalidParameter, match="at least 16"):
        calib.fit([1, 2], [1, 2], [1, 2], "local")


def test_a_timestamp_the_calibration_cannot_reach_is_refused() -> None:
    tscs = np.linspace(10_000_000_000, 11_000_000_000, 100).astype(np.int64)
    cal = calib.fit(*_pairs(TRUE, tscs), "local")
    with pytest.raises(InvalidParameter, match="calibration reaches"):
        cal.to_tsc([cal.pieces[0].pv.system_time - 1])
    tsc, outside = cal.to_tsc([cal.pieces[0].pv.system_time, cal.pieces[-1].ns_last + 10**9])
    assert outside == 2 and int(tsc[1]) > int(tsc[0])


def test_wide_brackets_are_no_step() -> None:
    """Brackets wider than the step threshold (a loaded machine) but a clock without a step: one piece, its bound
    the bracket width (a step is a map that misses the brackets, not a wide bracket)."""
    tscs = np.linspace(10_000_000_000, 12_000_000_000, 2000).astype(np.int64)
    ns, lo, hi = _pairs(TRUE, tscs, before=15_000, after=15_000)
    cal = calib.fit(ns, lo, hi, "local")
    assert len(cal.pieces) == 1 and cal.bound_cycles == 30_001 and int(cal.errors(ns, lo, hi).max()) == 0


def test_judging_on_fresh_pairs_can_fail() -> None:
    """Fresh pairs of the same clock pass; the same map moved by 5 us fails; fresh pairs that are all
    interrupted (brackets 100x the usual) leave nothing to judge: fail, not pass."""
    tscs = np.linspace(10_000_000_000, 11_000_000_000, 500).astype(np.int64)
    cal = calib.fit(*_pairs(TRUE, tscs), "local", 2_445_428)
    fresh = np.linspace(11_000_000_000, 11_200_000_000, 300).astype(np.int64)
    ns, lo, hi = _pairs(TRUE, fresh)
    ok = cal.judge(ns, lo, hi)
    assert ok["verdict"] == "pass" and ok["fresh_pairs"] == 300 and ok["beyond_bound"] == 0
    moved = calib.Calibration("local", [calib.Piece(
        Pvclock(p.pv.system_time + 5000, p.pv.tsc_timestamp, p.pv.tsc_to_system_mul, p.pv.tsc_shift),
        p.ns_first, p.ns_last, p.tsc_first, p.tsc_last, p.pairs, p.bound_cycles) for p in cal.pieces],
        2_445_428, median_bracket_cycles=cal.median_bracket_cycles)
    bad = moved.judge(ns, lo, hi)
    assert bad["verdict"] == "fail" and bad["beyond_bound"] == 300 and bad["max_error_ns"] > 4000
    wide = cal.judge(ns, [v - 70_000 for v in lo], [v + 70_000 for v in hi])
    assert wide["verdict"] == "fail" and wide["fresh_pairs"] == 0 and wide["disturbed"] == 300


def test_a_piece_whose_system_time_lies_before_zero() -> None:
    """A fitted piece may put system_time before 0 ns (stored modulo 2^64, as the L2 of the nested lab's
    calibration did: 2^64 - 536): every ns lies after it and converts exactly as with the unwrapped value
    (by hand: 1 000 ns after system_time -536 is 1 536 ns of cycles after tsc_timestamp)."""
    wrapped = Pvclock((1 << 64) - 536, 10_000_000_000, 3_510_000_000, -1)
    piece = calib.Piece(wrapped, 0, 10**9, 10_000_000_000, 12_000_000_000, 100, 500)
    cal = calib.Calibration("local", [piece], 2_447_000)
    got, outside = cal.to_tsc([1000])
    assert int(got[0]) == pvclock.kvmclock_to_tsc(1536, Pvclock(0, 10_000_000_000, 3_510_000_000, -1)) and outside == 0


def test_a_stretch_too_short_for_a_line_of_its_own_stays_in_one_piece() -> None:
    # the suite's L2 run: a step cut off 16 pairs whose TSC middles did not advance while their ns did (the
    # TSC frozen here by hand); fitting them alone refused the whole calibration ("pairs spread over time")
    frozen = 10_000_000_000
    ns1 = [pvclock.tsc_to_kvmclock(frozen + 1000 * k, TRUE) for k in range(16)]
    stepped = Pvclock(TRUE.system_time + 3_000_000, TRUE.tsc_timestamp, TRUE.tsc_to_system_mul, TRUE.tsc_shift)
    ns2, lo2, hi2 = _pairs(stepped, np.linspace(10_100_000_000, 12_000_000_000, 1000).astype(np.int64))
    ns, lo, hi = ns1 + ns2, [frozen - 300] * 16 + lo2, [frozen + 400] * 16 + hi2
    with pytest.raises(InvalidParameter, match="spread over time"):
        calib.fit(ns1, lo[:16], hi[:16], "local")  # alone: no line
    cal = calib.fit(ns, lo, hi, "local", 2_447_000)
    # one piece whose bound covers every pair's miss (millions of cycles: the 3 ms step), not a refusal
    assert len(cal.pieces) == 1 and cal.bound_cycles > 1_000_000
    assert int(cal.errors(ns, lo, hi).max()) < cal.bound_cycles


def _cli(*args: str) -> tuple[int, dict]:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "tsalign", "calibrate", *args, "--json"], capture_output=True, text=True,
                       timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout)


def test_pairs_measured_on_a_node_are_fitted_elsewhere(tmp_path: Path) -> None:
    # a pairs file as `tsalign calibrate --pairs-out` writes it on a node without numpy (measure: tests/integration/
    # test_calibrate_real.py), pairs made by hand here: 700-cycle brackets around a known clock
    tscs = np.linspace(10_000_000_000, 10_000_000_000 + 2 * 2_447_000_000, 2000).astype(np.int64)
    ns, lo, hi = _pairs(TRUE, tscs)
    from tsalign.capture.calibrate import save_pairs

    pairs = tmp_path / "pairs.json"
    save_pairs(str(pairs), {"ns": {"local": ns, "perf": ns}, "lo": lo, "hi": hi, "hits": 2000, "cpu": 0,
                            "bracket_order": "created order"},
               {"tsc_khz": 2_447_000, "boot_id": "b-1", "sched_clock": "kvm-clock"}, 2.0)
    code, doc = _cli("--from-pairs", str(pairs), "-o", str(tmp_path / "cal.json"))
    assert code == 0 and doc["clocks"]["local"]["bound_cycles"] == 701, doc  # the bracket width + 1, by hand
    cal = calib.load(str(tmp_path / "cal.json"))["local"]
    assert cal.boot_id == "b-1" and cal.tsc_khz == 2_447_000 and int(cal.errors(ns, lo, hi).max()) == 0
    # a hostile or damaged pairs file is named, never fitted
    good = json.loads(pairs.read_text())
    for edit in ({"format": "x"}, {"lo": lo[:-1]}, {"ns": {"local": ns}}, {"hi": [-1] + hi[1:]},
                 {"hi": [lo[0] - 1] + hi[1:]}, {"lo": lo[:5], "hi": hi[:5], "ns": {"local": ns[:5], "perf": ns[:5]}},
                 {"tsc_khz": "fast"}, {"measured": []}, {"lo": [1.5] + lo[1:]}):
        (tmp_path / "bad.json").write_text(json.dumps({**good, **edit}))
        code, doc = _cli("--from-pairs", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x.json"))
        assert code != 0 and "--from-pairs" in doc["error"] and not (tmp_path / "x.json").exists(), (edit, doc)
    code, doc = _cli("--from-pairs", str(pairs), "--pairs-out", str(tmp_path / "y.json"))
    assert code != 0 and "-o FILE" in doc["error"], doc
    code, doc = _cli("--from-pairs", str(pairs), "-o", str(tmp_path / "z.json"), "--check")
    assert code != 0 and "--check" in doc["error"] and not (tmp_path / "z.json").exists(), doc


def test_perf_of_a_node_without_a_stable_sched_clock_is_noted_and_the_note_reaches_align() -> None:
    """perf's clock on a node whose sched_clock was never marked stable lags after a CPU was away (the nested lab's
    L2): the calibration of ``perf`` says so, that of ``local`` (sched_clock itself) does not, nor does a stable
    node's; align repeats the note where it converts with that calibration."""
    from tsalign.align.guestclock import _calibrated_events
    from tsalign.traces.events import Events
    from tsalign.traces.ftrace_text import Record

    tscs = np.linspace(10_000_000_000, 10_000_000_000 + 2_447_000_000, 1000).astype(np.int64)
    ns, lo, hi = _pairs(TRUE, tscs)
    perf = calib.fit(ns, lo, hi, "perf", 2_447_000, sched_clock_stable=False)
    assert perf.notes == [calib.UNSTABLE_PERF_NOTE]
    assert calib.fit(ns, lo, hi, "local", 2_447_000, sched_clock_stable=False).notes == []
    assert calib.fit(ns, lo, hi, "perf", 2_447_000, sched_clock_stable=True).notes == []
    assert calib.fit(ns, lo, hi, "perf", 2_447_000).notes == []
    got = _calibrated_events(Events.from_records([Record(int(ns[500]), 0, 1, "x", "sched_switch", "")]), {"perf": perf},
                             "perf", 1, "g.txt")
    assert got.notes[1] == f"guest perf calibration: {calib.UNSTABLE_PERF_NOTE}"
    assert abs(int(got.events.ts[0]) - int(tscs[500])) <= perf.bound_cycles
