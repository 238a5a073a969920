"""Verification that can fail: offset-error intervals by hand arithmetic, every evidence kind on
synthetic events with known truth, and the shipped capture moved or judged with wrong offsets.

The shipped capture (examples/selftest) is a real micro-VM run recorded by ``tsalign selftest``;
its interval is computed here from its beacons by hand (host kvm_pio minus guest rdtsc), never by
the code under test."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsalign import exitcodes
from tsalign.catalogue import CATALOGUE, needed_events
from tsalign.clock.kvm import TscParams
from tsalign.offsets import OffsetSnapshot, OffsetTimeline, PvclockTimeline
from tsalign.verdicts import FAIL, PASS, UNVERIFIED, WARN, exit_code, worst
from tsalign.verify import evidence
from tsalign.verify.intervals import Brackets, judge_vcpu
from tsalign.verify.judge import verdict_of

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "selftest"


def test_verdict_registry() -> None:
    assert worst(PASS, WARN) == WARN and worst(WARN, UNVERIFIED) == UNVERIFIED and worst(UNVERIFIED, FAIL) == FAIL
    assert worst() == PASS
    assert exit_code(PASS) == 0 and exit_code(FAIL) == 1 and exit_code(WARN) == 6
    assert exit_code(UNVERIFIED) == exitcodes.VERDICT_UNVERIFIED == 7


def test_intervals_by_hand() -> None:
    # delta >= -5 (guest-first), delta <= 20 (host-first), a two-sided [-3, 7]
    b = Brackets.from_rows("k", 0, [(-5, None, 100), (None, 20, 200), (-3, 7, 300)])
    ev = judge_vcpu(0, [b], 1_000_000)  # 1 GHz: 1 cycle = 1 ns
    assert (ev.lo, ev.hi, ev.checked, ev.violated, ev.worst) == (-3, 7, 3, 0, None)
    d = ev.to_dict(1_000_000, [1000])
    assert d["offset_interval"] == [997, 1007] and d["width_cycles"] == 10
    assert d["detects_error_above_cycles"] == {"raise": 7, "lower": 3}
    assert d["evidence"]["k"]["bracket_width_cycles"]["median"] == 10
    # judged against another offset: the two-sided item now allows [-17, -5]: 5 cycles too high
    bad = Brackets.from_rows("k", 0, [(-17, -5, 300), (None, 8, 400)])
    ev = judge_vcpu(0, [bad], 1_000_000)
    assert (ev.lo, ev.hi, ev.violated) == (-17, -5, 1)
    assert ev.worst == {"kind": "k", "guest_tsc": 300, "cycles": 5, "ns": 5, "offset_in_use_is_too": "high"}
    # one-sided evidence is not bounded; several kinds intersect
    one = judge_vcpu(1, [Brackets.from_rows("a", 1, [(None, 9, 1)]), Brackets.from_rows("b", 1, [(None, 4, 2)])], 0)
    assert (one.lo, one.hi, one.bounded, one.violated) == (None, 4, False, 0)
    assert one.to_dict(0, [5, 6])["offset_interval"] is None  # two offsets in use: no single absolute interval


def _columns(events: list[dict[str, Any]]) -> Any:
    """The alignment's columns of event dicts (as tsalign.align.merge builds them from a trace)."""
    from tsalign.align.columns import AlignedColumns
    from tsalign.traces.events import objects
    from tsalign.traces.table import Vocab

    def vocab_codes(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
        v = Vocab()
        return v.codes(values), objects(v.items)

    payload = np.empty(len(events), dtype=object)
    payload[:] = [str(e.get("payload", "")) for e in events]
    comm, comms = vocab_codes([str(e.get("comm", "")) for e in events])
    event, names = vocab_codes([str(e.get("event", "")) for e in events])

    return AlignedColumns(np.asarray([e["guest_tsc"] for e in events], dtype=np.uint64),
                          np.asarray([e["side"] == "host" for e in events], dtype=bool),
                          np.asarray([e.get("host_tsc", 0) for e in events], dtype=np.uint64),
                          np.asarray([e["cpu"] for e in events], dtype=np.int64),
                          np.asarray([e["pid"] for e in events], dtype=np.int64),
                          np.asarray([e.get("tgid", -1) for e in events], dtype=np.int64),
                          np.asarray([-1 if e.get("vcpu") is None else e["vcpu"] for e in events], dtype=np.int64),
                          comm, event, payload, comms, names)


def _aligned(events: list[dict[str, Any]], offset: int, vcpus: dict[int, int], window: tuple = (None, None),
             lost: int = 0, spreads: tuple[int, ...] = ()) -> Any:
    """A minimal alignment: host events converted with ``offset`` (what tsalign.align.merge produces)."""
    tl = OffsetTimeline.build([OffsetSnapshot(0, v, TscParams(offset)) for v in vcpus.values()])
    for e in events:
        if e["side"] == "host":
            e["guest_tsc"] = (e["host_tsc"] + offset) % 2**64
        e.setdefault("pid", 0)
        e.setdefault("cpu", 0)
        e.setdefault("payload", "")
    return SimpleNamespace(events=events, columns=_columns(events), timeline=tl, tsc_khz=1_000_000, host_count=0,
                           vm={"vcpus": [{"id": v, "tid": t} for t, v in vcpus.items()], "pid": 1},
                           dropped={}, notes=[], lost_events={"host": lost, "guest": 0}, host_window=window,
                           snapshots=[], writes=[], offset_choice="test", axis_vcpu=0, axis_spreads=list(spreads),
                           tid_to_vcpu=dict(vcpus), guest_count=sum(e["side"] == "guest" for e in events),
                           guest_rounding=0, guest_above=0, cross_check=None, pvclock=PvclockTimeline())


def _switch(ts: int, prev: int, nxt: int) -> dict[str, Any]:
    return {"side": "host", "host_tsc": ts, "event": "sched_switch", "pid": prev,
            "payload": f"prev_comm=a prev_pid={prev} prev_prio=120 prev_state=R ==> next_comm=b next_pid={nxt} next_prio=120"}


def _run_case(offset_in_use: int) -> dict[str, Any]:
    # true offset 1000. vCPU thread 77 runs [100, 200] and [300, 400] host TSC (window 50..500):
    # guest events at true host times 150 and 310 -> guest TSC 1150 and 1310.
    host = [_switch(100, 5, 77), _switch(200, 77, 5), _switch(300, 5, 77), _switch(400, 77, 5)]
    guest = [{"side": "guest", "guest_tsc": g, "event": "x", "cpu": 0} for g in (1150, 1310)]
    return verdict_of(_aligned(host + guest, offset_in_use, {77: 0}, window=(50, 500)))


def test_vcpu_run_evidence_by_hand() -> None:
    v = _run_case(1000)
    assert v["verdict"] == PASS, v["reasons"]
    d = v["evidence"]["per_vcpu"][0]
    # event 1150 in run [1100, 1200]: delta in [1150-1200, 1150-1100] = [-50, 50];
    # event 1310 in run [1300, 1400]: [-90, 10]  -> intersection [-50, 10]
    assert d["delta_interval"] == [-50, 10] and d["offset_interval"] == [950, 1010]
    assert v["evidence"]["kinds_found"] == ["vcpu_run"]
    # the same capture judged with an offset 11 cycles too high: event 1310 falls in the gap before
    # [1311, 1411] -> fail, 1 cycle from the run's start
    v = _run_case(1011)
    assert v["verdict"] == FAIL
    assert v["evidence"]["per_vcpu"][0]["worst_violation"]["cycles"] == 1
    assert "vcpu0: 1 of 2 evidence items contradict" in v["reasons"][0] and "vcpu_run" in v["reasons"][0]
    assert _run_case(949)["verdict"] == FAIL and _run_case(950)["verdict"] == PASS and _run_case(1010)["verdict"] == PASS


def test_vcpu_run_needs_lossless_host() -> None:
    host = [_switch(100, 5, 77), _switch(200, 77, 5)]
    guest = [{"side": "guest", "guest_tsc": 1150, "event": "x", "cpu": 0}]
    v = verdict_of(_aligned(host + guest, 1000, {77: 0}, window=(50, 500), lost=3))
    assert v["verdict"] == UNVERIFIED and "capture --role host" in " ".join(v["reasons"])
    assert any("lost events" in n for n in v["evidence"]["notes"])


@pytest.mark.parametrize("block", [None, 1])
def test_msr_writes_by_content_and_direction(monkeypatch: pytest.MonkeyPatch, block: int | None) -> None:
    if block:  # every payload parsed, every beacon bracketed, in blocks of one row
        monkeypatch.setattr(evidence, "BLOCK_ROWS", block)
    # guest msr:write_msr is traced after the write: host kvm_msr (host TSC 500 -> guest 1500) before it.
    host = [{"side": "host", "host_tsc": 500, "event": "kvm_msr", "pid": 77, "payload": "msr_write 6e0 = 0xabc"},
            {"side": "host", "host_tsc": 600, "event": "kvm_msr", "pid": 77, "payload": "msr_write 80b = 0x0"},
            {"side": "host", "host_tsc": 700, "event": "kvm_msr", "pid": 77, "payload": "msr_write 80b = 0x0"}]
    guest = [{"side": "guest", "guest_tsc": 1520, "event": "write_msr", "cpu": 0, "payload": "6e0, value abc"},
             {"side": "guest", "guest_tsc": 1610, "event": "write_msr", "cpu": 0, "payload": "80b, value 0"},
             {"side": "guest", "guest_tsc": 1710, "event": "write_msr", "cpu": 0, "payload": "80b, value 0"}]
    v = verdict_of(_aligned(host + guest, 1000, {77: 0}))
    d = v["evidence"]["per_vcpu"][0]
    assert d["evidence"]["msr_write"]["checked"] == 1  # the repeated EOI writes are ambiguous: not evidence
    assert d["delta_interval"] == [None, 20] and v["verdict"] == WARN  # one-sided: bounded above only
    assert any("ambiguous" in n or "more than once" in n for n in v["evidence"]["notes"])
    v = verdict_of(_aligned(host + guest, 1021, {77: 0}))
    assert v["verdict"] == FAIL and v["evidence"]["per_vcpu"][0]["worst_violation"]["cycles"] == 1
    # a guest print of an MSR index wider than 32 bits (vCPU and MSR then sorted as two keys, not one): it pairs
    # with nothing (the host's index is 32 bits), the others as before
    wide = [{"side": "guest", "guest_tsc": 1800, "event": "write_msr", "cpu": 0, "payload": "1000006e0, value abc"}]
    v = verdict_of(_aligned(host + guest + wide, 1000, {77: 0}))
    d = v["evidence"]["per_vcpu"][0]
    assert d["evidence"]["msr_write"]["checked"] == 1 and d["delta_interval"] == [None, 20]


def test_no_evidence_is_unverified_with_capture_options() -> None:
    guest = [{"side": "guest", "guest_tsc": 10, "event": "x", "cpu": 0}]
    v = verdict_of(_aligned(guest, 0, {77: 0}))
    assert v["verdict"] == UNVERIFIED and v["brackets"]["checked"] == 0
    hint = v["evidence"]["capture_for_all_kinds"]
    assert "kvm:kvm_msr" in hint["host"] and "sched:sched_switch" in hint["host"] and "msr:write_msr" in hint["guest"]


def test_catalogue_names_tracepoints_and_directions() -> None:
    names = {k.name for k in CATALOGUE}
    assert names == {"vcpu_run", "msr_write", "pio_beacon", "port_beacon", "irq_injection"}
    assert all(k.direction in ("two-sided", "guest-before-host", "host-before-guest") for k in CATALOGUE)
    ev = needed_events()
    assert {"kvm:kvm_entry", "kvm:kvm_exit", "kvm:kvm_pio", "kvm:kvm_set_irq"} <= set(ev["host"])
    assert "any guest event" not in ev["guest"]


def _beacon_interval_by_hand() -> tuple[int, int]:
    """[max(g_i - h_lo_i), min(g_{i+1} - h_hi_i)] from the shipped files, by plain reading."""
    import re

    guest = [json.loads(line) for line in (SHIPPED / "guest" / "events.jsonl").open()]
    beacons = sorted(e["ts"] for e in guest if e["event"] == "tsalign_beacon")
    pio = []
    for f in sorted((SHIPPED / "host").glob("cpu*.txt")):
        for line in f.open():
            m = re.search(r" (\d+): kvm_pio: +pio_write at 0x(1[01]) size 4 count 1 val 0x([0-9a-f]+)", line)
            if m:
                pio.append((int(m[1]), int(m[2], 16), int(m[3], 16)))
    pio.sort()
    lo_exits = [(ts, v) for ts, port, v in pio if port == 0x10]
    hi_exits = [ts for ts, port, _ in pio if port == 0x11]
    lo = max(g - ts for g, (ts, v) in zip(beacons, lo_exits) if v == g & 0xFFFFFFFF)
    hi = min(g_next - h for g_next, h in zip(beacons[1:], hi_exits))
    return lo, hi


def _pairs_by_definition(guest: list[tuple[int, int, int]], host: list[tuple[int, int, int]]) -> tuple[list[int], list[bool]]:
    """For each guest (vCPU, MSR, value): the index of the host write with the same content where each side holds it
    exactly once (else -1), and whether the host holds it at all — by counting, one write at a time."""
    from collections import Counter

    gc, hc = Counter(guest), Counter(host)
    return ([host.index(k) if gc[k] == 1 and hc[k] == 1 else -1 for k in guest], [hc[k] > 0 for k in guest])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0x6E0, 0x80B, 1 << 40]), st.integers(0, 4)), max_size=40),
       st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0x6E0, 0x80B]), st.integers(0, 4)), max_size=40))
