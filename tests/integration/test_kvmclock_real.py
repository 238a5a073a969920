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
    assert k["ok"] and 0 <= k["error_cycles"]["min"] <= k["error_cycles"]["max"] < k["rounding_bound_cycles"]
    # the bound by hand from the traced record: ceil(2^32 / mul) cycles per ns, scaled by the shift
    line = next(x for f in sorted((out / "host").glob("cpu*.txt")) for x in f.open() if "kvm_pvclock_update" in x)
    m = re.search(r"tsc_to_system_mul 0x([0-9a-f]+), tsc_shift (-?\d+)", line)
    per_ns = -(-(1 << 32) // int(m[1], 16))
    shift = int(m[2])
    assert k["rounding_bound_cycles"] == (per_ns << -shift if shift < 0 else max(1, -(-per_ns >> shift)))
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
