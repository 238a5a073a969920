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


def test_host_with_tsc_scaling_files_synthetic(tmp_path: Path) -> None:
    """SYNTHETIC, not recorded: no machine here has TSC scaling (PVM has no tsc-scaling-ratio files),
    so this tree is written by the test in the layout and number formats of KVM's debugfs
    (arch/x86/kvm/debugfs.c: tsc-offset signed decimal, tsc-scaling-ratio and
    tsc-scaling-ratio-frac-bits unsigned decimal) to exercise the scaling path end to end."""
    from tsalign.clock.kvm import TscParams, host_to_guest_tsc
    from tsalign.node.kvmvms import discover_vms
    from tsalign.offsets import OffsetSnapshot, OffsetTimeline

    ratio = (1 << 48) * 4 // 5  # a 2.0 GHz guest on a 2.5 GHz host, Intel 16.48 fixed point
    vm = tmp_path / "sys/kernel/debug/kvm/4242-17"
    for v in (0, 1):
        d = vm / f"vcpu{v}"
        d.mkdir(parents=True)
        (d / "tsc-offset").write_text("-123456789\n")
        (d / "tsc-scaling-ratio").write_text(f"{ratio}\n")
        (d / "tsc-scaling-ratio-frac-bits").write_text("48\n")
        (d / "pid").write_text(f"{5000 + v}\n")
    proc = tmp_path / "proc/4242"
    proc.mkdir(parents=True)
    (proc / "cmdline").write_text("qemu-system-x86_64\x00-name\x00guest=web-01,debug-threads=on\x00-uuid\x002b8f0d2e-1a6c-4c1e-9d3a-6f0c2a4e7b11\x00")
    (proc / "comm").write_text("qemu-system-x86\n")
    (vms,) = discover_vms(Root(str(tmp_path)))
    assert (vms.name, vms.uuid, vms.pid, vms.vm_fd) == ("web-01", "2b8f0d2e-1a6c-4c1e-9d3a-6f0c2a4e7b11", 4242, 17)
    assert [(v.id, v.tid, v.tsc_offset, v.tsc_scaling_ratio, v.tsc_scaling_ratio_frac_bits) for v in vms.vcpus] == [
        (0, 5000, -123456789, ratio, 48), (1, 5001, -123456789, ratio, 48)]
    assert vms.offsets_agree
    p = TscParams(vms.vcpus[0].tsc_offset, ratio, 48)
    tl = OffsetTimeline.build([OffsetSnapshot(0, v.id, p) for v in vms.vcpus])
    # 2.5e9 host cycles are 2.0e9 guest cycles less a fraction (the ratio is 0.8 * 2**48 rounded
    # down, so the product lands just under 2e9 and floors to 1999999999), minus |offset|
    assert ratio * 5 < 4 << 48
    assert tl.host_to_guest(1, 2_500_000_000) == host_to_guest_tsc(2_500_000_000, p) == 1_999_999_999 - 123456789


def test_kvm_clock_guest_whose_sched_clock_is_not_stable(tmp_path: Path) -> None:
    """SYNTHETIC tree, from lines the nested lab's L2 printed (Debian 6.1 on KVM, kvm-clock not TSC-stable: no
    "sched_clock: Marking stable" after boot): the sched_clock check names the routes and warns that perf's
    timestamps lag there; the same log with the mark (this machine's) does not."""
    boot = ("[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC\n"
            "[    0.000000] kvm-clock: Using msrs 4b564d01 and 4b564d00\n"
            "[    0.000359] kvm-clock: using sched offset of 4792239846 cycles\n")
    for log, lags in ((boot, True), (boot + "[    0.449468] sched_clock: Marking stable (444015597, 1670830)->"
                                            "(470335057, -24648630)\n", False)):
        (tmp_path / "var/log").mkdir(parents=True, exist_ok=True)
        (tmp_path / "var/log/dmesg").write_text(log)
        (tmp_path / "proc").mkdir(exist_ok=True)
        (tmp_path / "proc/cmdline").write_text("BOOT_IMAGE=/boot/vmlinuz root=/dev/vda1 ro console=ttyS0\n")
        c = run_checks(Root(str(tmp_path)), "guest").check("sched_clock")
        assert (c.status, c.value) == ("warn", "kvm-clock") and "host pvclock (local clock)" in c.evidence, c
        assert ("never marked stable" in c.evidence) is lags, c.evidence