def test_msr_pairing_is_the_count_of_each_content(guest: list[tuple[int, int, int]],
                                                   host: list[tuple[int, int, int]]) -> None:
    """The MSR writes' join (each side sorted on its own, joined in one pass) pairs exactly the contents seen once on
    each side: checked against counting them. Guest indices beyond 32 bits take the other key path."""
    def cols(rows: list[tuple[int, int, int]]) -> tuple[np.ndarray, ...]:
        a = np.asarray(rows, dtype=np.uint64).reshape(-1, 3)
        return a[:, 0].astype(np.int64), a[:, 1], a[:, 2]

    (gv, gm, gx), (hv, hm, hx) = cols(guest), cols(host)
    gk, hk = evidence._vcpu_msr_keys(gv, gm, hv, hm)
    host_of, shared = np.full(len(guest), -1, dtype=np.int64), np.zeros(len(guest), dtype=bool)
    evidence._msr_join(gk, gx, np.lexsort((gx, gk)), hk, hx, np.lexsort((hx, hk)), host_of, shared)
    want_host, want_shared = _pairs_by_definition(guest, host)
    assert host_of.tolist() == want_host and shared.tolist() == want_shared


def test_shipped_pio_interval_in_blocks_equals_hand_arithmetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The beacons' fields parsed, their brackets made and the markers looked for a few rows at a time (blocks of 7
    instead of 2^18): the interval is still the hand arithmetic's."""
    from tsalign.cli import main

    monkeypatch.setattr(evidence, "BLOCK_ROWS", 7)
    assert main(["align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o", str(tmp_path / "a"),
                 "--outputs", "none", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["evidence"]["per_vcpu"][0]
    assert d["evidence"]["pio_beacon"]["delta_interval"] == list(_beacon_interval_by_hand())
    assert d["evidence"]["pio_beacon"]["checked"] > 7 * 100  # (many blocks)


def _tsalign(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tsalign", *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _moved(tmp_path: Path, shift: int, drop: tuple[str, ...] = ()) -> Path:
    g = tmp_path / f"guest{shift}"
    shutil.copytree(SHIPPED / "guest", g)
    rows = [json.loads(line) for line in (g / "events.jsonl").open()]
    rows = [dict(r, ts=(r["ts"] + shift) % 2**64) for r in rows if r["event"] not in drop]
    (g / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return g


def test_shipped_interval_equals_hand_arithmetic(tmp_path: Path) -> None:
    lo, hi = _beacon_interval_by_hand()
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o", str(tmp_path / "a"),
                 "--json")
    assert r.returncode == 0, r.stdout
    v = json.loads(r.stdout)
    d = v["evidence"]["per_vcpu"][0]
    assert d["evidence"]["pio_beacon"]["delta_interval"] == [lo, hi]
    assert d["offset_interval"][0] >= lo and d["offset_interval"][1] <= hi  # other kinds can only narrow it
    assert d["sources"]["debugfs"]["agrees_with_evidence"] == [True]
    assert d["offset_in_use"]["sources"] == ["debugfs"]
    olo, ohi = d["offset_interval"]
    # an offset just outside the interval, each side, is caught; the edges pass
    for off, code in ((ohi, 0), (ohi + 1, 1), (olo, 0), (olo - 1, 1)):
        r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"),
                     "-o", str(tmp_path / f"o{off}"), "--tsc-offset", str(off), "--json")
        assert r.returncode == code, (off, r.stdout[-2000:])
        w = json.loads(r.stdout)
        assert w["evidence"]["per_vcpu"][0]["offset_in_use"]["sources"] == ["user (--tsc-offset)"]
        if code:
            assert w["verdict"] == "fail" and w["evidence"]["per_vcpu"][0]["worst_violation"]["cycles"] == 1
    for off in (10**6, -(10**6), 10**12, -(10**12)):
        r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"),
                     "-o", str(tmp_path / "w"), "--tsc-offset", f"0={off}", "--json")
        w = json.loads(r.stdout)
        assert r.returncode == 1 and w["verdict"] == "fail", off
        reason = w["reasons"][0]
        assert reason.startswith("vcpu0: ") and any(k in reason for k in ("pio_beacon", "msr_write", "irq_injection"))
        # the distance: how far the offset lies outside what the evidence allows
        expect = off - ohi if off > 0 else olo - off
        assert f"it is at least {expect} cycles" in reason, (off, reason)


@pytest.mark.parametrize("shift", [10**12, -(10**12), 10**7, -(10**7)])
def test_moved_shipped_capture_never_passes(tmp_path: Path, shift: int) -> None:
    """The issue's cases: the guest moved by 10^12 cycles (beacons removed) or by 10^7 (4 ms)."""
    g = _moved(tmp_path, shift, ("tsalign_beacon",) if abs(shift) == 10**12 else ())
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(g), "-o", str(tmp_path / "a"), "--json")
    v = json.loads(r.stdout)
    assert v["verdict"] == "fail" and r.returncode == exitcodes.VERDICT_FAIL, v["reasons"]
    too = v["evidence"]["per_vcpu"][0]["worst_violation"]["offset_in_use_is_too"]
    assert too == ("low" if shift > 0 else "high")
    # analyze irq on the moved capture carries the same verdict (it matched 18/20 with "pass" before)
    r = _tsalign("analyze", "irq", "--host", str(SHIPPED / "host"), "--guest", str(g), "-o", str(tmp_path / "i"),
                 "--json")
    assert r.returncode == exitcodes.VERDICT_FAIL and json.loads(r.stdout)["alignment"]["verdict"] == "fail"


