"""Capture, align and selftest on this machine's real KVM and tracefs, plus fault injection."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import need
from tsalign import exitcodes

TRACEFS = "/sys/kernel/tracing"


def real() -> None:
    need(os.geteuid() == 0, "needs root (tracefs instances, /dev/kvm)")
    need(os.path.exists(f"{TRACEFS}/instances"), "needs tracefs mounted at /sys/kernel/tracing")


def global_state() -> dict:
    from tsalign.capture.tracefs import global_state as gs

    return gs(TRACEFS)


def instances() -> list:
    return sorted(os.listdir(f"{TRACEFS}/instances"))


def tsalign(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tsalign", *args], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_selftest_1000_beacons(tmp_path: Path) -> None:
    real()
    need(os.path.exists("/dev/kvm"), "needs /dev/kvm")
    before = global_state()
    r = tsalign("selftest", "--beacons", "1000", "--json", "--out", str(tmp_path / "st"))
    assert r.returncode in (exitcodes.OK, exitcodes.VERDICT_WARN), r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["verdict"] in ("pass", "warn")
    b = rep["beacons"]
    assert b["count"] >= 1000 and b["violations"] == 0
    assert 0 < b["residual_cycles"]["min"] <= b["residual_cycles"]["median"] <= b["residual_cycles"]["p99"]
    assert 300 <= b["residual_cycles"]["median"] <= 20_000  # "a few thousand cycles" of exit latency
    o = rep["offsets"]
    assert o["debugfs_equals_measured"] is True
    lo, hi = o["measured_interval"]
    assert lo <= o["debugfs"] <= hi
    # the requested offset: applied (real VMX/SVM) or not (PVM) -- either way explained, never hidden
    assert o["requested"] == -(10**12)
    if o["requested_applied"]:
        assert o["debugfs"] == o["requested"]
    else:
        assert any("NOT applied" in n for n in rep["notes"])
        assert any(i["kind"] == "write_not_applied" for i in o["issues"])
    assert rep["irq"]["count"] > 0 and rep["irq"]["latency_cycles"]["min"] > 0
    for key in ("perfetto", "timeline", "report", "verdict"):
        assert Path(rep["artifacts"][key]).exists(), key
    assert rep["timing"]["wall_s"] < 30
    # the Perfetto trace parses back with the perfetto package, with every merged event in it
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace

    trace = Trace()
    trace.ParseFromString(Path(rep["artifacts"]["perfetto"]).read_bytes())
    n_events = sum(1 for p in trace.packet if p.HasField("track_event"))
    n_lines = sum(1 for _ in open(rep["artifacts"]["timeline"]))  # noqa: SIM115
    assert n_events == n_lines > 2000
    assert instances() == [] and global_state() == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_capture_stopped_by_signal_leaves_nothing(tmp_path: Path, sig: int) -> None:
    real()
    before = global_state()
    out = tmp_path / "b"
    p = subprocess.Popen([sys.executable, "-m", "tsalign", "capture", "--out", str(out), "--role", "guest",
                          "--duration", "120", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name = f"tsalign-{p.pid}-0"
    for _ in range(200):
        if name in instances():
            break
        time.sleep(0.05)
    assert name in instances(), "capture never created its instance"
    time.sleep(0.3)
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr
    doc = json.loads(stdout)
    assert doc["manifest"]["stopped_by_signal"] == sig
    assert (out / "manifest.json").exists()
    assert instances() == [] and global_state() == before


def _wait_instance(pid: int, recording: bool = False, timeout: float = 30) -> str:
    """The name of process ``pid``'s first tracefs instance once it exists (and records, if asked)."""
    name = f"tsalign-{pid}-0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(TRACEFS, "instances", name, "tracing_on").read_text().strip() == "1" or not recording:
                return name
        except OSError:
            pass
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never created {'and started ' if recording else ''}its instance")


def _gone_within(name: str, seconds: float) -> float:
    t0 = time.monotonic()
    while name in instances():
        assert time.monotonic() - t0 < seconds, f"{name} still there {seconds} s after its owner died"
        time.sleep(0.01)
    return time.monotonic() - t0


