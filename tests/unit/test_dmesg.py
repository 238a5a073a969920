"""Clock facts read from a kernel log (tsalign.node.dmesg), on lines as real kernels print them."""

from __future__ import annotations

from tsalign.node import dmesg

# Debian 6.1 guest on KVM (this machine's own boot, and the nested lab's L2)
LOG = """[    0.000000] kvm-clock: Using msrs 4b564d01 and 4b564d00
[    0.000001] kvm-clock: using sched offset of 62356922 cycles
[    0.000004] clocksource: kvm-clock: mask: 0xffffffffffffffff max_cycles: 0x1cd42e4dffb, max_idle_ns: 881590591483 ns
[    0.000140] tsc: Detected 2596.098 MHz processor"""


def test_kvm_sched_offset_from_log() -> None:
    assert dmesg.kvm_sched_offset_from_log(LOG) == 62356922
    assert dmesg.sched_clock_from_log(LOG) == "kvm-clock"
    assert dmesg.tsc_khz_from_log(LOG) == 2596098
    # no line (a native machine, or a log rotated past boot), two different values, or a value beyond 64 bits
    assert dmesg.kvm_sched_offset_from_log("[    0.000000] tsc: Detected 2596.098 MHz processor") is None
    assert dmesg.kvm_sched_offset_from_log(LOG + "\n" + LOG.replace("62356922", "5")) is None
    assert dmesg.kvm_sched_offset_from_log(LOG.replace("62356922", str(1 << 64))) is None
    assert dmesg.kvm_sched_offset_from_log(LOG + "\n" + LOG) == 62356922  # the same line twice (a re-read log)


def test_sched_clock_stable_from_log() -> None:
    """The last mark wins (this machine's 6.18 prints "Marking stable"); a log holding the boot without a mark is a
    kernel that cleared it before late init (the nested lab's L2: kvm-clock without a TSC-stable pvclock); a log
    rotated past boot says nothing."""
    boot = "[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC\n"
    stable = "[    0.449468] sched_clock: Marking stable (444015597, 1670830)->(470335057, -24648630)"
    unstable = "[  312.000001] sched_clock: Marking unstable (312000001, 0)<-(311999000, 1000)"
    assert dmesg.sched_clock_stable_from_log(boot + LOG + "\n" + stable) is True
    assert dmesg.sched_clock_stable_from_log(boot + stable + "\n" + unstable) is False
    assert dmesg.sched_clock_stable_from_log(boot + LOG) is False
    assert dmesg.sched_clock_stable_from_log(LOG) is None