def test_moved_without_any_evidence_is_unverified(tmp_path: Path) -> None:
    g = _moved(tmp_path, 10**12, ("tsalign_beacon", "tsalign_irq", "tsalign_msr"))
    (g / "events.jsonl").write_text('{"ts": 1, "cpu": 0, "pid": 0, "comm": "x", "event": "nothing", "payload": ""}\n')
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(g), "-o", str(tmp_path / "a"), "--json")
    v = json.loads(r.stdout)
    assert r.returncode == exitcodes.VERDICT_UNVERIFIED and v["verdict"] == "unverified"
    assert "tsalign capture --role host" in " ".join(v["reasons"])


def test_tsc_offset_option_errors(tmp_path: Path) -> None:
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o", str(tmp_path / "a"),
                 "--tsc-offset", "5=10")
    assert r.returncode == exitcodes.INVALID_INPUT and "vCPU ids of the VM ([0])" in r.stderr
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o", str(tmp_path / "a"),
                 "--tsc-offset", "1", "--tsc-offset", "2")
    assert r.returncode == exitcodes.INVALID_INPUT and "one value per vCPU" in r.stderr


def test_vcpu_run_gap_ends_at_switch_in_or_wakeup_never_at_a_guess() -> None:
    """Switches from idle are not traced on every kernel: without a recorded switch-in or wakeup, the
    thread's own next event does not end a gap (guest code runs before it), so no gap is assumed."""
    out = _switch(200, 77, 5)
    own = {"side": "host", "host_tsc": 350, "event": "kvm_pio", "pid": 77, "payload": "pio_write at 0x10 size 4 count 1 val 0x1"}
    guest = [{"side": "guest", "guest_tsc": 1290, "event": "x", "cpu": 0}]  # true host time 290: ran before 350
    v = verdict_of(_aligned([_switch(100, 5, 77), out, own, *guest], 1000, {77: 0}, window=(50, 500)))
    assert v["evidence"]["per_vcpu"][0]["violated"] == 0, v["reasons"]
    waking = {"side": "host", "host_tsc": 280, "event": "sched_waking", "pid": 5,
              "payload": "comm=CPU 0/KVM pid=77 prio=120 target_cpu=001"}
    v = verdict_of(_aligned([_switch(100, 5, 77), out, waking, own, *guest], 1000, {77: 0}, window=(50, 500)))
    d = v["evidence"]["per_vcpu"][0]
    assert d["violated"] == 0 and d["delta_interval"][1] == 1290 - 1280  # woken at 280: ran at or after it
    v = verdict_of(_aligned([_switch(100, 5, 77), out, waking, own, *guest], 1011, {77: 0}, window=(50, 500)))
    assert v["verdict"] == FAIL  # with an offset 11 too high the event lands before the wakeup


