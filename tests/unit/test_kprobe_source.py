"""Hits of tsalign's kprobe are an offset source: each becomes a snapshot of the vCPU its vcpu_id names, judged
with the others. The shipped selftest capture gets hits added by hand: it was recorded on PVM, where the
tracepoint said next=-10^12 but the offset stayed 0 (debugfs at both ends, and the beacons, say so)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tsalign.align.merge import align
from tsalign.errors import InvalidParameter
from tsalign.kernel.kprobe import parse_definition, parse_hit, render
from tsalign.traces.bundle import Bundle
from tsalign.verify.judge import verdict_of

EX = Path(__file__).resolve().parents[2] / "examples" / "selftest"
APPLIED = 0  # the offset the micro-VM really ran with


def test_parse_hit() -> None:
    assert parse_hit("(kvm_vcpu_kick+0x0/0xb0 [kvm]) tsc_offset=18446743933619002252 vcpu_id=1") == (18446743933619002252, 1)
    assert parse_hit("(__kvm_vcpu_kick+0x4/0x90) tsc_offset=0xffffffdf61f7210b vcpu_id=0") == (0xFFFFFFDF61F7210B, 0)
    assert parse_hit("(kvm_vcpu_kick+0x0/0xb0 [kvm]) tsc_offset=18446743933619002252") is None  # whose? unknown
    assert parse_hit("(f) tsc_offset=99999999999999999999 vcpu_id=0") is None  # over 64 bits
    assert parse_hit("pio_write at 0x10 size 4 count 1 val 0x1") is None


def _with_hits(tmp_path: Path, payloads: list[str]) -> tuple[Bundle, Bundle]:
    host = tmp_path / "host"
    shutil.copytree(EX / "host", host)
    shutil.copytree(EX / "guest", tmp_path / "guest")
    lines = (host / "cpu1.txt").read_text().splitlines(keepends=True)
    # after the write that applied the offset (ts 4077017096851), before the first beacon (4077018816653)
    hits = [f"       CPU 0/KVM-7948    [001] ..... {4077018000000 + i}: __kvm_vcpu_kick: (__kvm_vcpu_kick+0x0/0x90) {p}\n"
            for i, p in enumerate(payloads)]
    (host / "cpu1.txt").write_text("".join(lines[:1] + hits + lines[1:]))
    m = json.loads((host / "manifest.json").read_text())
    next(s for s in m["stats"] if s["cpu"] == 1)["entries"] += len(hits)
    (host / "manifest.json").write_text(json.dumps(m))
    return Bundle.open(str(host)), Bundle.open(str(tmp_path / "guest"))


def test_right_hits_join_the_sources_and_pass(tmp_path: Path) -> None:
    v = verdict_of(align(*_with_hits(tmp_path, [f"tsc_offset={APPLIED} vcpu_id=0", f"tsc_offset={APPLIED:#x} vcpu_id=0"])))
    assert v["verdict"] == "pass", v["reasons"]
    # the one issue is the capture's own (PVM did not apply the traced write), now seen at the first hit
    assert "kprobe" in v["offsets"]["sources"] and {i["kind"] for i in v["offsets"]["issues"]} == {"write_not_applied"}
    assert v["evidence"]["per_vcpu"][0]["sources"]["kprobe"]["values"] == [0]


@pytest.mark.parametrize("wrong", [10**9, (1 << 64) - 5_000_000, (1 << 64) - 10**12])  # the last: the unapplied write
def test_a_wrong_hit_fails(tmp_path: Path, wrong: int) -> None:
    v = verdict_of(align(*_with_hits(tmp_path, [f"tsc_offset={wrong} vcpu_id=0"])))
    assert v["verdict"] == "fail", v["reasons"]
    assert "unexplained_change" in {i["kind"] for i in v["offsets"]["issues"]}, v["offsets"]["issues"]


def test_hits_without_vcpu_id_or_of_another_vm_are_not_used(tmp_path: Path) -> None:
    v = verdict_of(align(*_with_hits(tmp_path, [f"tsc_offset={APPLIED + 10**9}", f"tsc_offset={APPLIED + 10**9} vcpu_id=7"])))
    assert v["verdict"] == "pass" and "kprobe" not in v["offsets"]["sources"], v["reasons"]


def test_a_kernel_table_definition_is_taken_only_as_tsalign_renders_it() -> None:
    """What a host registers from the controller's table: render's own line round-trips; another group, another
    register, another type, an extra fetch or a mismatched function name is refused."""
    line = render("kvm_arch_vcpu_load", 0xA48, 0x24)
    assert parse_definition(line) == ("kvm_arch_vcpu_load", 0xA48, 0x24)
    assert parse_definition(render("kvm_vcpu_kick", 0x9B0)) == ("kvm_vcpu_kick", 0x9B0, None)
    for bad in (line.replace("p:tsalign/", "p:other/"), line.replace("(%di)", "(%si)", 1),
                line.replace(":u64", ":u32"), line + " comm=$comm",
                line.replace("p:tsalign/kvm_arch_vcpu_load", "p:tsalign/kvm_vcpu_kick"), "-:tsalign/kvm_arch_vcpu_load"):
        with pytest.raises(InvalidParameter, match="as tsalign renders it"):
            parse_definition(bad)
