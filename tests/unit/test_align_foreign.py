"""Align anything: traces that are not tsalign bundles, on both sides, with what they lack given by
options. The data is the shipped real micro-VM capture (examples/selftest), rewritten as the plain
ftrace text a user's own tracefs ``trace`` file holds (host: both CPUs' lines merged by time; guest:
one line per event). Its numbers are checked against the bundle route and by hand: the beacon
interval from the raw lines (tests/unit/test_verify.py) and the offset the trace's own
kvm_write_tsc_offset carries (-10^12 requested, never applied by the recording host)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.unit.test_verify import SHIPPED, _beacon_interval_by_hand, _tsalign
from tsalign import exitcodes

_TS = re.compile(r"\]\s+\S+\s+(\d+):")


def host_text(d: Path, drop: str | None = None, edit: tuple[str, str] | None = None) -> Path:
    """The shipped host capture as one tracefs-style text file (lines of both CPUs in time order)."""
    lines = []
    for f in sorted((SHIPPED / "host").glob("cpu*.txt")):
        for line in f.open():
            if line.strip() and not line.startswith("#") and not (drop and drop in line):
                m = _TS.search(line)
                assert m, line
                lines.append((int(m[1]), edit[1].join(line.split(edit[0])) if edit else line))
    lines.sort(key=lambda t: t[0])
    out = d / "host.txt"
    out.write_text("# tracer: nop\n#\n" + "".join(line for _, line in lines))
    return out


def guest_text(d: Path) -> Path:
    rows = sorted((json.loads(line) for line in (SHIPPED / "guest" / "events.jsonl").open()), key=lambda r: r["ts"])
    out = d / "guest.txt"
    out.write_text("".join(f"{r['comm']:>16}-{r['pid']:<7} [{r['cpu']:03d}] {r['ts']}: {r['event']}: {r['payload']}\n"
                           for r in rows))
    return out


def _align(*args: str) -> tuple[int, dict]:
    r = _tsalign("align", *args, "--json")
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def test_foreign_text_pair_equals_the_bundle_route(tmp_path: Path) -> None:
    h, g = host_text(tmp_path), guest_text(tmp_path)
    code, bundle = _align("--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o", str(tmp_path / "b"))
    assert code == 0
    khz = str(json.loads((SHIPPED / "host" / "manifest.json").read_text())["node"]["tsc_khz"])
    code, v = _align("--host", str(h), "--guest", str(g), "--tsc-offset", "0", "--tsc-khz", khz, "-o", str(tmp_path / "f"))
    assert code == 0 and v["verdict"] == "pass", v["reasons"]
    d, db = v["evidence"]["per_vcpu"][0], bundle["evidence"]["per_vcpu"][0]
    assert d["offset_interval"] == db["offset_interval"] and d["width_ns"] == db["width_ns"]
    assert d["evidence"]["pio_beacon"]["delta_interval"] == list(_beacon_interval_by_hand())
    assert set(v["evidence"]["kinds_found"]) == set(bundle["evidence"]["kinds_found"])
    assert "vCPU threads inferred from kvm_write_tsc_offset: vcpu0=tid 7948" in v["notes"]
    rows = (tmp_path / "f" / "timeline.jsonl").read_text().count("\n")
    assert rows == (tmp_path / "b" / "timeline.jsonl").read_text().count("\n") == 2352 + 1126
    # a bundle on one side and a foreign trace on the other
    code, mixed = _align("--host", str(SHIPPED / "host"), "--guest", str(g), "-o", str(tmp_path / "m"))
    assert code == 0 and mixed["evidence"]["per_vcpu"][0]["offset_interval"] == db["offset_interval"]


def test_foreign_host_with_its_own_offset_write_fails_where_it_was_not_applied(tmp_path: Path) -> None:
    """The trace's kvm_write_tsc_offset says next=2^64-10^12 (the selftest's request); the recording
    host ran the guest at offset 0: the evidence says so, 10^12 + lo cycles from what it allows."""
    lo, _ = _beacon_interval_by_hand()
    code, v = _align("--host", str(host_text(tmp_path)), "--guest", str(guest_text(tmp_path)), "-o", str(tmp_path / "o"))
    assert code == exitcodes.VERDICT_FAIL and v["verdict"] == "fail"
    d = v["evidence"]["per_vcpu"][0]
    assert d["offset_in_use"]["sources"] == ["kvm_write_tsc_offset", "kvm_write_tsc_offset.prev"]
    assert -(10**12) in d["offset_in_use"]["values"]
    full_lo = _align("--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"),
                     "-o", str(tmp_path / "b"))[1]["evidence"]["per_vcpu"][0]["offset_interval"][0]
    assert lo <= full_lo
    assert v["reasons"][0].startswith("vcpu0: ") and f"it is at least {10**12 + full_lo} cycles too low" in v["reasons"][0]


def test_what_a_foreign_trace_lacks_is_asked_for(tmp_path: Path) -> None:
    g = guest_text(tmp_path)
    # no event names the vCPU threads: --vcpu-tid
    h = host_text(tmp_path, drop="kvm_write_tsc_offset")
    r = _tsalign("align", "--host", str(h), "--guest", str(g), "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INVALID_INPUT and "--vcpu-tid" in r.stderr and "CPU N/KVM" in r.stderr
    # threads given, no offset in the trace: --tsc-offset
    r = _tsalign("align", "--host", str(h), "--guest", str(g), "--vcpu-tid", "0=7948", "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INVALID_INPUT and "--tsc-offset" in r.stderr and "tsc-offset" in r.stderr
    code, v = _align("--host", str(h), "--guest", str(g), "--vcpu-tid", "0=7948", "--tsc-offset", "0",
                     "-o", str(tmp_path / "a"))
    assert code == 0 and "vCPU threads given (--vcpu-tid): vcpu0=tid 7948" in v["notes"]
    # a clock that is not the TSC
    r = _tsalign("align", "--host", str(h), "--guest", str(g), "--host-clock", "local", "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INVALID_INPUT and "timestamps in TSC cycles" in r.stderr and "-C x86-tsc" in r.stderr
    # two threads that ran vCPU 0 (two VMs traced at once)
    two = host_text(tmp_path, edit=("CPU 0/KVM-7948", "CPU 0/KVM-7949"))
    lines = two.read_text().splitlines(keepends=True)
    first = next(i for i, x in enumerate(lines) if "kvm_write_tsc_offset" in x)
    lines.insert(first, lines[first].replace("7949", "7948"))
    two.write_text("".join(lines))
    r = _tsalign("align", "--host", str(two), "--guest", str(g), "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INVALID_INPUT and "several threads ran one vCPU id" in r.stderr
    # options that a bundle does not take
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(g), "--vcpu-tid", "0=1", "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INVALID_INPUT and "--vcpu-tid" in r.stderr
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(g), "--host-clock", "x86-tsc",
                 "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INVALID_INPUT and "--host-clock" in r.stderr
    for bad in ("0=0", "x=5", "0=1", "5"):
        r = _tsalign("align", "--host", str(h), "--guest", str(g), "--vcpu-tid", bad, "--vcpu-tid", "0=3",
                     "-o", str(tmp_path / "a"))
        assert r.returncode == exitcodes.INVALID_INPUT and "--vcpu-tid" in r.stderr, (bad, r.stderr)


@pytest.mark.parametrize("kind", ["irq", "vcpu"])
def test_analyze_takes_foreign_traces(tmp_path: Path, kind: str) -> None:
    h, g = host_text(tmp_path), guest_text(tmp_path)
    r = _tsalign("analyze", kind, "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"),
                 "-o", str(tmp_path / "b"), "--json")
    want = json.loads(r.stdout)
    khz = str(json.loads((SHIPPED / "host" / "manifest.json").read_text())["node"]["tsc_khz"])
    r = _tsalign("analyze", kind, "--host", str(h), "--guest", str(g), "--tsc-offset", "0", "--tsc-khz", khz,
                 "-o", str(tmp_path / "f"), "--json")
    got = json.loads(r.stdout)
    assert got["alignment"]["verdict"] == want["alignment"]["verdict"] == "pass", got["alignment"]["reasons"]
    assert got["summary"] == want["summary"] and got["status"] == want["status"]
    assert got["alignment"]["guest_offset"]["source"] == "user (--tsc-offset)"
    if kind == "irq":
        assert got["summary"]["matched"] == 20


def test_guest_in_ns_aligned_through_a_calibration(tmp_path: Path) -> None:
    """The shipped guest rewritten in the ns of a kvm-clock-like `local` clock (a pvclock record by hand),
    with a calibration fitted on pairs of that clock (brackets of +-300 cycles): aligned with
    --guest-calibration it passes with an evidence interval that contains the TSC route's and is at most
    the calibration's bound wider on each side; a calibration 1 ms off fails."""
    import numpy as np

    from tsalign.clock import calib, pvclock
    from tsalign.clock.pvclock import Pvclock

    rows = sorted((json.loads(line) for line in (SHIPPED / "guest" / "events.jsonl").open()), key=lambda r: r["ts"])
    first, last = rows[0]["ts"], rows[-1]["ts"]
    pv = Pvclock(7_000_000_000_000, first - 10**9, 3_512_649_356, -1)
    g = tmp_path / "guest-local.txt"
    g.write_text("".join(f"{r['comm']:>16}-{r['pid']:<7} [{r['cpu']:03d}] "
                         f"{divmod(pvclock.tsc_to_kvmclock(r['ts'], pv), 10**9)[0]}."
                         f"{divmod(pvclock.tsc_to_kvmclock(r['ts'], pv), 10**9)[1]:09d}: {r['event']}: {r['payload']}\n"
                         for r in rows))
    tscs = np.linspace(first - 10**8, last + 10**8, 2000).astype(np.int64)
    cal = calib.fit([pvclock.tsc_to_kvmclock(int(t), pv) for t in tscs], [int(t) - 300 for t in tscs],
                    [int(t) + 300 for t in tscs], "local", 2_445_428)
    calib.save(str(tmp_path / "cal.json"), [cal])
    h = host_text(tmp_path)
    code, ref = _align("--host", str(h), "--guest", str(guest_text(tmp_path)), "--tsc-offset", "0", "-o", str(tmp_path / "r"))
    assert code == 0
    code, v = _align("--host", str(h), "--guest", str(g), "--guest-clock", "local", "--guest-calibration",
                     str(tmp_path / "cal.json"), "--tsc-offset", "0", "-o", str(tmp_path / "c"))
    assert code == 0 and v["verdict"] == "pass", v["reasons"]
    (lo, hi), (rlo, rhi) = v["evidence"]["per_vcpu"][0]["offset_interval"], ref["evidence"]["per_vcpu"][0]["offset_interval"]
    assert lo <= rlo and rhi <= hi and rlo - lo <= 2 * cal.bound_cycles and hi - rhi <= 2 * cal.bound_cycles
    assert any("calibration measured in the guest" in n for n in v["notes"])
    assert v["guest_conversion"] == {"below_cycles": cal.bound_cycles, "above_cycles": cal.bound_cycles}
    # the same trace printed in microseconds (as tracefs prints `local`): each stamp stands for up to 999 ns more,
    # which the bound below takes in (999 ns of cycles at 2.445 GHz, by hand: 2442 or 2443)
    us = tmp_path / "guest-local-us.txt"
    us.write_text(re.sub(r"\] (\d+)\.(\d{6})\d{3}:", r"] \1.\2:", g.read_text()))
    code, u = _align("--host", str(h), "--guest", str(us), "--guest-clock", "local", "--guest-calibration",
                     str(tmp_path / "cal.json"), "--tsc-offset", "0", "-o", str(tmp_path / "u"))
    assert code == 0 and u["verdict"] == "pass", u["reasons"]
    assert u["guest_conversion"]["above_cycles"] == cal.bound_cycles
    assert 2440 <= u["guest_conversion"]["below_cycles"] - cal.bound_cycles <= 2445, u["guest_conversion"]
    moved = json.loads((tmp_path / "cal.json").read_text())
    moved["clocks"]["local"]["pieces"][0]["system_time"] += 1_000_000
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    code, v = _align("--host", str(h), "--guest", str(g), "--guest-clock", "local", "--guest-calibration",
                     str(tmp_path / "moved.json"), "--tsc-offset", "0", "-o", str(tmp_path / "m"))
    assert (code, v["verdict"]) == (1, "fail"), v["reasons"]
    # a calibration for a trace already on the TSC is refused
    r = _tsalign("align", "--host", str(h), "--guest", str(guest_text(tmp_path)), "--guest-calibration",
                 str(tmp_path / "cal.json"), "--tsc-offset", "0", "-o", str(tmp_path / "x"))
    assert r.returncode == 3 and "a guest trace in ns" in r.stderr
    # nor for a bundle on the TSC (its manifest says so)
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "--guest-calibration",
                 str(tmp_path / "cal.json"), "-o", str(tmp_path / "y"))
    assert r.returncode == 3 and "a guest bundle in ns of the local or perf clock" in r.stderr and "guest_tsc" in r.stderr


def test_both_sides_read_at_once_the_guest_error_first(tmp_path: Path) -> None:
    """The two sides are read at once (the guest in a thread); where both are wrong the guest's error is reported,
    as when they were read one after the other — for a missing file, and for a file that is no trace while the
    host's file is missing; a wrong host beside a good guest names the host."""
    bad_clock = tmp_path / "local.txt"
    bad_clock.write_text("# tracer: nop\n            bash-1     [000] .....   100.000001: sched_switch: x=1\n")
    g = guest_text(tmp_path)
    for guest, host in ((tmp_path / "nope-guest", tmp_path / "nope-host"), (bad_clock, tmp_path / "nope-host")):
        r = _tsalign("align", "--host", str(host), "--guest", str(guest), "-o", str(tmp_path / "a"))
        assert r.returncode == exitcodes.INVALID_INPUT and str(guest) in r.stderr and str(host) not in r.stderr, r.stderr
    r = _tsalign("align", "--host", str(tmp_path / "nope-host"), "--guest", str(g), "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INVALID_INPUT and str(tmp_path / "nope-host") in r.stderr, r.stderr
    assert not (tmp_path / "a").exists()