def test_guest_side_cli_needs_no_numpy() -> None:
    """Guests run `python3 -m tsalign capture` from the shipped package with the standard library only;
    verification (numpy) is imported by the verbs that judge, never by `capture` or `precheck`."""
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('numpy', 'numba', 'pyarrow'):\n"
        "        raise ImportError('not on a guest: ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "from tsalign.cli import build_parser\n"
        "import tsalign.capture.capture, tsalign.node.checks\n"
        "p = build_parser()\n"
        "a = p.parse_args(['capture', '--role', 'guest', '--out', '/nonexistent/x'])\n"
        "print('stdlib only')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "stdlib only" in r.stdout, r.stderr


def test_captures_that_did_not_overlap_are_not_a_pass() -> None:
    """The same good case, but the host capture's window (host TSC 50..500) is said to be 600..900:
    the guest events (true host times 150, 310) fall outside it -> warn, naming the cause."""
    host = [_switch(100, 5, 77), _switch(200, 77, 5), _switch(300, 5, 77), _switch(400, 77, 5)]
    guest = [{"side": "guest", "guest_tsc": g, "event": "x", "cpu": 0} for g in (1150, 1310)]
    v = verdict_of(_aligned(host + guest, 1000, {77: 0}, window=(600, 900)))
    assert v["verdict"] != PASS
    assert any("2 of 2 guest events lie outside the host capture" in r for r in v["reasons"]), v["reasons"]


