"""A real capture from the nested lab (tests/integration/test_nested_kvm.py::test_nested_kvmclock_microvm, run while
the rest of the suite loaded the machine): the kvm-clock micro-VM inside L1, whose TSC offset L1 rewrote 855 times
and whose pvclock record 428 times, stepping back by milliseconds (L1 is TCG with an unstable TSC). Kept
(tests/fixtures/captures/nested-kvmclock-steps.tar.xz: host ftrace text, the guest's kvm-clock bundle and the same
events in guest TSC, the truth) because it once failed: the guest's own clock went back 5.7 ms between two beacons,
a beacon's stamp converted back to TSC landed after the next two, and the pio-beacon evidence, taking the beacon
after another on the guest axis as written after it (its seq says otherwise), contradicted a right alignment. The
data's facts are read here by hand from the files, not through tsalign."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from tests.unit.test_verify import _tsalign
from tsalign.clock.pvclock import Pvclock, tsc_to_kvmclock

CAPTURE = Path(__file__).resolve().parents[1] / "fixtures" / "captures" / "nested-kvmclock-steps.tar.xz"
_RECORD = re.compile(r"vcpu_id 0, pvclock \{ version \d+, tsc_timestamp 0x([0-9a-f]+), system_time 0x([0-9a-f]+), "
                     r"tsc_to_system_mul 0x([0-9a-f]+), tsc_shift (-?\d+)")


@pytest.fixture(scope="module")
def kc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nested")
    with tarfile.open(CAPTURE) as t:
        t.extractall(out, filter="data")
    return out / "kc"


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


def test_the_capture_is_what_it_was_kept_for(kc: Path) -> None:
    """By hand: L1's pvclock records step back (a record's system_time below what the one written before it reads
    at its tsc_timestamp, by the guest's formula), by up to milliseconds, and the guest's kvm-clock stamps of its
    beacons are not in the order it wrote them (seq 152 stamped 5.7 ms after seq 153)."""
    records = [Pvclock(int(m[2], 16), int(m[1], 16), int(m[3], 16), int(m[4]))
               for m in map(_RECORD.search, (kc / "host" / "cpu0.txt").open()) if m]
    back = [tsc_to_kvmclock(b.tsc_timestamp, a) - b.system_time for a, b in zip(records, records[1:])]
    assert len(records) == 428 and max(back) > 10**6  # ns: a step back of over a millisecond
    stamp = {e["payload"]: e["ts"] for e in _events(kc / "guest" / "events.jsonl") if e["event"] == "tsalign_beacon"}
    assert stamp["seq=152 port=0x10"] - stamp["seq=153 port=0x10"] == 5_734_719


def test_aligned_within_the_stated_bounds_and_the_evidence_agrees(kc: Path, tmp_path: Path) -> None:
    """tsalign align passes (it failed before the evidence read the beacons' seq), and each guest event's TSC,
    converted back from kvm-clock ns, lies within the conversion's stated bounds of the TSC the guest read (the
    guest-tsc bundle: the same events stamped in TSC) — one of them 14 M cycles above it, where the records' steps
    added up."""
    r = _tsalign("align", "--host", str(kc / "host"), "--guest", str(kc / "guest"), "-o", str(tmp_path / "a"), "--json")
    v = json.loads(r.stdout)
    assert (r.returncode, v["verdict"]) == (0, "pass"), v["reasons"]
    assert v["evidence"]["per_vcpu"][0]["checked"] > 700
    bounds = v["guest_conversion"]
    truth = {(e["event"], e["payload"]): e["ts"] for e in _events(kc / "guest-tsc" / "events.jsonl")}
    got = {(e["event"], e["payload"]): e["guest_tsc"] for e in _events(tmp_path / "a" / "timeline.jsonl")
           if e["side"] == "guest"}
    errors = [got[k] - truth[k] for k in truth.keys() & got.keys()]  # converted minus read, cycles
    assert len(errors) == 404 and max(errors) == 14_166_574
    assert max(errors) <= bounds["above_cycles"] and -bounds["below_cycles"] < min(errors), (bounds, min(errors))


@pytest.mark.parametrize("moved", [10**6, -10**6, 10**12])
def test_a_wrong_offset_fails_on_the_same_capture(kc: Path, tmp_path: Path, moved: int) -> None:
    """The same capture with the guest's first TSC offset (L1's debugfs, read before the run) moved: fail."""
    first = json.loads((kc / "host" / "manifest.json").read_text())
    r = _tsalign("align", "--host", str(kc / "host"), "--guest", str(kc / "guest"), "-o", str(tmp_path / "ok"), "--json")
    off = json.loads(r.stdout)["evidence"]["per_vcpu"][0]["sources"]["debugfs"]["values"][0]
    assert off != 0 and first["role"] == "host"
    r = _tsalign("align", "--host", str(kc / "host"), "--guest", str(kc / "guest"), "-o", str(tmp_path / "bad"),
                 "--tsc-offset", f"0={off + moved}", "--json")
    v = json.loads(r.stdout)
    assert (r.returncode, v["verdict"]) == (1, "fail"), v["reasons"]
