"""kvm-clock guests on this host's real KVM: the micro-VM gets a kvm-clock (MSR_KVM_SYSTEM_TIME_NEW),
stamps its events in the kvm-clock ns it computes from the pvclock record KVM keeps in its memory —
as a kvm-clock Linux guest's trace is stamped — and tsalign converts them back to guest TSC with the
host's traced ``kvm:kvm_pvclock_update`` records. The truth is the TSC the guest read (kept in
``guest-tsc``): every converted TSC must lie within the pvclock rounding below it. A host capture
without the records is refused with how to get one; a record moved by 1 ms fails the verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.test_capture_real import real, tsalign
from tsalign import exitcodes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    real()
    need(Path("/dev/kvm").exists(), "needs /dev/kvm")
    out = tmp_path_factory.mktemp("kvmclock") / "st"
    r = tsalign("selftest", "--beacons", "400", "--irqs", "10", "--guest-clock", "kvmclock", "--out", str(out), "--json")
    return out, json.loads(r.stdout) | {"_rc": r.returncode}


def test_kvmclock_guest_converted_within_the_rounding(run: tuple[Path, dict]) -> None:
    out, rep = run
    assert rep["_rc"] == 0 and rep["verdict"] == "pass", rep["reasons"]
    k = rep["kvmclock"]
    pv = k["pvclock"]["vcpu0"]
    assert pv["updates"] >= 1 and pv["versions_increasing"]
    assert k["ok"] and 0 <= k["error_cycles"]["min"] <= k["error_cycles"]["max"] < k["below_bound_cycles"]
    # the bound by hand from the traced record: ceil(2^32 / mul) cycles per ns, scaled by the shift
    line = next(x for f in sorted((out / "host").glob("cpu*.txt")) for x in f.open() if "kvm_pvclock_update" in x)
    m = re.search(r"tsc_to_system_mul 0x([0-9a-f]+), tsc_shift (-?\d+)", line)
    per_ns = -(-(1 << 32) // int(m[1], 16))
    shift = int(m[2])
    assert k["below_bound_cycles"] == (per_ns << -shift if shift < 0 else max(1, -(-per_ns >> shift)))
    # the guest bundle really is in kvm-clock ns: far below the TSC values (ns since the VM's kvm-clock began)
    g = [json.loads(x)["ts"] for x in (out / "guest" / "events.jsonl").open()]
    t = [json.loads(x)["ts"] for x in (out / "guest-tsc" / "events.jsonl").open()]
    assert max(g) < 10**12 < min(t)
    assert set(rep["evidence"]["kinds_found"]) == {"vcpu_run", "msr_write", "pio_beacon", "irq_injection"}


def _host_text(out: Path, dst: Path, edit=None) -> Path:
    lines = []
    for f in sorted((out / "host").glob("cpu*.txt")):
        for x in f.open():
            if x.strip() and not x.startswith("#"):
                lines.append((int(re.search(r"\]\s+\S+\s+(\d+):", x)[1]), edit(x) if edit else x))
    dst.write_text("".join(x for _, x in sorted(lines, key=lambda t: t[0])))
    return dst


def test_without_pvclock_records_or_with_a_moved_one(run: tuple[Path, dict], tmp_path: Path) -> None:
    out, rep = run
    tid = str(json.loads((out / "host" / "manifest.json").read_text())["vm"][0]["vcpus"][0]["tid"])
    offset = str(rep["offsets"]["debugfs"])
    base = ["--guest", str(out / "guest"), "--vcpu-tid", f"0={tid}", "--tsc-offset", f"0={offset}", "--json"]
    # the same capture as plain text aligns as the bundle does
    h = _host_text(out, tmp_path / "host.txt")
    r = tsalign("align", "--host", str(h), *base, "-o", str(tmp_path / "a"))
    assert r.returncode == 0, r.stdout[-2000:]
    # no pvclock record: refused, saying how to get one
    h = _host_text(out, tmp_path / "nopv.txt", lambda x: "" if "kvm_pvclock_update" in x else x)
    r = tsalign("align", "--host", str(h), *base, "-o", str(tmp_path / "b"))
    assert r.returncode == exitcodes.INVALID_INPUT and "kvm:kvm_pvclock_update" in r.stderr and "MSR_KVM_SYSTEM_TIME_NEW" in r.stderr
    # the record's system_time moved by 1 ms: every guest event lands ~1 ms of cycles off -> fail
    def moved(x: str) -> str:
        return re.sub(r"system_time 0x([0-9a-f]+)", lambda m: f"system_time {int(m[1], 16) + 1_000_000:#x}", x)

    h = _host_text(out, tmp_path / "moved.txt", moved)
    r = tsalign("align", "--host", str(h), *base, "-o", str(tmp_path / "c"))
    v = json.loads(r.stdout)
    assert r.returncode == exitcodes.VERDICT_FAIL and v["reasons"][0].startswith("vcpu0: "), v["reasons"]


def _sched_guest(out: Path, dst: Path, sched_offset: int, recorded_offset: int) -> list[int]:
    """The micro-VM's kvm-clock guest bundle as a kvm-clock Linux guest's `local` capture: sched_clock ns =
    kvm-clock ns - ``sched_offset``, printed at microsecond resolution as tracefs text prints `local`; the
    manifest records ``recorded_offset`` as the kernel log's kvm_sched_clock_offset. Returns the full-ns
    sched_clock values (for a calibration)."""
    import shutil

    shutil.copytree(out / "guest", dst)
    rows = [json.loads(x) for x in (out / "guest" / "events.jsonl").open()]
    full = [r["ts"] - sched_offset for r in rows]
    (dst / "events.jsonl").write_text("".join(json.dumps({**r, "ts": t // 1000 * 1000}) + "\n" for r, t in zip(rows, full)))
    m = json.loads((dst / "manifest.json").read_text())
    m["clock"] = {"trace_clock": "local", "domain": "sched_ns", "convertible": False, "resolution_ns": 1000,
                  "kvm_sched_clock_offset_ns": recorded_offset}
    (dst / "manifest.json").write_text(json.dumps(m))
    return full


def test_sched_clock_guest_through_pvclock_and_a_calibration(run: tuple[Path, dict], tmp_path: Path) -> None:
    """A kvm-clock guest's sched_clock (`local`) timestamps at tracefs' microsecond resolution: align converts
    them with kvm_sched_clock_offset and the host's pvclock records; each converted TSC lies at or below the
    TSC the guest read, within the stated bound. A wrong kvm_sched_clock_offset (1 ms) fails. A guest
    calibration fitted on the guest's own (sched ns, TSC) pairs is cross-checked against the pvclock route per
    vCPU and agrees; one moved by 1 ms disagrees and fails the verdict."""
    from tsalign.clock import calib

    out, rep = run
    tsc_of = {(e["event"], e["payload"]): e["ts"] for e in map(json.loads, (out / "guest-tsc" / "events.jsonl").open())}
    rows = [json.loads(x) for x in (out / "guest" / "events.jsonl").open()]
    truth = [tsc_of[(r["event"], r["payload"])] for r in rows]  # the TSC each kvm-clock-stamped event read
    kvm = [r["ts"] for r in rows]
    off = min(kvm) // 2  # the guest "booted" when its kvm-clock read half its first event's time
    full = _sched_guest(out, tmp_path / "g", off, off)
    r = tsalign("align", "--host", str(out / "host"), "--guest", str(tmp_path / "g"), "-o", str(tmp_path / "a"), "--json")
    v = json.loads(r.stdout)
    assert r.returncode == 0 and v["verdict"] == "pass", v["reasons"]
    below = v["guest_conversion"]["below_cycles"]
    assert v["guest_conversion"]["above_cycles"] == 0  # one pvclock record here: no step
    got = sorted(json.loads(x)["guest_tsc"] for x in (tmp_path / "a" / "timeline.jsonl").open() if '"side": "guest"' in x)
    assert len(got) == len(truth) > 100
    diffs = [t - c for t, c in zip(sorted(truth), got)]
    assert 0 <= min(diffs) and max(diffs) <= below, (min(diffs), max(diffs), below)
    assert max(diffs) > rep["kvmclock"]["below_bound_cycles"]  # the microseconds cost more than the rounding
    # a kernel log read wrongly (the offset 1 ms off): fail
    _sched_guest(out, tmp_path / "w", off, off + 1_000_000)
    r = tsalign("align", "--host", str(out / "host"), "--guest", str(tmp_path / "w"), "-o", str(tmp_path / "b"), "--json")
    assert r.returncode == exitcodes.VERDICT_FAIL and json.loads(r.stdout)["verdict"] == "fail"
    # a calibration from the guest's own pairs (brackets of +-50 cycles around the TSC it read)
    cal = calib.fit(full, [t - 50 for t in truth], [t + 50 for t in truth], "local",
                    json.loads((out / "host" / "manifest.json").read_text())["node"]["tsc_khz"])
    calib.save(str(tmp_path / "cal.json"), [cal])
    r = tsalign("align", "--host", str(out / "host"), "--guest", str(tmp_path / "g"), "--guest-calibration",
                str(tmp_path / "cal.json"), "-o", str(tmp_path / "c"), "--json")
    v = json.loads(r.stdout)
    cross = v["kvmclock_cross_check"]
    assert r.returncode == 0 and v["verdict"] == "pass" and cross["agree"], (v["reasons"], cross)
    assert cross["per_vcpu"]["vcpu0"]["events"] == len(truth)
    assert -cross["allowed_cycles"][1] <= cross["per_vcpu"]["vcpu0"]["min_cycles"] <= cross["per_vcpu"]["vcpu0"]["max_cycles"] <= cross["allowed_cycles"][1]
    moved = json.loads((tmp_path / "cal.json").read_text())
    for p in moved["clocks"]["local"]["pieces"]:  # each ns predicted 1 ms of cycles later
        p["tsc_timestamp"] += cal.tsc_khz
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    r = tsalign("align", "--host", str(out / "host"), "--guest", str(tmp_path / "g"), "--guest-calibration",
                str(tmp_path / "moved.json"), "-o", str(tmp_path / "d"), "--json")
    v = json.loads(r.stdout)
    assert r.returncode == exitcodes.VERDICT_FAIL and not v["kvmclock_cross_check"]["agree"]
    assert any("calibration and the host's pvclock records disagree" in x for x in v["reasons"]), v["reasons"]
    # without the host's pvclock route (no sched offset recorded), the calibration alone converts them
    _sched_guest(out, tmp_path / "n", off, None)
    r = tsalign("align", "--host", str(out / "host"), "--guest", str(tmp_path / "n"), "-o", str(tmp_path / "e"), "--json")
    assert r.returncode == exitcodes.INVALID_INPUT and "--guest-calibration" in r.stderr
    r = tsalign("align", "--host", str(out / "host"), "--guest", str(tmp_path / "n"), "--guest-calibration",
                str(tmp_path / "cal.json"), "-o", str(tmp_path / "f"), "--json")
    v = json.loads(r.stdout)
    assert r.returncode == 0 and v["verdict"] == "pass" and v["kvmclock_cross_check"] is None, v["reasons"]