def test_non_vcpu_events_placed_with_too_much_uncertainty_warn() -> None:
    """Host events off the vCPU threads, placed where the vCPUs' offsets differ by more than the error
    bound (60 cycles here, from the good case), make the verdict warn; within it, a note."""
    host = [_switch(100, 5, 77), _switch(200, 77, 5), _switch(300, 5, 77), _switch(400, 77, 5)]
    guest = [{"side": "guest", "guest_tsc": g, "event": "x", "cpu": 0} for g in (1150, 1310)]
    v = verdict_of(_aligned(host + guest, 1000, {77: 0}, window=(50, 500), spreads=(10, 500, 900)))
    assert v["verdict"] == WARN and "500 cycles (median; max 900)" in v["reasons"][0], v["reasons"]
    v = verdict_of(_aligned(host + guest, 1000, {77: 0}, window=(50, 500), spreads=(10, 20, 900)))
    assert v["verdict"] == PASS and any("within the evidence's error bound" in n for n in v["evidence"]["notes"])


def test_wrong_offset_distance_is_exact_where_runs_allow_several_offsets() -> None:
    """A wrong offset's distance to what all evidence allows, where the vCPU runs allow a set of
    offsets that is not one interval. True offset 5000; vCPU runs [100, 200], [220, 270], [300, 400]
    host TSC; guest events at true host times 190 and 310 allow errors [-10, 90] and [-90, 10] (run
    by run, by hand) -> [-10, 10]; a beacon pair allows [-30, 30]. Judged with offset 6000 (1000 too
    high), the offset all evidence allows nearest to it is 5010: 990 cycles away. (Stepping to the
    pair's edge, 5030, put the event at 310 in the gap (270, 300), nearer to 270, and found no offset.)"""
    from tsalign.verify.evidence import _run_brackets

    ctx = SimpleNamespace(to_guest_many=lambda v, h, at: h + np.uint64(6000))
    runs = (np.asarray([100, 220, 300], dtype=np.uint64), np.asarray([200, 270, 400], dtype=np.uint64),
            np.ones(3, dtype=bool), np.ones(3, dtype=bool))  # [100, 200], [220, 270], [300, 400]
    g = np.asarray([5190, 5310], dtype=np.uint64)
    pair = Brackets.from_rows("pio_beacon", 0, [(-1030, -970, 5190)])
    ev = judge_vcpu(0, [_run_brackets(ctx, 0, *runs, g), pair], 1_000_000)
    assert ev.violated and ev.worst["cycles"] == 990 and ev.worst["offset_in_use_is_too"] == "high"
    # what the evidence allows: [-1010, -990] and, at the pair's edge, the point -1030 (the event at 190 at the end of
    # run [220, 270]: allowed runs are closed)
    assert (ev.lo, ev.hi, ev.pieces) == (-1030, -990, 2)
    # judged with the true offset: [-10, 10] around it, nothing violated
    ctx.to_guest_many = lambda v, h, at: h + np.uint64(5000)
    ok = judge_vcpu(0, [_run_brackets(ctx, 0, *runs, g), Brackets.from_rows("pio_beacon", 0, [(-30, 30, 5190)])],
                    1_000_000)
    assert (ok.lo, ok.hi, ok.violated, ok.pieces) == (-30, 10, 0, 2)  # [-10, 10] and the point -30, as above
    # the event at 190 allows [-210, -110], [-80, -30] or [-10, 90]: a pair allowing [-105, -95] leaves
    # no offset that satisfies all; the per-item worst is reported and the interval is empty
    far = judge_vcpu(0, [_run_brackets(SimpleNamespace(to_guest_many=lambda v, h, at: h + np.uint64(6000)), 0, *runs, g),
                         Brackets.from_rows("pio_beacon", 0, [(-1105, -1095, 5190)])], 1_000_000)
    assert far.violated and far.satisfiable is False and far.worst["cycles"] == 1095
    assert ev.satisfiable is None and ok.satisfiable is None
    # a pair allowing [-80, -50] (the events in runs 2 and 1... and 2 again): satisfiable, 1050 away
    mid = judge_vcpu(0, [_run_brackets(SimpleNamespace(to_guest_many=lambda v, h, at: h + np.uint64(6000)), 0, *runs, g),
                         Brackets.from_rows("pio_beacon", 0, [(-1080, -1050, 5190)])], 1_000_000)
    assert mid.worst["cycles"] == 1050


