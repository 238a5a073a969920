"""OffsetTimeline: segments from snapshots and kvm_write_tsc_offset events; issues reported."""

from __future__ import annotations

import numpy as np
import pytest

from tsalign.clock.kvm import TscParams, host_to_guest_tsc
from tsalign.errors import InconsistentData
from tsalign.offsets import OffsetSnapshot, OffsetTimeline, OffsetWrite

SEED = 0xFFEE6ABA03ECCAAC


def snap(t: int, vcpu: int, off: int, source: str = "debugfs") -> OffsetSnapshot:
    return OffsetSnapshot(t, vcpu, TscParams(offset=off), source)


def kinds(tl: OffsetTimeline) -> list:
    return [i.kind for i in tl.issues]


def test_constant_offset_from_two_snapshots() -> None:
    tl = OffsetTimeline.build([snap(100, 0, SEED), snap(900, 0, SEED), snap(100, 1, SEED), snap(900, 1, SEED)])
    assert tl.issues == []
    assert tl.params_at(0, 50).offset == SEED  # before the start snapshot: same value assumed
    assert tl.host_to_guest(1, 5_000_000_000_000_000) == 5_000_000_000_000_000 - 4_949_202_418_480_468


def test_write_event_explained_by_end_snapshot() -> None:
    tl = OffsetTimeline.build(
        [snap(100, 0, 0), snap(900, 0, 1000)],
        [OffsetWrite(500, 0, prev=0, next=1000)],
    )
    assert tl.issues == []
    assert tl.params_at(0, 499).offset == 0
    assert tl.params_at(0, 500).offset == 1000
    assert [s.source for s in tl.segments[0]] == ["debugfs", "kvm_write_tsc_offset"]


def test_write_not_applied_is_reported_and_snapshot_trusted() -> None:
    # what PVM does here: the tracepoint says next=1000, debugfs keeps reading 0
    tl = OffsetTimeline.build(
        [snap(100, 0, 0), snap(900, 0, 0)],
        [OffsetWrite(500, 0, prev=0, next=1000)],
    )
    assert kinds(tl) == ["write_not_applied"]
    assert tl.params_at(0, 700).offset == 0
    assert len(tl.segments[0]) == 1


def test_prev_mismatch() -> None:
    tl = OffsetTimeline.build([snap(100, 0, 5), snap(900, 0, 1000)], [OffsetWrite(500, 0, prev=7, next=1000)])
    assert kinds(tl) == ["prev_mismatch"]
    assert "prev=0x7" in tl.issues[0].message


def test_unexplained_change_marks_interval() -> None:
    tl = OffsetTimeline.build([snap(100, 0, 5), snap(900, 0, 6)])
    (issue,) = tl.issues
    assert issue.kind == "unexplained_change"
    assert (issue.host_tsc, issue.until_host_tsc) == (100, 900)
    assert tl.params_at(0, 899).offset == 5 and tl.params_at(0, 900).offset == 6


def test_vcpus_disagree() -> None:
    tl = OffsetTimeline.build([snap(100, 0, 5), snap(100, 1, 6)])
    assert kinds(tl) == ["vcpus_disagree"]
    with pytest.raises(InconsistentData, match="disagree"):
        tl.vm_params_at(200)


def test_writes_only_uses_prev_as_initial() -> None:
    tl = OffsetTimeline.build([], [OffsetWrite(500, 2, prev=3, next=4)])
    assert tl.params_at(2, 0).offset == 3 and tl.params_at(2, 600).offset == 4


def test_unknown_vcpu_is_an_error() -> None:
    tl = OffsetTimeline.build([snap(100, 0, 5)])
    with pytest.raises(InconsistentData, match="vcpu3"):
        tl.params_at(3, 0)
    with pytest.raises(InconsistentData, match=r"\[3\]"):
        tl.host_to_guest_many([0, 3], [1, 2])