@pytest.mark.parametrize("point", ["configuring", "recording", "writing", "selftest"])
def test_sigkill_leaves_tracefs_as_it_was(tmp_path: Path, point: str) -> None:
    """kill -9 at several points of a capture and of a selftest: within a second the instance is gone (the
    watchdog), the global tracefs state equals its state before, and a capture's --out says INCOMPLETE."""
    real()
    before = global_state()
    out = tmp_path / "k"
    argv = (["selftest", "--beacons", "200000", "--out", str(out)] if point == "selftest" else
            ["capture", "--out", str(out), "--role", "guest", "--duration", "120", "--buffer-kb", "65536"])
    p = subprocess.Popen([sys.executable, "-m", "tsalign", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        name = _wait_instance(p.pid, recording=point != "configuring")
        if point == "writing":  # SIGINT ends the recording; the kill lands while 2 x 64 MiB are read and written
            time.sleep(1.0)
            p.send_signal(signal.SIGINT)
            for _ in range(500):
                if Path(TRACEFS, "instances", name, "tracing_on").read_text().strip() == "0" or any(out.glob("cpu*.txt")):
                    break
                time.sleep(0.002)
        elif point != "configuring":
            time.sleep(0.5)
    finally:
        p.kill()
        p.wait(timeout=30)
    took = _gone_within(name, 1.0)
    assert instances() == [] and global_state() == before, took
    if point != "selftest":
        assert (out / "INCOMPLETE").is_file() and not (out / "manifest.json").exists()
        r = tsalign("align", "--host", str(out), "--guest", str(out))
        assert r.returncode == exitcodes.INVALID_INPUT and "INCOMPLETE" in r.stderr, r.stderr


def test_instance_of_a_dead_capture_is_reaped_by_any_command(tmp_path: Path) -> None:
    """Without its watchdog (killed first), a SIGKILLed capture's instance stays, until any tsalign command runs."""
    real()
    before = global_state()
    p = subprocess.Popen([sys.executable, "-m", "tsalign", "capture", "--out", str(tmp_path / "k"), "--role", "guest",
                          "--duration", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    name = _wait_instance(p.pid, recording=True)
    watchdogs = subprocess.run(["pgrep", "-f", f"tsalign-watchdog .*/{name}$"], capture_output=True, text=True)
    assert watchdogs.stdout.split(), "the capture runs no watchdog"
    for w in watchdogs.stdout.split():
        os.kill(int(w), signal.SIGKILL)
    p.kill()
    p.wait(timeout=30)
    time.sleep(0.3)
    assert name in instances()  # nothing could run
    r = tsalign("offsets", "--json")
    assert name not in instances() and instances() == [] and global_state() == before, r.stderr


def test_two_captures_into_one_out(tmp_path: Path) -> None:
    """The second capture into an --out being written fails at once and leaves the first one's data alone."""
    real()
    out = tmp_path / "one"
    first = subprocess.Popen([sys.executable, "-m", "tsalign", "capture", "--out", str(out), "--role", "guest",
                              "--duration", "1.5", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_instance(first.pid, recording=True)
    r = tsalign("capture", "--out", str(out), "--role", "guest", "--duration", "0.2")
    assert r.returncode == exitcodes.INVALID_INPUT and "another capture is writing it" in r.stderr, r.stderr
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    files = sorted(p.name for p in out.iterdir())
    assert "manifest.json" in files and "INCOMPLETE" not in files and ".lock" not in files, files
    r = tsalign("events", str(out), "--json")
    assert r.returncode == 0, r.stderr


def test_events_cannot_escape_the_private_instance(tmp_path: Path) -> None:
    """--events names reach no path outside the instance, and an empty item is an error, not every event."""
    real()
    before = global_state()
    for bad in (f"{TRACEFS}/events/kvm:kvm_pio", "kvm:kvm_pio,,,", "kvm:../../../kvm", ":", "sched:*x"):
        r = tsalign("capture", "--out", str(tmp_path / "x"), "--role", "guest", "--events", bad, "--duration", "0.2")
        assert r.returncode == exitcodes.INVALID_INPUT and "system:event" in r.stderr, (bad, r.stderr)
        assert not (tmp_path / "x").exists() and instances() == [] and global_state() == before
    enabled = Path(TRACEFS, "events/kvm/kvm_pio/enable")
    assert not enabled.exists() or enabled.read_text().strip() == "0"


def test_exception_in_the_middle_removes_instance(tmp_path: Path) -> None:
    real()
    from tsalign.capture.tracefs import TraceSession
    from tsalign.errors import InvalidParameter

    before = global_state()
    with pytest.raises(InvalidParameter, match="no-such-event"), TraceSession(["sched:sched_switch", "sched:no-such-event"]):
        pass
    with pytest.raises(RuntimeError, match="boom in the middle"), TraceSession(["sched:sched_switch"]) as s:
        s.start()
        assert os.path.isdir(s.path)
        raise RuntimeError("boom in the middle of a capture")
    assert instances() == [] and global_state() == before


def test_guest_capture_records_tsc_timestamps(tmp_path: Path) -> None:
    """This machine is itself a KVM guest whose sched_clock is kvm-clock: x86-tsc still records TSC."""
    real()
    from tsalign.node import tsc
    from tsalign.traces.bundle import Bundle

    # A quiet machine may switch tasks only a few times in 0.5 s: make our own context switches
    # (a process sleeping 1 ms in a loop) so the count is not left to chance.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time\nfor _ in range(3000): time.sleep(0.001)"])
    try:
        t_before = tsc.rdtsc()
        r = tsalign("capture", "--role", "guest", "--out", str(tmp_path / "g"), "--duration", "0.5", "--json")
        t_after = tsc.rdtsc()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.returncode == 0, r.stderr
    b = Bundle.open(str(tmp_path / "g"))
    assert b.domain == "guest_tsc" and b.manifest["clock"]["trace_clock"] == "x86-tsc"
    recs = list(b.records())
    assert sum(rec.pid == sleeper.pid for rec in recs) > 10, f"{len(recs)} records, few from the sleeper"
    assert all(t_before <= rec.ts <= t_after for rec in recs)  # the same TSC this process reads


def test_guest_capture_with_perf_clock_keeps_user_page(tmp_path: Path) -> None:
    real()

    r = tsalign("capture", "--role", "guest", "--clock", "perf", "--out", str(tmp_path / "p"), "--duration", "0.3",
                "--json")
    assert r.returncode == 0, r.stderr
    clock = json.loads(r.stdout)["manifest"]["clock"]
    assert clock["domain"] == "perf_ns" and clock["perf_user_page"] is not None
    # independent of tsalign's reading of the page: the kernel fills cap_user_time_zero only when sched_clock is
    # the native TSC one (arch_perf_update_userpage); a kvm-clock sched_clock says so in the kernel log
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    if "kvm-clock: using sched offset" in log:  # this machine
        assert clock["convertible"] is False and "TSC conversion is not supported" in clock["reason"], clock
        assert "not supported" in r.stdout
    elif Path("/sys/devices/system/clocksource/clocksource0/current_clocksource").read_text().strip() == "tsc" \
            and "Marking TSC unstable" not in log:
        assert clock["convertible"] is True, clock


def test_guest_capture_with_local_clock_records_the_sched_offset(tmp_path: Path) -> None:
    """`--clock local` on this machine (a kvm-clock guest): sched_clock ns at tracefs' microsecond resolution,
    with kvm_sched_clock_offset from the kernel log (read here with dmesg, not tsalign's reader); refused on a host."""
    real()
    r = tsalign("capture", "--role", "guest", "--clock", "local", "--out", str(tmp_path / "l"), "--duration", "0.3",
                "--json")
    assert r.returncode == 0, r.stderr
    clock = json.loads(r.stdout)["manifest"]["clock"]
    assert clock["trace_clock"] == "local" and clock["domain"] == "sched_ns" and clock["resolution_ns"] == 1000
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    m = re.search(r"kvm-clock: using sched offset of (\d+) cycles", log)
    assert clock["kvm_sched_clock_offset_ns"] == (int(m[1]) if m else None), clock
    # its timestamps are sched_clock: microseconds, near this machine's uptime-based local clock
    stamps = [re.search(r"\] \S* *(\d+)\.(\d+): ", x) for f in (tmp_path / "l").glob("cpu*.txt")
              for x in f.open() if x.strip() and not x.startswith("#")]
    up_ns = int(float(Path("/proc/uptime").read_text().split()[0]) * 1e9)
    assert stamps and all(m and len(m[2]) == 6 for m in stamps)  # secs.usecs
    assert abs(max(int(m[1]) * 10**9 + int(m[2]) * 1000 for m in stamps) - up_ns) < 60 * 10**9
    r = tsalign("capture", "--role", "host", "--clock", "local", "--out", str(tmp_path / "h"), "--duration", "0.1")
    assert r.returncode == exitcodes.INVALID_INPUT and "--clock" in r.stderr and not (tmp_path / "h").exists()


def test_selftest_verdict_fails_on_wrong_offsets(tmp_path: Path) -> None:
    """On this host's real KVM: the micro-VM's capture passes by four evidence kinds; the same capture
    judged with an offset just outside the interval, +/-1e6 or +/-1e12 cycles, fails naming vCPU,
    kind and distance; a capture of the same VM without evidence events is unverified (exit 7)."""
    real()
    need(os.path.exists("/dev/kvm"), "needs /dev/kvm")
    r = tsalign("selftest", "--beacons", "500", "--irqs", "20", "--json", "--out", str(tmp_path / "st"))
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "pass" and r.returncode == 0, rep["reasons"]
    ev = rep["evidence"]
    assert set(ev["kinds_found"]) == {"vcpu_run", "msr_write", "pio_beacon", "irq_injection"}, ev["notes"]
    d = ev["per_vcpu"][0]
    lo, hi = d["offset_interval"]
    assert lo <= rep["offsets"]["debugfs"] <= hi and d["width_cycles"] == hi - lo
    # the beacons' residuals: host exit minus guest rdtsc >= -(offset error): the interval holds them
    assert rep["beacons"]["residual_cycles"]["min"] >= -d["delta_interval"][0]
    host, guest = tmp_path / "st" / "host", tmp_path / "st" / "guest"
    for off, dist in ((hi + 1, 1), (lo - 1, 1), (10**6, 10**6 - hi), (-(10**6), lo + 10**6),
                      (10**12, 10**12 - hi), (-(10**12), lo + 10**12)):
        r = tsalign("align", "--host", str(host), "--guest", str(guest), "--tsc-offset", f"0={off}",
                    "-o", str(tmp_path / "w"), "--json")
        v = json.loads(r.stdout)
        assert r.returncode == exitcodes.VERDICT_FAIL and v["verdict"] == "fail", (off, v["reasons"])
        assert v["reasons"][0].startswith("vcpu0: ") and f"it is at least {dist} cycles" in v["reasons"][0], (off, v["reasons"])
        assert v["evidence"]["per_vcpu"][0]["worst_violation"]["kind"] in ev["kinds_found"]
    # the same micro-VM captured with the offset's tracepoint only: nothing to check -> unverified
    from tsalign.align.merge import align
    from tsalign.capture.capture import Capture
    from tsalign.capture.microvm import MicroVM
    from tsalign.node import kvmvms
    from tsalign.node.fs import Root
    from tsalign.traces.bundle import Bundle
    from tsalign.verify.judge import verdict_of
    from tsalign.verify.selftest import _guest_bundle

    with Capture(str(tmp_path / "h2"), "host", ("kvm:kvm_write_tsc_offset",), "x86-tsc", 1024) as cap, MicroVM() as vm:
        vm.run(beacons=1)
        cap.vms = [v for v in kvmvms.discover_vms(Root(), os.getpid()) if v.vm_fd == vm.vm_fd]
        cap.start()
        res = vm.run(beacons=50)
        cap.stop()
        cap.finish({})
        _guest_bundle(str(tmp_path / "g2"), vm, res, None, vm.tsc_khz())
    v = verdict_of(align(Bundle.open(str(tmp_path / "h2"), "--host"), Bundle.open(str(tmp_path / "g2"), "--guest")))
    assert v["verdict"] == "unverified" and v["brackets"]["checked"] == 0, v["reasons"]
    assert "kvm:kvm_pio" in v["evidence"]["capture_for_all_kinds"]["host"]


def _selftest_bundles(tmp_path: Path) -> tuple:
    src = Path(__file__).resolve().parents[2] / "examples" / "selftest"
    import shutil

    shutil.copytree(src, tmp_path / "ex")
    return tmp_path / "ex" / "host", tmp_path / "ex" / "guest"


def test_align_shipped_bundle(tmp_path: Path) -> None:
    host, guest = _selftest_bundles(tmp_path)
    r = tsalign("align", "--host", str(host), "--guest", str(guest), "-o", str(tmp_path / "a"), "--json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["verdict"] == "pass" and v["brackets"]["checked"] > 1100 and v["brackets"]["violated"] == 0  # 1106 beacons, 20 IRQs
    assert "debugfs" in v["offsets"]["sources"]
    # a host bundle of two VMs (as `capture --vm A --vm B` writes): --vm names the guest's; the guest's identity is
    # still checked (the other VM is refused), and a name the bundle lacks is named with the ones it holds
    m = json.loads((host / "manifest.json").read_text())
    name = m["vm"][0]["name"] = "selftest-vm"  # the micro-VM has no name: one given here
    m["vm"].append(m["vm"][0] | {"name": "other-vm", "pid": m["vm"][0]["pid"] + 1, "uuid": None})
    (host / "manifest.json").write_text(json.dumps(m))
    r = tsalign("align", "--host", str(host), "--guest", str(guest), "--vm", name, "-o", str(tmp_path / "b"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["verdict"] == "pass", r.stderr
    r = tsalign("align", "--host", str(host), "--guest", str(guest), "--vm", "other-vm", "-o", str(tmp_path / "c"))
    assert r.returncode == exitcodes.INCONSISTENT and "matches none" in r.stderr, r.stderr
    r = tsalign("align", "--host", str(host), "--guest", str(guest), "--vm", "nope", "-o", str(tmp_path / "d"))
    assert r.returncode == exitcodes.INVALID_INPUT and "other-vm" in r.stderr and name in r.stderr, r.stderr


def _edit(manifest: Path, **changes) -> None:
    m = json.loads(manifest.read_text())
    for k, v in changes.items():
        cur = m
        keys = k.split("__")
        for part in keys[:-1]:
            cur = cur[part]
        cur[keys[-1]] = v
    manifest.write_text(json.dumps(m))


def test_align_bad_input(tmp_path: Path) -> None:
    host, guest = _selftest_bundles(tmp_path)
    r = tsalign("align", "--host", str(tmp_path / "missing"), "--guest", str(guest))
    assert r.returncode == exitcodes.INVALID_INPUT and "--host" in r.stderr and "missing" in r.stderr
    (tmp_path / "empty").mkdir()
    r = tsalign("align", "--host", str(host), "--guest", str(tmp_path / "empty"))
    assert r.returncode == exitcodes.INVALID_INPUT and "manifest.json" in r.stderr
    r = tsalign("align", "--host", str(guest), "--guest", str(host))
    assert r.returncode == exitcodes.INVALID_INPUT and "tsalign capture --role host" in r.stderr
    # a guest bundle from a VM of another machine (another boot)
    _edit(guest / "manifest.json", vm__host_boot_id="00000000-0000-0000-0000-000000000000")
    r = tsalign("align", "--host", str(host), "--guest", str(guest))
    assert r.returncode == exitcodes.INCONSISTENT and "different machines" in r.stderr and str(guest) in r.stderr
    # a guest bundle with kvm-clock based perf timestamps that cannot be converted
    host, guest = _selftest_bundles(tmp_path / "2")
    _edit(guest / "manifest.json", clock={"trace_clock": "perf", "domain": "perf_ns", "convertible": False,
                                          "reason": "TSC conversion is not supported: cap_user_time=0",
                                          "perf_user_page": {"time_mult": 0}})
    r = tsalign("align", "--host", str(host), "--guest", str(guest))
    assert r.returncode == exitcodes.INVALID_INPUT
    assert str(guest) in r.stderr and "no-kvmclock" in r.stderr and "--role guest" in r.stderr
    _edit(guest / "manifest.json", clock={"trace_clock": "local", "domain": "kvmclock_ns"})
    r = tsalign("align", "--host", str(host), "--guest", str(guest))
    assert r.returncode == exitcodes.INVALID_INPUT and "pvclock" in r.stderr
    # a truncated data file: the line is named
    host, guest = _selftest_bundles(tmp_path / "3")
    (guest / "events.jsonl").write_text('{"ts": 1, "event": "x"}\n{"ts": \n')
    r = tsalign("align", "--host", str(host), "--guest", str(guest))
    assert r.returncode == exitcodes.INVALID_INPUT and "events.jsonl:2" in r.stderr


def test_capture_bad_input(tmp_path: Path) -> None:
    r = tsalign("capture", "--out", str(tmp_path / "x"), "--vm", "no-such-vm-xyz")
    assert r.returncode == exitcodes.INVALID_INPUT and "no-such-vm-xyz" in r.stderr
    assert not (tmp_path / "x").exists()
    r = tsalign("capture", "--out", str(tmp_path / "y"), "--duration", "-1")
    assert r.returncode == exitcodes.INVALID_INPUT and "--duration" in r.stderr
    # --skip-missing-vms skips some, never all: with no named VM running it is the same error
    r = tsalign("capture", "--out", str(tmp_path / "z"), "--vm", "no-such-vm-a", "--vm", "no-such-vm-b",
                "--skip-missing-vms")
    assert r.returncode == exitcodes.INVALID_INPUT and "no-such-vm-a" in r.stderr and not (tmp_path / "z").exists()
    for bad in ("-1", "nan", "60001"):
        r = tsalign("microvm", "--seconds", "1", "--pause-ms", bad)
        assert r.returncode == exitcodes.INVALID_INPUT and "--pause-ms" in r.stderr, (bad, r.stderr)


def test_capture_never_touches_an_existing_directory(tmp_path: Path) -> None:
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    r = tsalign("capture", "--role", "guest", "--out", str(keep), "--duration", "0.1")
    assert r.returncode == exitcodes.INVALID_INPUT and "not empty" in r.stderr
    assert (keep / "notes.txt").read_text() == "mine" and sorted(os.listdir(keep)) == ["notes.txt"]  # not even a lock