def test_what_runs_allow_in_separate_intervals_is_reported_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the vCPU runs allow offsets in separate intervals, the verdict reports all of them, whatever the offset
    judged. The runs and events of the test above: by hand, the event at 190 allows errors [-210, -110],
    [-80, -30] or [-10, 90] around the truth, the event at 310 [-90, 10], [40, 90] or [110, 210]; both: [-80, -30],
    [-10, 10] or [40, 90]. A pair allowing [-100, 100] leaves all three. Judged 1000 too high, the nearest allowed
    offset is 910 cycles away ([-960, -910] around it), but the truth (-1000) lies in [-1010, -990]: the interval
    reported is [-1080, -910], three pieces. Judged with the truth: [-80, 90], three pieces, nothing violated."""
    from tsalign.verify.evidence import _run_brackets
    from tsalign.verify.intervals import allowed_pieces

    runs = (np.asarray([100, 220, 300], dtype=np.uint64), np.asarray([200, 270, 400], dtype=np.uint64),
            np.ones(3, dtype=bool), np.ones(3, dtype=bool))
    g = np.asarray([5190, 5310], dtype=np.uint64)

    def judged(offset: int, lo: int, hi: int) -> Any:
        ctx = SimpleNamespace(to_guest_many=lambda v, h, at: h + np.uint64(offset))
        return judge_vcpu(0, [_run_brackets(ctx, 0, *runs, g), Brackets.from_rows("pio_beacon", 0, [(lo, hi, 5190)])],
                          1_000_000)

    wrong = judged(6000, -1100, -900)
    assert wrong.violated and wrong.worst["cycles"] == 910 and wrong.worst["offset_in_use_is_too"] == "high"
    assert (wrong.lo, wrong.hi, wrong.pieces) == (-1080, -910, 3) and wrong.lo <= -1000 <= wrong.hi
    d = wrong.to_dict(1_000_000, [6000])
    assert d["offset_interval"] == [4920, 5090] and d["allowed_pieces"] == 3
    assert d["allowed_offset_intervals"] == [[4920, 4970], [4990, 5010], [5040, 5090]]
    # an offset in a gap between the pieces is not allowed though it lies in the hull; the truth is
    assert wrong.allows(5000 - 6000) and wrong.allows(-910) and not wrong.allows(5020 - 6000)
    assert not wrong.allows(-1081) and not wrong.allows(-909)
    right = judged(5000, -100, 100)
    assert (right.lo, right.hi, right.pieces, right.violated) == (-80, 90, 3, 0)
    # the pieces themselves, by hand
    runs_b = _run_brackets(SimpleNamespace(to_guest_many=lambda v, h, at: h + np.uint64(5000)), 0, *runs, g)
    starts, ends = allowed_pieces(-100, 100, [runs_b])
    assert list(zip(starts.tolist(), ends.tolist())) == [(-80, -30), (-10, 10), (40, 90)]
    assert list(zip(*map(np.ndarray.tolist, allowed_pieces(-20, 35, [runs_b])))) == [(-10, 10)]
    assert allowed_pieces(-25, -15, [runs_b])[0].size == 0
    # a pair that leaves one piece: the interval around the offset in use, as before
    one = judged(5000, -25, 30)
    assert (one.lo, one.hi, one.pieces, one.unsearched) == (-10, 10, 1, False)
    # more cuts than the search takes: the interval around the offset in use, said to be only that
    monkeypatch.setattr("tsalign.verify.evidence._MAX_CUTS", 2)
    capped = judged(5000, -100, 100)
    assert (capped.lo, capped.hi, capped.pieces, capped.unsearched) == (-10, 10, None, True)


def test_selftest_fails_a_debugfs_offset_in_a_gap_between_allowed_intervals() -> None:
    """The selftest's check that debugfs agrees with the evidence, fed the three pieces of the test above (errors
    [-80, -30], [-10, 10], [40, 90] allowed) as a verdict's, with the shipped capture's real bundle (debugfs 0):
    judged with offset 20 in use, 0 lies at error -20, in the gap between the first two pieces though inside their
    hull [-60, 110] -> fail; with offset 5, 0 lies in [-10, 10] -> pass."""
    from tsalign.traces.bundle import Bundle
    from tsalign.verify.evidence import _run_brackets
    from tsalign.verify.selftest import evaluate

    runs = (np.asarray([100, 220, 300], dtype=np.uint64), np.asarray([200, 270, 400], dtype=np.uint64),
            np.ones(3, dtype=bool), np.ones(3, dtype=bool))
    ctx = SimpleNamespace(to_guest_many=lambda v, h, at: h + np.uint64(5000))
    ev = judge_vcpu(0, [_run_brackets(ctx, 0, *runs, np.asarray([5190, 5310], dtype=np.uint64)),
                        Brackets.from_rows("pio_beacon", 0, [(-100, 100, 5190)])], 1_000_000)
    host = Bundle.open(str(SHIPPED / "host"), "--host")
    assert {s.params.offset for s in host.snapshots()} == {0}

    def selftest(offset_in_use: int) -> dict[str, Any]:
        d = ev.to_dict(1_000_000, [offset_in_use])
        return evaluate({"verdict": PASS, "reasons": [], "_details": {}, "evidence": {"per_vcpu": [d]},
                         "offsets": {"issues": []}}, 1_000_000,
                        host, None, None)

    gap = selftest(20)
    assert gap["verdict"] == FAIL and any("outside" in r for r in gap["reasons"]), gap["reasons"]
    assert gap["offsets"]["measured_interval"] == [-60, 110] and not gap["offsets"]["debugfs_equals_measured"]
    inside = selftest(5)
    assert inside["verdict"] == PASS and inside["offsets"]["debugfs_equals_measured"], inside["reasons"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 60)), min_size=1, max_size=6),
       st.lists(st.integers(0, 500), min_size=1, max_size=5), st.integers(-150, 0), st.integers(0, 150),
       st.booleans(), st.booleans())
def test_allowed_pieces_equal_every_delta_tried(runs: list[tuple[int, int]], events: list[int], lo: int, hi: int,
                                                open_first: bool, open_last: bool) -> None:
    """The offsets the vCPU runs allow, exactly: every integer delta in [lo, hi] tried by hand (each guest event at
    some run's [start, end] shifted by delta) equals the pieces — overlapping runs, one-point pieces, the first run
    open below and the last open above included."""
    from tsalign.verify.evidence import _run_brackets
    from tsalign.verify.intervals import allowed_pieces

    runs = sorted((s, s + w) for s, w in runs)
    n = len(runs)
    hs, he = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    hs[0], he[-1] = not open_first, not open_last
    host_s = np.asarray([s for s, _ in runs], dtype=np.uint64)
    host_e = np.asarray([e for _, e in runs], dtype=np.uint64)
    g = np.asarray(sorted(e + 1000 for e in events), dtype=np.uint64)  # guest events (offset 1000)
    b = _run_brackets(SimpleNamespace(to_guest_many=lambda v, h, at: h + np.uint64(1000)), 0, host_s, host_e, hs, he, g)

    def inside(x: int, k: int) -> bool:
        s, e = runs[k]
        return (not hs[k] or s + 1000 <= x) and (not he[k] or x <= e + 1000)

    allowed = [d for d in range(lo, hi + 1) if all(any(inside(int(x) - d, k) for k in range(n)) for x in g)]
    starts, ends = allowed_pieces(lo, hi, [b])
    got = [d for a, z in zip(starts.tolist(), ends.tolist()) for d in range(a, z + 1)]
    assert got == allowed
    assert all(z < a for z, a in zip(ends[:-1].tolist(), starts[1:].tolist()))  # disjoint, in order


def test_guest_rounding_widens_upper_bounds_only() -> None:
    """Guest TSCs converted from kvm-clock ns lie up to the rounding below the truth: a host-first
    bound (upper) 2 cycles short is no violation with 4 cycles of rounding; a guest-first one still is."""
    b = Brackets.from_rows("k", 0, [(None, -2, 100), (3, None, 200)])
    assert judge_vcpu(0, [b], 1_000_000).violated == 2
    w = b.widened(4)
    ev = judge_vcpu(0, [w], 1_000_000)
    assert ev.violated == 1 and (ev.lo, ev.hi) == (3, 2) and ev.worst["offset_in_use_is_too"] == "low"


def _greedy_by_definition(want: np.ndarray, tol: int, vals: np.ndarray) -> list[int]:
    """The pairing rule as written, by brute force: each wanted value in order takes the first position after the
    last one taken whose value is it or up to ``tol`` above it (modulo 2^32)."""
    out, last = [], -1
    for w in want.tolist():
        hit = [p for p in range(last + 1, len(vals)) if (int(vals[p]) - w) % (1 << 32) <= tol]
        out.append(hit[0] if hit else -1)
        last = hit[0] if hit else last
    return out


def test_beacon_pairing_is_the_greedy_rule() -> None:
    """The pio beacons' pairing (each beacon's low half -> the first exit not yet passed that holds it, within the
    rounding), compiled and in one pass in exit order, equals the rule by brute force — on repeats, near misses, out-of-order exits, wraps past 2^32 and runs of lost exits longer
    than the pass looks ahead (then the values are sorted and searched)."""
    from tsalign.verify.evidence import _SCAN, _greedy_match

    rng = np.random.default_rng(7)
    searched = matched = 0
    for case in range(400):
        n = int(rng.integers(0, 60)) if case % 5 else int(rng.integers(100, 400))
        tol = int(rng.choice([0, 0, 3, 50]))
        want = np.sort(rng.choice(1 << 20, size=n, replace=False)).astype(np.int64) + (0xFFFFFFF0 if case % 50 == 1 else 0)
        want &= 0xFFFFFFFF
        vals = (want + rng.integers(0, tol + 1, size=n)) if case % 3 else want.copy()  # converted: up to tol below
        keep = rng.random(n) > 0.2  # some exits lost
        if case % 5 == 0 and n > _SCAN + 10:  # a run of lost exits longer than the pass looks ahead
            s = int(rng.integers(0, n - _SCAN - 5))
            keep[s:s + _SCAN + 5] = False
            searched += 1
        vals = vals[keep] & 0xFFFFFFFF
        if case % 4 == 0 and vals.size:  # repeated or swapped values
            vals = np.concatenate([vals, rng.choice(vals, size=2)]) if case % 8 == 0 else vals[::-1].copy()
        if case % 7 == 0 and vals.size:  # a later copy of every value (a wrap of the low half, seconds later)
            vals = np.concatenate([vals, vals])
        truth = _greedy_by_definition(want, tol, vals)
        assert _greedy_match(want, tol, vals.astype(np.int64)).tolist() == truth, case
        matched += sum(t >= 0 for t in truth)
    assert searched > 30 and matched > 8000, (searched, matched)


def test_hex_fields_in_whole_columns() -> None:
    """MSR and port fields are read from payload text in whole columns: every length from 1 to 16 digits, both
    cases, against Python's int(); more than 16 digits (beyond 64 bits) is not matched, so not used."""
    from tsalign.verify.evidence import _extract, _hex

    rng = np.random.default_rng(3)
    vals = [int(rng.integers(0, 1 << 63)) >> int(rng.integers(0, 63)) for _ in range(2000)] + [0, 2**64 - 1]
    texts = [f"msr_write {v:x} = 0x{v:X}" for v in vals] + ["msr_write 1" + "0" * 16 + " = 0x1", "msr_write x = 0x1"]
    payloads = np.empty(len(texts), dtype=object)
    payloads[:] = texts
    (m, x), ok = _extract(payloads, r"^msr_write (?P<m>[0-9a-fA-F]{1,16}) = 0x(?P<v>[0-9a-fA-F]{1,16})\s*$")
    assert ok.tolist() == [True] * len(vals) + [False, False]
    assert _hex(m, ok).tolist() == [*vals, 0, 0] and _hex(x, ok).tolist() == [*vals, 0, 0]