def test_vectorised_lookup_matches_scalar() -> None:
    tl = OffsetTimeline.build(
        [snap(100, 0, 0), snap(900, 0, 1000), OffsetSnapshot(100, 1, TscParams(SEED, 3 << 47, 48))],
        [OffsetWrite(500, 0, prev=0, next=1000)],
    )
    rng = np.random.default_rng(1)
    vcpus = rng.integers(0, 2, 1000)
    host = rng.integers(0, 1000, 1000).astype(np.uint64)
    got = tl.host_to_guest_many(vcpus, host)
    want = [tl.host_to_guest(int(v), int(h)) for v, h in zip(vcpus, host)]
    assert [int(x) for x in got] == want


def test_vectorised_lookup_at_other_times_matches_scalar() -> None:
    """Thousands of segments (the nested lab has ~30k per vCPU), params looked up at a second time, as
    params_at finds them (before the first segment: the first)."""
    rng = np.random.default_rng(2)
    snaps = [snap(int(t), int(v), int(o)) for t, v, o in
             zip(rng.integers(1, 10**6, 4000), rng.integers(0, 3, 4000), rng.integers(0, 1 << 63, 4000))]
    tl = OffsetTimeline.build(snaps)
    vcpus = rng.integers(0, 3, 20000)
    host = rng.integers(0, 10**6, 20000).astype(np.uint64)
    at = rng.integers(0, 10**6, 20000).astype(np.uint64)
    got = tl.host_to_guest_many(vcpus, host, at)
    want = [host_to_guest_tsc(int(h), tl.params_at(int(v), int(a))) for v, h, a in zip(vcpus, host, at)]
    assert [int(x) for x in got] == want


def test_no_source() -> None:
    assert kinds(OffsetTimeline.build([])) == ["no_source"]


def test_segments_have_signed_and_hex() -> None:
    tl = OffsetTimeline.build([snap(1, 0, SEED)])
    seg = next(tl.segment_rows())
    assert seg["offset_hex"] == "0xffee6aba03eccaac" and seg["offset_signed"] == -4949202418480468
    assert tl.to_dict()["vcpus"]["0"]["first"] == [{k: v for k, v in seg.items() if k != "vcpu"}]


def test_summary_keeps_the_first_and_last_segments() -> None:
    tl = OffsetTimeline.build([snap(10 * i, 0, i % 3) for i in range(1, 12)])
    rows = list(tl.segment_rows())
    d = tl.to_dict(keep=2)["vcpus"]["0"]
    assert d["segments"] == len(rows) == 11 and d["distinct_offsets"] == 3
    assert [r["start_host_tsc"] for r in d["first"] + d["last"]] == [0, 20, 100, 110]  # the first segment reaches back
    short = OffsetTimeline.build([snap(10, 0, 1), snap(20, 0, 2), snap(30, 0, 3)]).to_dict(keep=2)["vcpus"]["0"]
    assert [r["start_host_tsc"] for r in short["first"] + short["last"]] == [0, 20, 30]  # none twice


def test_snapshot_read_while_a_write_was_applied_is_consistent() -> None:
    # seen on the nested lab (L1 under TCG, ~330 writes/s): kvm_write_tsc_offset fires before KVM
    # stores the offset, and the debugfs read between rdtsc() 400 and 600 saw either value
    old_value = [OffsetSnapshot(100, 0, TscParams(0)), OffsetSnapshot(400, 0, TscParams(0), read_until=600)]
    writes = [OffsetWrite(500, 0, prev=0, next=1000), OffsetWrite(800, 0, prev=1000, next=2000)]
    tl = OffsetTimeline.build(old_value, writes)
    assert tl.issues == [] and tl.raced == 1
    assert tl.params_at(0, 700).offset == 1000 and tl.params_at(0, 900).offset == 2000
    new_value = [OffsetSnapshot(100, 0, TscParams(0)), OffsetSnapshot(400, 0, TscParams(1000), read_until=600)]
    tl = OffsetTimeline.build(new_value, writes)
    assert tl.issues == [] and tl.raced == 0
    assert tl.to_dict()["snapshots_read_during_a_write"] == 0


