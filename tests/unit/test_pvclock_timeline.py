"""kvm-clock records as the host traces them -> per-vCPU timelines -> kvmclock ns back to guest TSC,
checked by hand and against the forward formula the guest uses (tsalign.clock.pvclock.tsc_to_kvmclock
is itself checked against the kernel's __pvclock_read_cycles in tests/unit/test_clock_tables.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tsalign.clock.pvclock import Pvclock, kvmclock_to_tsc, tsc_to_kvmclock
from tsalign.offsets.pvclock import PvclockTimeline, PvclockUpdate, parse_pvclock_update

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


def _record(host: int, version: int, tsc: int, system_time: int, mul: int = 0xD15ECC24) -> PvclockUpdate:
    u = parse_pvclock_update(host, LINE.replace("version 2", f"version {version}")
                             .replace("tsc_timestamp 0x224affcc26dc", f"tsc_timestamp {tsc:#x}")
                             .replace("system_time 0x10100c", f"system_time {system_time:#x}")
                             .replace("0xd15ecc24", f"{mul:#x}"))
    assert u is not None
    return u


def _every_reading(written: list[PvclockUpdate], tail: int) -> tuple[PvclockTimeline, list[int], int]:
    """Each record read at every guest TSC from its tsc_timestamp to the next write (the last one at least ``tail``
    cycles on and up to the latest ns any record gave: it is in force to the trace's end), each reading's ns (the
    guest's own formula) converted back: the errors (converted - truth, cycles) and the latest ns read (the
    summary's horizon). The brute force the bound is checked against."""
    tl = PvclockTimeline.build(written)
    errors, latest = [], 0
    for k, a in enumerate(written):
        stop = written[k + 1].pv.tsc_timestamp if k + 1 < len(written) else a.pv.tsc_timestamp + tail
        t = a.pv.tsc_timestamp
        while t < stop or (k + 1 == len(written) and tsc_to_kvmclock(t, a.pv) <= latest):
            ns = tsc_to_kvmclock(t, a.pv)
            latest = max(latest, ns)
            errors.append(tl.to_tsc(0, ns)[0] - t)  # type: ignore[index]
            t += 1
    return tl, errors, latest


def test_a_record_that_steps_back_bounds_the_conversion_above() -> None:
    """Record b written 10^6 cycles after a, its system_time 3 ns below what a reads there: a reading made with
    a just before b (ns in the 3 ns overlap) is converted with b, above the truth (mul 0xd15ecc24, shift -1:
    2^32/mul ~ 1.223 (cycles >> 1) per ns, 4 cycles a step). By hand: 3 ns past b's system_time is
    ceil(3 * 2^32 / mul) << 1 = 8 cycles past its tsc_timestamp, so a reading one cycle before b, converted with b,
    lies ~8 cycles above the truth; the bound adds both records' rounding (4 + 4)."""
    a = _record(10, 2, 0x224AFFCC26DC, 0x10100C)
    t_b = a.pv.tsc_timestamp + 10**6
    b = _record(20, 4, t_b, tsc_to_kvmclock(t_b, a.pv) - 3)
    tl = PvclockTimeline.build([a, b])
    s = tl.summary()["vcpu0"]
    assert -(-(3 << 32) // 0xD15ECC24) << 1 == 8 and s["above_cycles"] == 8 + 4 + 4
    # the worst reading: a's last ns before b, read with a at t_b - 1, converted with b: above, within the bound
    ns = tsc_to_kvmclock(t_b - 1, a.pv)
    got, _ = tl.to_tsc(0, ns)  # type: ignore[misc]
    assert 0 < got - (t_b - 1) <= s["above_cycles"] and got == kvmclock_to_tsc(ns, b.pv)
    # a record that steps forward (or keeps on) leaves no overlap
    fwd = _record(20, 4, t_b, tsc_to_kvmclock(t_b, a.pv) + 3)
    assert PvclockTimeline.build([a, fwd]).summary()["vcpu0"]["above_cycles"] == 0


def test_steps_back_that_add_up_over_several_records() -> None:
    """Five records 600 cycles apart, each 200 ns below what the one before reads at its tsc_timestamp (KVM's
    records on L1's unstable TSC under load): a reading made with the first record late in its span has ns that
    three later records' system_times lie below, and is converted with the third — ~3 steps (~1 470 cycles) above
    the truth, where one step (~490 cycles) is all a pair of consecutive records shows. Checked against every
    reading the records allow, converted back (brute force, the guest's own formula)."""
    written = [_record(0, 2, 10**9, 5 * 10**8)]
    for k in range(4):
        t = written[-1].pv.tsc_timestamp + 600
        written.append(_record(k + 1, 4 + 2 * k, t, tsc_to_kvmclock(t, written[-1].pv) - 200))
    tl, errors, latest = _every_reading(written, 2000)
    s = tl.summary(until_ns=latest)["vcpu0"]
    step = -(-(200 << 32) // 0xD15ECC24) << 1  # one 200 ns step in cycles, by hand: 490
    assert step == 490 and max(errors) > 2 * step  # steps added up: beyond any consecutive pair's overlap
    assert -s["below_cycles"] < min(errors) and max(errors) <= s["above_cycles"] <= max(errors) + 16
    assert min(errors) > -s["rounding_cycles"] and s["below_cycles"] == s["rounding_cycles"]  # none below


def test_a_record_stepping_back_below_an_earlier_one_is_converted_below() -> None:
    """Record c steps back 1 000 ns: below b's system_time, which was written only 600 cycles (~490 ns) before. c's
    own readings in [b's system_time, a's line) are converted with b, an earlier line — below the truth by more
    than the rounding, which below_cycles now states (brute force as above)."""
    a = _record(0, 2, 10**9, 5 * 10**8)
    b = _record(1, 4, a.pv.tsc_timestamp + 600, tsc_to_kvmclock(a.pv.tsc_timestamp + 600, a.pv))
    c = _record(2, 6, b.pv.tsc_timestamp + 600, tsc_to_kvmclock(b.pv.tsc_timestamp + 600, b.pv) - 1000)
    tl, errors, latest = _every_reading([a, b, c], 3000)
    s = tl.summary(until_ns=latest)["vcpu0"]
    assert min(errors) < -4 * s["rounding_cycles"]  # converted below, far beyond the rounding
    assert -s["below_cycles"] < min(errors) <= -s["below_cycles"] + 16 and max(errors) <= s["above_cycles"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 900), st.integers(-700, 60), st.sampled_from([0xD15ECC24, 0xD15EC000])),
                min_size=1, max_size=6))
def test_every_reading_within_the_bounds(steps: list[tuple[int, int, int]]) -> None:
    """Any run of records (written 1-900 cycles apart, each -700..+60 ns off the line before, two multipliers): no
    reading any record allows converts back beyond the stated bounds, which stay within the rounding of the worst
    reading (brute force as above)."""
    written = [_record(0, 2, 10**9, 5 * 10**8)]
    for k, (gap, step_ns, mul) in enumerate(steps):
        t = written[-1].pv.tsc_timestamp + gap
        written.append(_record(k + 1, 4 + 2 * k, t, tsc_to_kvmclock(t, written[-1].pv) + step_ns, mul))
    tl, errors, latest = _every_reading(written, 900)
    s = tl.summary(until_ns=latest)["vcpu0"]
    assert -s["below_cycles"] < min(errors) and max(errors) <= s["above_cycles"], (min(errors), max(errors), s)
    assert s["above_cycles"] <= max(0, max(errors)) + 16 and s["below_cycles"] <= max(4, -min(errors)) + 16


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
