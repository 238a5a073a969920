"""Prechecks against recorded trees of other real machines (--root), for what this machine cannot
show. Each tree's SOURCE file says where it was recorded."""

from __future__ import annotations

from pathlib import Path

from tsalign.node.checks import run_checks
from tsalign.node.fs import Root

TREES = Path(__file__).resolve().parents[1] / "fixtures" / "trees"


def test_no_kvmclock_guest_with_kprobe_events() -> None:
    tree = TREES / "debian12-tcg-no-kvmclock"
    assert "no-kvmclock" in (tree / "SOURCE").read_text()
    guest = run_checks(Root(str(tree)), "guest")
    assert guest.kernel == "6.1.0-50-amd64"
    assert guest.check("kernel_cmdline").status == "ok" and guest.check("kernel_cmdline").value["no_kvmclock"]
    assert guest.check("sched_clock").value == "tsc"
    assert guest.check("clocksource").value["current"] == "tsc"
    # TCG: constant_tsc but no nonstop_tsc -> the invariant-TSC fix is named
    flags = guest.check("tsc_flags")
    assert flags.status == "warn" and not flags.value["nonstop_tsc"] and "invtsc" in flags.fix
    assert guest.tsc_khz is not None and 2_000_000 < guest.tsc_khz < 5_000_000
    host = run_checks(Root(str(tree)), "host")
    kp = host.check("kprobe_events")
    assert kp.status == "ok" and kp.value["kprobe_events"] is True
    assert kp.value["tsalign_kprobes"] == ["p:tsalign/kvm_vcpu_kick kvm_vcpu_kick tsc_offset=+0x9b0(%di):u64"]
    assert host.check("perf_tsc_conversion").status == "skip"  # a live-only probe
