"""A ``trace-cmd record -A``-style host/guest pair, aligned with its own TIME_SHIFT offsets and GUEST
vCPU threads. trace-cmd 3.1 here cannot record one (no agent in a guest of this machine), so the pair
is made from the shipped real capture (examples/foreign): the host is its .dat with TRACEID and GUEST
options added; the guest is the micro-VM's events written by the project's v7 writer, moved by
D = -(233 << 32) cycles (low 32 bits kept: the host's kvm_pio exits carry them), with TRACEID and a
TIME_SHIFT of -D. ``trace-cmd dump --options`` reads the options back and ``trace-cmd report`` applies
TIME_SHIFT: both are the independent checks of layout and sign."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.infra.ringpages import (
    PageWriter,
    append_options,
    event_format,
    guest_option,
    time_shift_option,
    traceid_option,
    write_v7,
)
from tests.unit.test_verify import _tsalign
from tsalign import exitcodes
from tsalign.errors import InvalidParameter
from tsalign.traces.tracedat import TraceDat

EX = Path(__file__).resolve().parents[2] / "examples" / "foreign"
D = -(233 << 32)
HOST_ID, GUEST_ID = 0x1111222233334444, 0x5555666677778888
VCPU_TID = 2181  # the micro-VM's vCPU thread in examples/foreign/host.dat

_SEQ = "\tfield:unsigned int seq;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:unsigned int port;\toffset:12;\tsize:4;\tsigned:0;\n"
_MSR = "\tfield:unsigned int msr;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:unsigned long long value;\toffset:16;\tsize:8;\tsigned:0;\n"
FORMATS = [event_format("tsalign_beacon", _SEQ, '"seq=%u port=0x%x", REC->seq, REC->port', 1001),
           event_format("tsalign_msr", _MSR, '"msr=0x%x value=0x%llx", REC->msr, REC->value', 1002),
           event_format("tsalign_irq", _SEQ, '"seq=%u port=0x%x", REC->seq, REC->port', 1003)]


def guest_rows() -> list[tuple[int, str, dict[str, int]]]:
    rows = []
    for line in (EX / "guest.txt").open():
        m = re.match(r"\s*\S+-\d+\s+\[\d+\]\s+(\d+): (\w+): (.*)$", line)
        assert m, line
        rows.append((int(m[1]) + D, m[2], {k: int(v, 0) for k, v in (x.split("=") for x in m[3].split())}))
    return sorted(rows, key=lambda r: r[0])


def make_pair(d: Path, shift: list[tuple[int, int, int]] | None = None, flags: int = 0, peer: int = HOST_ID,
              frac: list[list[int]] | None = None) -> tuple[Path, Path]:
    """host.dat and guest.dat in ``d``; ``shift``: the TIME_SHIFT samples of CPU 0 (default: -D at the
    first and the last guest event)."""
    rows = guest_rows()
    w = PageWriter(rows[0][0])
    last = rows[0][0]
    for ts, ev, f in rows:
        if ev == "tsalign_msr":  # the value the host saw in its kvm_msr exit (the unmoved TSC)
            p = struct.pack("<HBBiIIQ", 1002, 0, 0, 0, f["msr"], 0, f["value"])
        else:
            p = struct.pack("<HBBiII", 1001 if ev == "tsalign_beacon" else 1003, 0, 0, 0, f["seq"], f["port"])
        w.event(ts - last, p)
        last = ts
    samples = shift or [(rows[0][0], -D, 1), (rows[-1][0], -D, 1)]
    guest, host = d / "guest.dat", d / "host.dat"
    write_v7(str(guest), {"": {0: w.pages()}}, compression="none", formats=("tsalign", FORMATS), cmdlines="",
             options=[traceid_option(GUEST_ID), time_shift_option(peer, flags, [samples], frac)])
    subprocess.run(["trace-cmd", "convert", "--compression", "none", "-i", str(EX / "host.dat"), "-o", str(host)],
                   check=True, capture_output=True, timeout=120)
    append_options(str(host), [traceid_option(HOST_ID), guest_option("microvm", GUEST_ID, [(0, VCPU_TID)])])
    return host, guest


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    need(shutil.which("trace-cmd") is not None, "needs trace-cmd (make deps installs it)")
    return make_pair(tmp_path_factory.mktemp("pair"))


def _align(host: Path, guest: Path, out: Path, *extra: str) -> tuple[int, dict]:
    r = _tsalign("align", "--host", str(host), "--guest", str(guest), "--tsc-khz", "2445428", "-o", str(out), "--json",
                 *extra)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def test_options_read_as_trace_cmd_reads_them(pair: tuple[Path, Path]) -> None:
    host, guest = pair
    dump = subprocess.run(["trace-cmd", "dump", "--options", str(host)], capture_output=True, text=True).stdout
    assert f"{GUEST_ID:#x} [trace id]" in dump and f"0 {VCPU_TID} [guest cpu, host pid]" in dump
    dump = subprocess.run(["trace-cmd", "dump", "--options", str(guest)], capture_output=True, text=True).stdout
    rows = guest_rows()
    assert f"{HOST_ID:#x} [peer's trace id]" in dump and f"{-D} 1 0 {rows[0][0]}[" in dump
    with TraceDat(str(host)) as h:
        assert h.options["trace_id"] == HOST_ID
        assert h.options["guests"] == [{"name": "microvm", "trace_id": GUEST_ID, "vcpus": [(0, VCPU_TID)]}]
    with TraceDat(str(guest)) as g:
        assert g.options["time_shift"] == {"peer": HOST_ID, "flags": 0, "cpus": [
            {"ts": [rows[0][0], rows[-1][0]], "offset": [-D, -D], "scaling": [1, 1], "frac": [0, 0]}]}


def test_pair_aligned_with_its_own_offsets(pair: tuple[Path, Path], tmp_path: Path) -> None:
    host, guest = pair
    code, v = _align(host, guest, tmp_path / "a")
    d = v["evidence"]["per_vcpu"][0]
    assert f"vCPU threads from trace-cmd's GUEST option (guest 'microvm'): vcpu0=tid {VCPU_TID}" in v["notes"]
    assert any(n.startswith("guest offsets from trace-cmd's TIME_SHIFT") for n in v["notes"])
    assert d["sources"]["trace-cmd TIME_SHIFT"]["values"] == [D]
    assert set(v["evidence"]["kinds_found"]) == {"vcpu_run", "msr_write", "pio_beacon", "irq_injection"}
    # the same evidence interval as the unmoved capture aligned with its debugfs offset (0)
    _, ref = _align(EX / "host.dat", EX / "guest.txt", tmp_path / "r", "--tsc-offset", "0=0")
    assert d["delta_interval"] == ref["evidence"]["per_vcpu"][0]["delta_interval"] and d["violated"] == 0
    # the recording host traced a kvm_write_tsc_offset it never applied: TIME_SHIFT disagrees with it
    assert code == exitcodes.VERDICT_WARN and v["verdict"] == "warn"
    issue = v["offsets"]["issues"][0]
    assert issue["kind"] == "unexplained_change" and "trace-cmd TIME_SHIFT" in issue["message"]
    # trace-cmd's own correction puts each guest event at guest ts + TIME_SHIFT offset; tsalign's
    # timeline holds it at guest ts, and its host events at host ts + D: the same relation
    report = subprocess.run(["trace-cmd", "report", "-N", "-t", "-i", str(guest)], capture_output=True, text=True,
                            check=True).stdout
    corrected = [int(s + f) for s, f in re.findall(r"(\d+)\.(\d{9}): tsalign_beacon:", report)]
    timeline = [json.loads(x) for x in (tmp_path / "a" / "timeline.jsonl").open()]
    beacons = [e["guest_tsc"] for e in timeline if e["event"] == "tsalign_beacon"]
    assert corrected == [g - D for g in beacons] and len(beacons) == 649
    # host events from the first sample on (before it, the unapplied write was the latest source)
    after = [e for e in timeline if e["side"] == "host" and e["host_tsc"] >= guest_rows()[0][0] - D]
    assert len(after) > 2000 and all(e["guest_tsc"] == e["host_tsc"] + D for e in after)


def test_wrong_time_shift_fails(tmp_path: Path) -> None:
    need(shutil.which("trace-cmd") is not None, "needs trace-cmd (make deps installs it)")
    rows = guest_rows()
    host, guest = make_pair(tmp_path, [(rows[0][0], -D - 10**6, 1)])  # trace-cmd says 10^6 cycles more
    code, v = _align(host, guest, tmp_path / "a")
    assert code == exitcodes.VERDICT_FAIL and v["reasons"][0].startswith("vcpu0: ")
    assert "too high" in v["reasons"][0]


def test_pair_errors(tmp_path: Path) -> None:
    need(shutil.which("trace-cmd") is not None, "needs trace-cmd (make deps installs it)")
    rows = guest_rows()
    host, guest = make_pair(tmp_path, peer=0x42)
    r = _tsalign("align", "--host", str(host), "--guest", str(guest), "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INCONSISTENT and "different trace-cmd sessions" in r.stderr
    host, guest = make_pair(tmp_path, [(rows[0][0], -D, 3)])
    r = _tsalign("align", "--host", str(host), "--guest", str(guest), "-o", str(tmp_path / "a"))
    assert r.returncode == exitcodes.INVALID_INPUT and "TIME_SHIFT samples without TSC scaling" in r.stderr
    # counts larger than their option: named, never read past
    opt = time_shift_option(HOST_ID, 0, [[(1, 2, 1)]])[1]
    for oid, bad, what in ((12, opt[:16] + struct.pack("<I", 10**6) + opt[20:], "TIME_SHIFT sample count"),
                           (12, opt[:12] + struct.pack("<I", 10**6) + opt[16:], "TIME_SHIFT option whose CPU count"),
                           (13, guest_option("g", 1, [(0, 1)])[1][:-8] + b"", "GUEST option whose CPU count")):
        p = tmp_path / "bad.dat"
        write_v7(str(p), {"": {0: PageWriter(1).pages()}}, compression="none", options=[(oid, bad)])
        with pytest.raises(InvalidParameter, match=what):
            TraceDat(str(p))
