"""Table tests of the clock conversions; every expected value is derived in the test by hand,
independently of the formulas under test (exact rational arithmetic on Python ints)."""

from __future__ import annotations

import pytest

from tsalign.clock import (
    PerfTimeConv,
    Pvclock,
    TscParams,
    cycles_to_ns,
    guest_to_host_tsc,
    host_to_guest_tsc,
    kvmclock_to_sched_ns,
    kvmclock_to_tsc,
    ns_to_cycles,
    perf_ns_to_tsc,
    sched_ns_to_kvmclock,
    tsc_to_kvmclock,
    tsc_to_perf_ns,
)
from tsalign.errors import InvalidParameter, Unavailable
from tsalign.numbers import parse_offset, to_signed64

TWO64 = 1 << 64
SEED_OFFSET = 0xFFEE6ABA03ECCAAC  # printed by the perf-prof note's kprobe on kvm_vcpu_kick


def test_seed_offset_is_negative() -> None:
    # 2**64 - 0xffee6aba03eccaac = 0x001195 45fc133554 = 4949202418480468 (python's int() does the
    # subtraction of two literals; nothing of tsalign is involved).
    magnitude = TWO64 - 0xFFEE6ABA03ECCAAC
    assert magnitude == 4949202418480468
    p = TscParams(offset=SEED_OFFSET)
    assert p.signed_offset == -4949202418480468 < 0
    # the same offset given signed, as debugfs prints it, is the same parameter
    assert TscParams(offset=-4949202418480468) == p
    assert parse_offset("-4949202418480468") == parse_offset("0xffee6aba03eccaac") == SEED_OFFSET


@pytest.mark.parametrize(
    "host, expected",
    [
        # guest = host - 4949202418480468: the guest booted ~22 days (at 2.6 GHz) after the host
        (5_000_000_000_000_000, 5_000_000_000_000_000 - 4_949_202_418_480_468),
        (4_949_202_418_480_468, 0),
        # host below |offset|: the guest TSC wraps below zero -> 2**64 - 1
        (4_949_202_418_480_467, TWO64 - 1),
    ],
)
def test_seed_offset_host_to_guest(host: int, expected: int) -> None:
    p = TscParams(offset=SEED_OFFSET)
    assert host_to_guest_tsc(host, p) == expected
    assert guest_to_host_tsc(expected, p) == host


@pytest.mark.parametrize(
    "frac, ratio_num, ratio_den, host, expected",
    [
        # Intel: ratio 1.5 in 16.48 fixed point; guest = floor(host * 3 / 2)
        (48, 3, 2, 2_000_000_000, 3_000_000_000),
        (48, 3, 2, 7, 10),  # 10.5 -> 10
        # AMD: ratio 0.75 in 32.32 fixed point; guest = floor(host * 3 / 4)
        (32, 3, 4, 4, 3),
        (32, 3, 4, 1_000_001, 750_000),  # 750000.75 -> 750000
        # a huge host TSC whose product needs 128 bits: 2**63 * 1.5 = 3 * 2**62 < 2**64
        (48, 3, 2, 1 << 63, 3 << 62),
    ],
)
def test_scaled_host_to_guest(frac: int, ratio_num: int, ratio_den: int, host: int, expected: int) -> None:
    ratio = (ratio_num << frac) // ratio_den  # exact for these fractions
    assert ratio * ratio_den == ratio_num << frac
    p = TscParams(offset=0, ratio=ratio, frac_bits=frac)
    assert p.scaled
    assert host_to_guest_tsc(host, p) == expected
    # the inverse is the smallest host TSC reaching the guest value: ceil(expected * den / num)
    assert guest_to_host_tsc(expected, p) == -(-expected * ratio_den // ratio_num)


def test_no_scaling_ratio_is_identity() -> None:
    for frac in (32, 48):
        p = TscParams(offset=5, ratio=1 << frac, frac_bits=frac)
        assert not p.scaled
        assert host_to_guest_tsc(TWO64 - 1, p) == 4  # wraps across 2**64
        assert guest_to_host_tsc(4, p) == TWO64 - 1


@pytest.mark.parametrize(
    "zero, mult, shift, tsc, ns",
    [
        # 2 GHz: 0.5 ns per cycle = 2**30 / 2**31
        (1_000, 1 << 30, 31, 10**12, 1_000 + 5 * 10**11),
        # 2.596 GHz as the kernel would encode it: mult = round(10**6 * 2**31 / 2596000)
        (0, 827238823, 31, 2_596_000_000, (2_596_000_000 * 827238823) >> 31),
        # quot * mult overflows 64 bits: the kernel's u64 result is the exact value mod 2**64
        (7, (1 << 32) - 1, 10, TWO64 - 1, (7 + (((TWO64 - 1) * ((1 << 32) - 1)) >> 10)) % TWO64),
    ],
)
def test_tsc_to_perf_ns(zero: int, mult: int, shift: int, tsc: int, ns: int) -> None:
    conv = PerfTimeConv(time_zero=zero, time_mult=mult, time_shift=shift)
    assert tsc_to_perf_ns(tsc, conv) == ns


def test_perf_ns_to_tsc_floor() -> None:
    # 2 GHz: tsc = floor((ns - zero) * 2)
    conv = PerfTimeConv(time_zero=1_000, time_mult=1 << 30, time_shift=31)
    assert perf_ns_to_tsc(1_000 + 5 * 10**11, conv) == 10**12
    # 3 GHz (mult/2**shift = 1/3 is not exact): tsc = floor(t * 2**31 / mult)
    mult = (1 << 31) // 3
    conv = PerfTimeConv(time_zero=0, time_mult=mult, time_shift=31)
    assert perf_ns_to_tsc(10**9, conv) == (10**9 << 31) // mult


def test_perf_time_short() -> None:
    # a 32-bit counter (arm64 style): the raw value is widened with time_cycles/time_mask first
    conv = PerfTimeConv(time_zero=0, time_mult=1, time_shift=0, time_cycles=0x1_0000_0000,
                        time_mask=0xFFFF_FFFF, cap_user_time_short=True)
    # raw 0x10 means 0x1_0000_0010 cycles; ns = cycles * 1 >> 0
    assert tsc_to_perf_ns(0x10, conv) == 0x1_0000_0010


def test_perf_without_time_zero_is_unavailable() -> None:
    conv = PerfTimeConv(time_zero=0, time_mult=1, time_shift=0, cap_user_time_zero=False)
    with pytest.raises(Unavailable, match="no-kvmclock"):
        tsc_to_perf_ns(1, conv)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(time_zero=0, time_mult=0, time_shift=31), "time_mult"),
        (dict(time_zero=0, time_mult=1 << 32, time_shift=31), "time_mult"),
        (dict(time_zero=0, time_mult=1, time_shift=64), "time_shift"),
        (dict(time_zero=TWO64, time_mult=1, time_shift=1), "time_zero"),
    ],
)
def test_perf_bad_params(kwargs: dict, name: str) -> None:
    with pytest.raises(InvalidParameter) as exc:
        PerfTimeConv(**kwargs)
    assert exc.value.name == name