def test_snapshot_race_needs_the_write_inside_the_read_window() -> None:
    # the same old value read after the read window closed is a write the hypervisor never applied
    snaps = [OffsetSnapshot(100, 0, TscParams(0)), OffsetSnapshot(520, 0, TscParams(0), read_until=600)]
    tl = OffsetTimeline.build(snaps, [OffsetWrite(500, 0, prev=0, next=1000)])
    assert kinds(tl) == ["write_not_applied"] and tl.raced == 0
    # a value the vCPU never had inside the window is still a contradiction
    snaps = [OffsetSnapshot(100, 0, TscParams(0)), OffsetSnapshot(400, 0, TscParams(77), read_until=600)]
    tl = OffsetTimeline.build(snaps, [OffsetWrite(500, 0, prev=0, next=1000)])
    assert kinds(tl) == ["unexplained_change"]


def test_debugfs_read_spanning_writes_and_kprobe_hits() -> None:
    # the lab's case: a debugfs read took 20 M cycles (L1 under TCG); meanwhile vcpu0's offset was written three
    # times and the kprobe read it twice; debugfs returned the value the second write set
    writes = [OffsetWrite(200, 0, prev=0, next=10), OffsetWrite(400, 0, prev=10, next=20), OffsetWrite(600, 0, prev=20, next=30)]
    snaps = [OffsetSnapshot(100, 0, TscParams(0)),
             OffsetSnapshot(150, 0, TscParams(20), read_until=700),            # debugfs: [150, 700]
             OffsetSnapshot(450, 0, TscParams(20), "kprobe", read_until=500),  # kprobe hits in between
             OffsetSnapshot(640, 0, TscParams(30), "kprobe", read_until=650)]
    tl = OffsetTimeline.build(snaps, writes)
    assert tl.issues == [] and tl.raced == 1
    assert [tl.params_at(0, t).offset for t in (199, 200, 400, 600, 10_000)] == [0, 10, 20, 30, 30]
    # a value the vCPU never held in the window is still a disagreement, and segment starts stay ordered
    snaps[1] = OffsetSnapshot(150, 0, TscParams(99), read_until=700)
    tl = OffsetTimeline.build(snaps, writes)
    assert "unexplained_change" in kinds(tl)
    starts = [s.start for s in tl.segments[0]]
    assert starts == sorted(starts)


def test_guest_axis_frequency_follows_tsc_scaling() -> None:
    """ns on the guest axis: the guest's stated kHz, else the host's scaled by the vCPUs' ratio (by hand:
    2 000 000 kHz * 1.5 = 3 000 000 kHz), else the host's; mixed ratios give cycles only."""
    from tsalign.align.merge import guest_axis_khz

    scaled = TscParams(5, 3 << 47, 48)  # ratio 1.5 in 16.48 fixed point
    t = OffsetTimeline.build([OffsetSnapshot(0, 0, scaled), OffsetSnapshot(0, 1, scaled)])
    khz, note = guest_axis_khz(2_000_000, 0, t)
    assert khz == 3_000_000 and note is not None and f"{3 << 47}/2^48" in note
    assert guest_axis_khz(2_000_000, 2_999_000, t) == (2_999_000, None)
    plain = OffsetTimeline.build([OffsetSnapshot(0, 0, TscParams(5))])
    assert guest_axis_khz(2_000_000, 0, plain) == (2_000_000, None)
    mixed = OffsetTimeline.build([OffsetSnapshot(0, 0, scaled), OffsetSnapshot(0, 1, TscParams(5))])
    khz, note = guest_axis_khz(2_000_000, 0, mixed)
    assert khz == 0 and note is not None and "cycles only" in note
