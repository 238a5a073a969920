"""The shipped real .dat host + text guest (examples/foreign, see its README) aligned without root:
payloads printed from the .dat equal ``trace-cmd report -N -t``'s (the print fmt, no plugins), and the beacon interval equals the one
computed by hand from ``trace-cmd report`` lines and the guest text."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import need
from tests.unit.test_verify import _tsalign
from tsalign import exitcodes

EX = Path(__file__).resolve().parents[2] / "examples" / "foreign"
DEBUGFS_OFFSET = 0  # read during the recording (examples/foreign/README.md)


@pytest.fixture(scope="module")
def report() -> str:
    need(shutil.which("trace-cmd") is not None, "needs trace-cmd (make deps installs it)")
    return subprocess.run(["trace-cmd", "report", "-N", "-t", str(EX / "host.dat")], capture_output=True, text=True,
                          timeout=120, check=True).stdout


def _by_hand(report: str) -> tuple[int, int]:
    """Beacon brackets, by plain reading: guest beacon i (port 0x10 exit carries its low 32 bits) was
    sent before its host exit; beacon i+1 after the exit on port 0x11 that follows it."""
    raw = re.findall(r"\[\d{3}\]\s+(\d+)\.(\d+):\s+kvm_pio:\s+pio_write at 0x(1[01]) size 4 count 1 val 0x([0-9a-f]+)", report)
    # x86-tsc labelled 'local': trace-cmd prints the cycle count as secs.nsecs digits
    pio = sorted((int(s + f.ljust(9, "0")[:9]), int(p, 16), int(v, 16)) for s, f, p, v in raw)
    beacons = sorted(int(m[1]) for m in re.finditer(r" (\d+): tsalign_beacon: ", (EX / "guest.txt").read_text()))
    lows = [(t, v) for t, p, v in pio if p == 0x10]
    highs = [t for t, p, _ in pio if p == 0x11]
    assert [v for _, v in lows] == [b & 0xFFFFFFFF for b in beacons]
    lo = max(b - t for b, (t, _) in zip(beacons, lows))
    hi = min(beacons[i + 1] - next(h for h in highs if h > lows[i][0]) for i in range(len(beacons) - 1))
    return lo, hi


def test_printed_payloads_equal_trace_cmd_report(report: str) -> None:
    from tsalign.align.sides import _read

    ev, info, _ = _read(str(EX / "host.dat"), None, None, False)
    recs = list(ev.records())
    theirs = Counter((m[1], m[2].rstrip()) for m in re.finditer(r"\]\s+\d+\.\d+:\s+(\w+):\s+(.*)$", report, re.MULTILINE))
    assert len(recs) == 2199 and info.clock == "x86-tsc"
    assert Counter((r.event, r.payload) for r in recs) == theirs


def test_shipped_dat_aligns_and_its_own_offset_is_caught(report: str, tmp_path: Path) -> None:
    lo, hi = _by_hand(report)
    args = ["--host", str(EX / "host.dat"), "--guest", str(EX / "guest.txt"), "--tsc-khz", "2445428", "--json"]
    r = _tsalign("align", *args, "--tsc-offset", f"0={DEBUGFS_OFFSET}", "-o", str(tmp_path / "a"))
    v = json.loads(r.stdout)
    assert r.returncode == 0 and v["verdict"] == "pass", v["reasons"]
    d = v["evidence"]["per_vcpu"][0]
    assert d["evidence"]["pio_beacon"]["delta_interval"] == [lo, hi]
    olo, ohi = d["offset_interval"]
    assert lo <= olo <= DEBUGFS_OFFSET <= ohi <= hi
    # the trace's own kvm_write_tsc_offset (never applied by the recording host): fail, by how much
    written = int(re.search(r"kvm_write_tsc_offset:\s+vcpu=0 prev=0 next=(\d+)", report)[1]) - 2**64
    r = _tsalign("align", *args, "-o", str(tmp_path / "own"))
    w = json.loads(r.stdout)
    assert r.returncode == exitcodes.VERDICT_FAIL
    assert w["reasons"][0].startswith("vcpu0: ") and f"it is at least {olo - written} cycles" in w["reasons"][0], w["reasons"]


def test_trace_cmd_report_text_of_it_aligns_the_same(report: str, tmp_path: Path) -> None:
    """``trace-cmd report -N -t`` of the .dat (event names padded, the x86-tsc clock labelled local:
    --host-clock says which) gives the interval the .dat gives."""
    txt = tmp_path / "report.txt"
    txt.write_text(report)
    args = ["--guest", str(EX / "guest.txt"), "--tsc-offset", "0=0", "--json"]
    r = _tsalign("align", "--host", str(txt), *args, "-o", str(tmp_path / "r"))
    assert r.returncode == exitcodes.INVALID_INPUT and "--host-clock x86-tsc" in r.stderr
    r = _tsalign("align", "--host", str(txt), "--host-clock", "x86-tsc", *args, "-o", str(tmp_path / "r"))
    via_text = json.loads(r.stdout)["evidence"]["per_vcpu"][0]["offset_interval"]
    r = _tsalign("align", "--host", str(EX / "host.dat"), *args, "-o", str(tmp_path / "d"))
    assert via_text == json.loads(r.stdout)["evidence"]["per_vcpu"][0]["offset_interval"]


@pytest.mark.parametrize("op", [b"/", b"%"])
def test_a_format_that_crashes_libtraceevent_is_named(tmp_path: Path, op: bytes) -> None:
    """Fuzzing found libtraceevent dying of SIGFPE on a corrupt print fmt (a constant division by zero):
    tsalign parses each format in a forked child first and names the one that crashes."""
    need(shutil.which("trace-cmd") is not None, "needs trace-cmd (make deps installs it)")
    unc = tmp_path / "unc.dat"
    subprocess.run(["trace-cmd", "convert", "--compression", "none", "-i", str(EX / "host.dat"), "-o", str(unc)],
                   check=True, capture_output=True, timeout=120)
    data = unc.read_bytes()
    old = b"REC->port, REC->size, REC->count"
    assert data.count(old) == 1
    bad = tmp_path / "bad.dat"
    bad.write_bytes(data.replace(old, b"REC->port, 1 " + op + b"0     , REC->count"))
    r = _tsalign("align", "--host", str(bad), "--guest", str(EX / "guest.txt"), "--tsc-offset", "0=0",
                 "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INVALID_INPUT
    assert "the format of kvm:kvm_pio crashed it (signal 8)" in r.stderr and str(bad) in r.stderr


def test_a_vcpu_thread_that_entered_no_guest_is_refused(report: str, tmp_path: Path) -> None:
    """--vcpu-tid naming a thread that ran no vCPU (a mistyped id) used to pass on the IRQ evidence alone, the
    vCPU's beacons silently missing: now an error naming the threads that did (read here from trace-cmd report's
    lines of the events KVM traces in a vCPU's thread, not from tsalign)."""
    vcpu_context = r"kvm_entry|kvm_exit|kvm_write_tsc_offset|kvm_pio|kvm_msr"
    ran = sorted({int(m[1]) for m in re.finditer(rf"-(\d+)\s+\[\d{{3}}\]\s+\d+\.\d+:\s+(?:{vcpu_context}):", report)})
    assert len(ran) == 1
    args = ["--host", str(EX / "host.dat"), "--guest", str(EX / "guest.txt"), "--tsc-offset", "0=0"]
    r = _tsalign("align", *args, "--vcpu-tid", "0=1", "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INCONSISTENT, r.stderr
    assert "--vcpu-tid 0=1:" in r.stderr and f"the threads that ran a vCPU: {', '.join(map(str, ran))}" in r.stderr
    assert not (tmp_path / "a").exists()  # the output directory made for it is not left
    r = _tsalign("align", *args, "--vcpu-tid", f"0={ran[0]}", "-o", str(tmp_path / "b"), "--json")
    assert r.returncode == exitcodes.OK and json.loads(r.stdout)["verdict"] == "pass"