def test_tsc_params_bad() -> None:
    with pytest.raises(InvalidParameter, match="frac bits"):
        TscParams(frac_bits=64)
    with pytest.raises(InvalidParameter, match="64-bit offset"):
        TscParams(offset=TWO64)
    with pytest.raises(InvalidParameter, match="64-bit offset"):
        TscParams(offset=-(1 << 63) - 1)


@pytest.mark.parametrize(
    "mul, shift",
    [
        (1 << 31, 0),  # 0.5 ns per cycle directly
        (1 << 30, 1),  # delta << 1, then * 0.25
        (1 << 29, 2),  # delta << 2, then * 0.125
    ],
)
def test_pvclock_half_ns_per_cycle(mul: int, shift: int) -> None:
    # every (mul, shift) here encodes exactly 0.5 ns per cycle: ns = system_time + (tsc - ts) // 2
    pv = Pvclock(system_time=10**9, tsc_timestamp=5_000, tsc_to_system_mul=mul, tsc_shift=shift)
    assert tsc_to_kvmclock(5_000 + 2_001, pv) == 10**9 + 1_000
    assert kvmclock_to_tsc(10**9 + 1_000, pv) == 5_000 + 2_000  # smallest TSC reaching it


def test_pvclock_negative_shift() -> None:
    # delta >> 1, then * 1.0 (mul 2**32 - 1 ~ 1 - 2**-32): 10 cycles -> 5 -> floor(4.99..) = 4
    pv = Pvclock(system_time=0, tsc_timestamp=0, tsc_to_system_mul=(1 << 32) - 1, tsc_shift=-1)
    assert tsc_to_kvmclock(10, pv) == 4


def test_sched_clock_offsets() -> None:
    # guest booted when kvmclock read 3 s: sched_clock = kvmclock - 3 s (+ __sched_clock_offset)
    assert kvmclock_to_sched_ns(5 * 10**9, 3 * 10**9) == 2 * 10**9
    assert kvmclock_to_sched_ns(5 * 10**9, 3 * 10**9, 7) == 2 * 10**9 + 7
    assert sched_ns_to_kvmclock(2 * 10**9 + 7, 3 * 10**9, 7) == 5 * 10**9


def test_display_conversions() -> None:
    assert cycles_to_ns(2_596_000, 2_596_000) == 1_000_000  # 1 ms of cycles at 2.596 GHz
    assert ns_to_cycles(1_000, 2_596_000) == 2_596
    assert cycles_to_ns(-2_596, 2_596_000) == -1_000
    with pytest.raises(InvalidParameter):
        cycles_to_ns(1, 0)


def test_to_signed64() -> None:
    assert to_signed64(TWO64 - 1) == -1
    assert to_signed64(1 << 63) == -(1 << 63)
    assert to_signed64((1 << 63) - 1) == (1 << 63) - 1
