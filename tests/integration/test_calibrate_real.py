"""`tsalign calibrate` on this machine, itself a kvm-clock guest (sched_clock is kvm-clock's; perf's user
page has cap_user_time_zero=0, so perf cannot turn its own time into TSC):

- the map it measures predicts the TSC from the `local` and `perf` clocks, judged on fresh pairs
  recorded afterwards (``--check``), within the bound it states;
- a `perf record` of this machine is converted to TSC with it (`tsalign convert --from guest-perf`) and
  checked against an x86-tsc tracefs instance that recorded the same tracepoint hits (an independent
  clock read of each hit);
- a calibration file edited by hand is refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import need

WORK = "import os, sys, time\nsys.stdin.readline()\nfor _ in range(400):\n    os.getppid()\n    time.sleep(0.002)\n"


def _tsalign(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tsalign", *args], capture_output=True, text=True, timeout=600,
                       input=stdin)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _need_tracefs() -> None:
    need(os.geteuid() == 0 and os.path.exists("/sys/kernel/tracing/instances"), "needs root and tracefs")
    need(os.path.isdir("/sys/kernel/tracing/events/raw_syscalls/sys_enter"), "needs raw_syscalls:sys_enter")


def test_calibrate_predicts_tsc_on_fresh_pairs(tmp_path: Path) -> None:
    _need_tracefs()
    out = tmp_path / "cal.json"
    r = _tsalign("calibrate", "-o", str(out), "--pairs", "20000", "--seconds", "2", "--check", "--json")
    doc = json.loads(r.stdout)
    print(json.dumps(doc, indent=1))
    assert r.returncode == 0, doc
    for clock in ("local", "perf"):
        c, chk = doc["clocks"][clock], doc["check"][clock]
        assert c["bound_ns"] is not None and c["bound_ns"] < 1000, c  # the goal: 1 us or better
        assert chk["verdict"] == "pass" and chk["beyond_bound"] == 0 and chk["fresh_pairs"] > 15000, chk
    saved = json.loads(out.read_text())
    assert set(saved["clocks"]) == {"local", "perf"} and saved["measured"]["hits"] == 20000
    # nothing left behind: no tsalign instance
    assert not [d for d in os.listdir("/sys/kernel/tracing/instances") if d.startswith("tsalign-")]
    # the same map judged again later passes; moved by 5 us it fails, naming the clock
    r = _tsalign("calibrate", "--verify", str(out), "--pairs", "5000", "--seconds", "0.5", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["check"]["local"]["verdict"] == "pass", r.stdout
    moved = json.loads(out.read_text())
    moved["clocks"]["local"]["pieces"][0]["system_time"] += 5000
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    r = _tsalign("calibrate", "--verify", str(tmp_path / "moved.json"), "--pairs", "5000", "--seconds", "0.5", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["check"]["local"]["verdict"] == "fail" and doc["check"]["perf"]["verdict"] == "pass"
    assert doc["check"]["local"]["max_error_ns"] > 4000, doc["check"]
    # an edited calibration is refused with the file named
    saved["clocks"]["local"]["pieces"][0]["tsc_to_system_mul"] = 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(saved))
    r = _tsalign("convert", "--from", "guest-sched", "--to", "guest-tsc", "--calibration", str(bad), "1")
    assert r.returncode == 3 and "bad.json" in r.stderr


def test_perf_time_converted_with_the_calibration_matches_x86_tsc(tmp_path: Path) -> None:
    _need_tracefs()
    need(shutil.which("perf"), "needs perf (make test installs linux-perf when root)")
    from tsalign.capture.tracefs import TraceSession

    cal = tmp_path / "cal.json"
    r = _tsalign("calibrate", "-o", str(cal), "--pairs", "20000", "--seconds", "1", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    bound = json.loads(r.stdout)["clocks"]["perf"]["bound_cycles"]
    child = subprocess.Popen([sys.executable, "-c", WORK], stdin=subprocess.PIPE, text=True)
    data = tmp_path / "perf.data"
    try:
        with TraceSession(["raw_syscalls:sys_enter"]) as s:
            with open(os.path.join(s.path, "events", "raw_syscalls", "sys_enter", "filter"), "w") as f:
                f.write(f"common_pid == {child.pid} && id == 110")
            s.start()
            perf = subprocess.Popen(["perf", "record", "-q", "-e", "raw_syscalls:sys_enter", "--filter", "id == 110",
                                     "-p", str(child.pid), "-o", str(data)], stderr=subprocess.PIPE)
            time.sleep(1.5)  # perf attached (it prints nothing when it is)
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
            child.wait(timeout=120)
            perf.wait(timeout=60)
            s.stop()
            tsc = [int(m[1]) for m in re.finditer(r" (\d+): sys_enter:", Path(s.path, "trace").read_text())]
    finally:
        child.kill()
    script = subprocess.run(["perf", "script", "--ns", "-F", "time", "-i", str(data)], capture_output=True, text=True,
                            check=True).stdout
    perf_ns = [int(a) * 1_000_000_000 + int(b) for a, b in re.findall(r"(\d+)\.(\d{9}):", script)]
    assert len(tsc) == len(perf_ns) == 400, (len(tsc), len(perf_ns))
    khz = json.loads(cal.read_text())["clocks"]["perf"]["tsc_khz"]
    us = khz // 1000  # cycles per microsecond

    def perf_minus_ftrace(calibration: Path) -> list[int]:
        r = _tsalign("convert", "--from", "guest-perf", "--to", "guest-tsc", "--calibration", str(calibration), "--json",
                     stdin="\n".join(map(str, perf_ns)))
        assert r.returncode == 0, r.stderr
        return sorted(v["out"] - t for v, t in zip(json.loads(r.stdout)["values"], tsc))

    d = perf_minus_ftrace(cal)
    print(f"perf -> TSC minus x86-tsc of the same hit, cycles: min {d[0]} median {d[200]} p99 {d[396]} max {d[-1]}; "
          f"bound {bound}, {khz} kHz")
    # ftrace's probe of the tracepoint runs before perf's, so perf reads its clock later: never earlier than
    # the bound allows, the quickest hits within 5 us, and most within 20 us (perf's sample path; idle, the
    # quickest come within 2 us; with two TCG VMs of the suite on both cores, 3.2 us was seen)
    quick = 5 * us
    assert d[0] >= -bound and d[0] <= bound + quick and d[200] <= 20 * us, (d[:5], d[200], d[-5:])
    # a calibration 10 us off (twice the allowance): caught
    moved = json.loads(cal.read_text())
    moved["clocks"]["perf"]["pieces"][0]["system_time"] += 10_000
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    wrong = perf_minus_ftrace(tmp_path / "moved.json")
    assert not (wrong[0] >= -bound and wrong[0] <= bound + quick), (wrong[0], wrong[-1])
