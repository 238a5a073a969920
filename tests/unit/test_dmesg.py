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
