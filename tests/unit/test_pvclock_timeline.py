"""kvm-clock records as the host traces them -> per-vCPU timelines -> kvmclock ns back to guest TSC,
checked by hand and against the forward formula the guest uses (tsalign.clock.pvclock.tsc_to_kvmclock
is itself checked against the kernel's __pvclock_read_cycles in tests/unit/test_clock_tables.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tsalign.clock.pvclock import Pvclock, tsc_to_kvmclock
from tsalign.offsets.pvclock import PvclockTimeline, parse_pvclock_update

# a real record (this machine's micro-VM, kvm_pvclock_update as the kernel printed it)
LINE = ("vcpu_id 0, pvclock { version 2, tsc_timestamp 0x224affcc26dc, system_time 0x10100c, "
        "tsc_to_system_mul 0xd15ecc24, tsc_shift -1, flags 0x1 }")


def test_parse_the_kernels_text() -> None:
    u = parse_pvclock_update(123, LINE)
    assert u is not None and (u.host_tsc, u.vcpu, u.version, u.flags) == (123, 0, 2, 1)
    assert u.pv == Pvclock(0x10100C, 0x224AFFCC26DC, 0xD15ECC24, -1)
    assert parse_pvclock_update(1, LINE.replace("0xd15ecc24", "0x0")) is None  # mul 0 is no record
    assert parse_pvclock_update(1, "vcpu_id 0, something else") is None


def test_record_in_force_and_rounding_by_hand() -> None:
    a = parse_pvclock_update(10, LINE)
    b = parse_pvclock_update(20, LINE.replace("version 2", "version 4").replace("system_time 0x10100c", "system_time 0x20000000")
                             .replace("tsc_timestamp 0x224affcc26dc", "tsc_timestamp 0x224b00000000"))
    tl = PvclockTimeline.build([b, a])
    assert tl.record_for(0, 0x10100C) == (a, False) and tl.record_for(0, 0x1FFFFFFF) == (a, False)
    assert tl.record_for(0, 0x20000000) == (b, False) and tl.record_for(0, 5) == (a, True)
    assert tl.to_tsc(1, 5) is None
    # at system_time exactly: tsc_timestamp; 1 ns later: ceil(2^32 / mul) << 1 cycles later at most
    assert tl.to_tsc(0, 0x10100C) == (0x224AFFCC26DC, False)
    per_ns = -(-(1 << 32) // 0xD15ECC24)  # 2 (mul ~ 0.818 ns per (cycle >> 1))
    s = tl.summary()["vcpu0"]
    assert s["rounding_cycles"] == per_ns << 1 == 4 and s["updates"] == 2 and s["versions_increasing"] and s["tsc_stable"]
    assert not PvclockTimeline.build([parse_pvclock_update(30, LINE), b]).summary()["vcpu0"]["versions_increasing"]


@given(st.integers(0, 10**13))
def test_back_and_forth_within_the_rounding(delta: int) -> None:
    u = parse_pvclock_update(0, LINE)
    assert u is not None
    tl = PvclockTimeline.build([u])
    t = u.pv.tsc_timestamp + delta
    ns = tsc_to_kvmclock(t, u.pv)
    back, early = tl.to_tsc(0, ns)  # type: ignore[misc]
    assert not early and 0 <= t - back < tl.summary()["vcpu0"]["rounding_cycles"]
    assert tsc_to_kvmclock(back, u.pv) == ns


def test_a_record_that_steps_back_bounds_the_conversion_above() -> None:
    """Record b written 10^6 cycles after a, its system_time 3 ns below what a reads there: a reading made with
    a just before b (ns in the 3 ns overlap) is converted with b, above the truth — by at most above_cycles,
    computed by hand here (mul 0xd15ecc24, shift -1: 2^32/mul ~ 1.223 (cycles >> 1) per ns)."""
    from tsalign.clock.pvclock import kvmclock_to_tsc

    a = parse_pvclock_update(10, LINE)
    assert a is not None
    t_b = a.pv.tsc_timestamp + 10**6
    ns_at_b = tsc_to_kvmclock(t_b, a.pv)
    b = parse_pvclock_update(20, LINE.replace("version 2", "version 4")
                             .replace("tsc_timestamp 0x224affcc26dc", f"tsc_timestamp {t_b:#x}")
                             .replace("system_time 0x10100c", f"system_time {ns_at_b - 3:#x}"))
    assert b is not None
    tl = PvclockTimeline.build([a, b])
    above = tl.summary()["vcpu0"]["above_cycles"]
    # by hand: 3 ns past b's system_time is ceil(3 * 2^32 / mul) << 1 cycles past its tsc_timestamp
    assert above == -(-(3 << 32) // 0xD15ECC24) << 1 == 8
    # the worst reading: a's last ns before b, read with a at t_b - 1, converted with b
    ns = tsc_to_kvmclock(t_b - 1, a.pv)
    got, _ = tl.to_tsc(0, ns)  # type: ignore[misc]
    assert 0 < got - (t_b - 1) <= above and got == kvmclock_to_tsc(ns, b.pv)
    # a record that steps forward (or keeps on) leaves no overlap
    fwd = parse_pvclock_update(20, LINE.replace("tsc_timestamp 0x224affcc26dc", f"tsc_timestamp {t_b:#x}")
                               .replace("system_time 0x10100c", f"system_time {ns_at_b + 3:#x}"))
    assert PvclockTimeline.build([a, fwd]).summary()["vcpu0"]["above_cycles"] == 0  # type: ignore[list-item]


def test_a_beacon_whose_record_postdates_its_reading_is_not_stamped() -> None:
    """The micro-VM's kvm-clock stamps (verify.selftest): a beacon is stamped only with a record written at a guest
    TSC not after its reading, compared modulo 2^64 (a guest TSC offset of -1e12 wraps it near 2^64)."""
    from tsalign.capture.microvm import Beacon
    from tsalign.verify.selftest import _record_precedes

    def beacon(tsc: int, record_tsc: int | None) -> Beacon:
        return Beacon(0, tsc, pvclock=None if record_tsc is None else (2, record_tsc, 10**9, 0xD15ECC24, -1, 0))

    top = (1 << 64) - 10**6
    assert _record_precedes(beacon(5_000, 4_000)) and _record_precedes(beacon(5_000, 5_000))
    assert not _record_precedes(beacon(5_000, 5_001)) and not _record_precedes(beacon(5_000, None))
    assert _record_precedes(beacon(100, top))  # the record just before the wrap, the reading just after it
    assert not _record_precedes(beacon(top, 100))