def test_vcpu_gaps_from_entries_and_exits_by_hand() -> None:
    """The gaps of a vCPU thread from its kvm_exit -> next kvm_entry (whole columns), by hand: thread 7 exits at
    100, enters at 150, exits and enters at 300 (the same TSC: the exit first, an empty gap), exits at 400;
    thread 8's events (interleaved, in time order on the host axis) are not its. Capture window 50..500: the
    trace starts inside a run (first event an exit: no gap from 50) and ends in a gap (400..500). Thread 9 starts
    with an entry at 120 after the window's start (gap 50..120) and ends with an entry (no gap to 500)."""
    from tsalign.align.columns import AlignedColumns
    from tsalign.verify.evidence import _Ctx, _gaps

    rows = [(100, 7, 1), (110, 8, 0), (120, 9, 0), (150, 7, 0), (160, 8, 1), (200, 9, 1), (300, 7, 1),
            (300, 7, 0), (350, 9, 0), (400, 7, 1)]  # (host TSC, tid, 1 exit / 0 entry)
    rows = [rows[i] for i in (0, 1, 2, 3, 4, 5, 7, 6, 8, 9)]  # the entry at 300 recorded before the exit
    n = len(rows)
    col = AlignedColumns(np.asarray([t for t, _, _ in rows], dtype=np.uint64), np.ones(n, dtype=bool),
                         np.asarray([t for t, _, _ in rows], dtype=np.uint64), np.zeros(n, dtype=np.int64),
                         np.asarray([p for _, p, _ in rows], dtype=np.int64), np.zeros(n, dtype=np.int64),
                         np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int32),
                         np.asarray([x for _, _, x in rows], dtype=np.int32), np.full(n, "", dtype=object),
                         np.asarray(["qemu"], dtype=object), np.asarray(["kvm_entry", "kvm_exit"], dtype=object))
    c = _Ctx(SimpleNamespace(columns=col, tid_to_vcpu={7: 0, 9: 1}, timeline=SimpleNamespace(vcpus=[0, 1]),
                             host_window=(50, 500)))
    src, s, e = _gaps(c, 7)
    assert src == "kvm_entry/kvm_exit" and list(zip(s.tolist(), e.tolist())) == [(100, 150), (300, 300), (400, 500)]
    src, s, e = _gaps(c, 9)
    assert list(zip(s.tolist(), e.tolist())) == [(50, 120), (200, 350)]
    c.a.host_window = (None, None)  # a foreign trace: no window, no gap at either end
    assert list(zip(*_gaps(c, 7)[1:])) == [(100, 150), (300, 300)]
    assert list(zip(*_gaps(c, 8)[1:])) == []  # thread 8 entered at 110, exited at 160: its only gap is at the end
    c.a.host_window = (50, 500)
    assert list(zip(*(x.tolist() for x in _gaps(c, 8)[1:]))) == [(50, 110), (160, 500)]


def test_an_output_that_cannot_be_written_leaves_none(tmp_path: Path) -> None:
    """A directory in the way of timeline.parquet (written in a thread beside the JSON lines and the Perfetto trace):
    a clear error naming it, exit code 4 (unavailable), and none of the outputs left — the directory itself kept,
    as is a file of the user's there. Then the same directory, cleared, takes every output."""
    out = tmp_path / "a"
    (out / "timeline.parquet").mkdir(parents=True)
    (out / "mine.txt").write_text("kept")
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o", str(out))
    assert r.returncode == exitcodes.UNAVAILABLE == 4, r.stderr
    assert "timeline.parquet" in r.stderr and "Is a directory" in r.stderr and "none of them was left" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "timeline.parquet"]
    (out / "timeline.parquet").rmdir()
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "offsets.jsonl", "timeline.jsonl", "timeline.parquet",
                                                      "trace.perfetto-trace", "verdict.json"]


def test_analysis_reports_that_cannot_be_written_leave_none(tmp_path: Path) -> None:
    """`tsalign analyze` with a directory in the way of report.html: a clear error naming it, exit 4, and no report
    left (report.json was written before it: removed); the directory and the user's own file kept."""
    out = tmp_path / "r"
    (out / "report.html").mkdir(parents=True)
    (out / "mine.txt").write_text("kept")
    r = _tsalign("analyze", "irq", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o", str(out))
    assert r.returncode == exitcodes.UNAVAILABLE == 4, r.stderr
    assert "report.html" in r.stderr and "Is a directory" in r.stderr and "none of them was left" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "report.html"]


def test_vcpu_gaps_from_sched_switch_by_hand() -> None:
    """Thread 7's gaps from its switch-outs (whole columns), by hand. Switched in at 100, out at 200, woken at 260
    (before its own event at 300): gap 200..260; in at 320, out at 400 but running again at 450 with no switch-in or
    wakeup recorded: no gap; out at 500, in at 600 (no event of its own between): gap 500..600. Window 50..700: off
    from 50 until first switched in (its first own event is later): gap 50..100."""
    from tsalign.align.columns import AlignedColumns
    from tsalign.verify.evidence import _Ctx, _gaps

    def sw(prev: int, nxt: int) -> str:
        return f"prev_comm=a prev_pid={prev} prev_prio=120 prev_state=R ==> next_comm=b next_pid={nxt} next_prio=120"

    rows = [(100, 5, "sched_switch", sw(5, 7)), (200, 7, "sched_switch", sw(7, 5)),
            (260, 5, "sched_waking", "comm=CPU 0/KVM pid=7 prio=120 target_cpu=001"), (300, 7, "kvm_pio", "x"),
            (320, 5, "sched_switch", sw(5, 7)), (400, 7, "sched_switch", sw(7, 5)), (450, 7, "kvm_pio", "x"),
            (500, 7, "sched_switch", sw(7, 5)), (600, 5, "sched_switch", sw(5, 7))]
    names = ["sched_switch", "sched_waking", "kvm_pio"]
    n = len(rows)
    t = np.asarray([r[0] for r in rows], dtype=np.uint64)
    payload = np.empty(n, dtype=object)
    payload[:] = [r[3] for r in rows]
    col = AlignedColumns(t, np.ones(n, dtype=bool), t, np.zeros(n, dtype=np.int64), np.asarray([r[1] for r in rows]),
                         np.zeros(n, dtype=np.int64), np.full(n, -1), np.zeros(n, dtype=np.int32),
                         np.asarray([names.index(r[2]) for r in rows], dtype=np.int32), payload,
                         np.asarray(["qemu"], dtype=object), np.asarray(names, dtype=object))
    c = _Ctx(SimpleNamespace(columns=col, tid_to_vcpu={7: 0}, timeline=SimpleNamespace(vcpus=[0]),
                             host_window=(50, 700)))
    src, s, e = _gaps(c, 7)
    assert src == "sched_switch" and list(zip(s.tolist(), e.tolist())) == [(50, 100), (200, 260), (500, 600)]
    c.a.host_window = (None, None)
    assert list(zip(*(x.tolist() for x in _gaps(c, 7)[1:]))) == [(200, 260), (500, 600)]
    assert _gaps(c, 9) is None  # a thread the capture does not show


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=60))
def test_distribution_of_an_array_is_that_of_the_list(values: list[int]) -> None:
    """brackets.distribution of an int64 numpy array (sorted by numpy) gives the list's statistics, as Python ints
    (nearest-rank percentiles by hand: the smallest value with at least q of the samples at or below it)."""
    import math

    from tsalign.align.brackets import distribution

    a, b = distribution(np.asarray(values, dtype=np.int64)), distribution(values)
    assert a == b
    if values:
        s = sorted(values)
        assert (a.min, a.median, a.p99, a.max) == (s[0], s[math.ceil(0.5 * len(s)) - 1],
                                                    s[max(1, math.ceil(0.99 * len(s))) - 1], s[-1])
        assert all(type(v) is int for v in (a.min, a.median, a.p99, a.max))
