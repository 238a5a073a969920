"""Analyses on hand-made timelines whose answers can be checked by hand (guest TSC cycles, 1 GHz: 1 cycle = 1 ns)."""

from __future__ import annotations

from typing import Any

from tsalign.analyze.io import analyze_io
from tsalign.analyze.irq import analyze_irq
from tsalign.analyze.vcpu import analyze_vcpu

KHZ = 1_000_000  # 1 GHz


def ev(t: int, side: str, event: str, payload: str, cpu: int = 0, pid: int = 0, tgid: int = -1) -> dict[str, Any]:
    return {"guest_tsc": t, "side": side, "event": event, "payload": payload, "cpu": cpu, "pid": pid, "tgid": tgid,
            "comm": "x", "track": f"cpu{cpu}"}


def sw(t: int, side: str, cpu: int, prev: tuple[str, int, str], nxt: tuple[str, int]) -> dict[str, Any]:
    return ev(t, side, "sched_switch", f"prev_comm={prev[0]} prev_pid={prev[1]} prev_prio=120 prev_state={prev[2]} "
                                        f"==> next_comm={nxt[0]} next_pid={nxt[1]} next_prio=120", cpu=cpu)


def test_irq_latency_per_line_and_unmatched() -> None:
    events = [
        ev(1000, "host", "kvm_set_irq", "gsi 4 level 1 source 0"),
        ev(1010, "host", "kvm_set_irq", "gsi 4 level 0 source 0"),  # lowering the line is not an injection
        ev(1500, "guest", "irq_handler_entry", "irq=4 name=ttyS0", cpu=1),  # 500
        ev(2000, "host", "kvm_set_irq", "gsi 11 level 1 source 0"),
        ev(2100, "host", "kvm_set_irq", "gsi 4 level 1 source 0"),
        ev(2300, "guest", "irq_handler_entry", "irq=4 name=ttyS0", cpu=0),  # 200 (gsi 4, not the later-matched 11)
        ev(2400, "guest", "irq_handler_entry", "irq=11 name=virtio0", cpu=0),  # 400
        ev(3000, "guest", "irq_handler_entry", "irq=9 name=acpi", cpu=0),  # nothing injected on 9
        ev(5000, "host", "kvm_set_irq", "gsi 1 level 1 source 0"),  # never handled
        ev(9000, "host", "kvm_msi_set_irq", "dst 0 vec 34 (Fixed|physical|edge)"),
        ev(9050, "guest", "irq_handler_entry", "irq=25 name=virtio1-req.0", cpu=1),  # MSI: matched by time, 50
    ]
    r = analyze_irq(events, KHZ)
    s = r.summary
    assert r.ok and s["matched"] == 4 and s["unmatched_handlers"] == 1 and s["unmatched_injections"] == 1
    assert sorted(x["latency_cycles"] for x in r.rows) == [50, 200, 400, 500]
    assert s["per_line"]["irq 4 (gsi 4)"]["cycles"]["max"] == 500 and s["per_vcpu"]["vcpu1"]["count"] == 2
    assert s["latency"]["ns"]["median"] == 200


def test_irq_missing_events_name_capture_options() -> None:
    r = analyze_irq([ev(1, "guest", "irq_handler_entry", "irq=1 name=x")], KHZ)
    assert not r.ok and r.to_dict()["status"] == "missing_events"
    cmd = r.needs[0].command()
    assert cmd.startswith("tsalign capture --role host") and "--events kvm:kvm_set_irq,kvm:kvm_msi_set_irq" in cmd


def test_vcpu_preemption_attributed_to_guest_task() -> None:
    vcpus = {501: 0, 502: 1}
    events = [
        sw(100, "guest", 0, ("swapper/0", 0, "R"), ("dd", 77)),
        sw(150, "guest", 1, ("swapper/1", 0, "R"), ("kworker/1:0", 12)),
        sw(200, "host", 0, ("CPU 0/KVM", 501, "R"), ("stress", 900)),  # vcpu0 preempted while dd runs
        sw(700, "host", 0, ("stress", 900, "R"), ("CPU 0/KVM", 501)),  # 500
        sw(800, "guest", 0, ("dd", 77, "S"), ("swapper/0", 0)),
        sw(900, "host", 1, ("CPU 1/KVM", 502, "S"), ("swapper/1", 0)),  # blocked (HLT), not preemption
        sw(1900, "host", 1, ("swapper/1", 0, "R"), ("CPU 1/KVM", 502)),
        sw(2000, "host", 0, ("CPU 0/KVM", 501, "R+"), ("stress", 900)),  # vcpu0 preempted while idle
        sw(2300, "host", 0, ("stress", 900, "R"), ("CPU 0/KVM", 501)),  # 300
        sw(2500, "guest", 1, ("kworker/1:0", 12, "S"), ("swapper/1", 0)),
        sw(2600, "host", 0, ("CPU 0/KVM", 501, "R"), ("stress", 900)),  # after the guest capture ended
        sw(2700, "host", 0, ("stress", 900, "R"), ("CPU 0/KVM", 501)),
    ]
    r = analyze_vcpu(events, vcpus, KHZ)
    assert r.summary["outside_guest_capture"] == 1
    assert r.ok
    rows = [(x["vcpu"], x["duration_cycles"], x["preempted"], x["guest_task"]) for x in r.rows]
    assert rows == [(0, 500, True, "dd-77"), (1, 1000, False, "kworker/1:0-12"), (0, 300, True, "swapper/0-0")]
    assert r.summary["top_tasks"][0] == {"task": "dd-77", "preemptions": 1, "total_cycles": 500, "total_ns": 500,
                                         "max_cycles": 500, "max_ns": 500}
    assert r.summary["blocked"]["count"] == 1 and len(r.slices) == 2


def test_io_breakdown() -> None:
    qemu = 4000
    events = [
        ev(1000, "guest", "block_rq_issue", "253,0 W 4096 () 2048 + 8 [dd]"),
        ev(1300, "host", "sys_enter_pwritev", "fd: 0x0000000c", pid=4010, tgid=qemu),
        ev(1900, "host", "sys_exit_pwritev", "0x1000", pid=4010, tgid=qemu),
        ev(1950, "host", "sys_enter_pwritev", "fd: 0x0000000c", pid=4011, tgid=qemu),
        ev(2100, "host", "sys_exit_pwritev", "0x1000", pid=4011, tgid=qemu),
        ev(2150, "host", "sys_enter_pwrite64", "fd: 3", pid=7777, tgid=7777),  # another process: ignored
        ev(2160, "host", "sys_exit_pwrite64", "0x1", pid=7777, tgid=7777),
        ev(2500, "guest", "block_rq_complete", "253,0 W () 2048 + 8 [0]"),
        ev(3000, "guest", "block_rq_issue", "253,0 R 4096 () 16 + 8 [cat]"),
        ev(3400, "guest", "block_rq_complete", "253,0 R () 16 + 8 [0]"),  # served without host IO (cache)
    ]
    r = analyze_io(events, qemu, KHZ)
    assert r.ok
    first = r.rows[0]
    assert (first["guest_to_host_cycles"], first["host_cycles"], first["host_to_guest_cycles"]) == (300, 800, 400)
    assert first["total_cycles"] == 1500 and first["host_calls"] == 2 and first["calls"] == ["pwritev"]
    assert r.summary["without_host_io"] == 1 and r.summary["completed"] == 2


def test_io_missing_host_events() -> None:
    r = analyze_io([ev(1, "guest", "block_rq_issue", "253,0 W 4096 () 1 + 8 [dd]"),
                    ev(2, "guest", "block_rq_complete", "253,0 W () 1 + 8 [0]")], 1, KHZ)
    assert [n.side for n in r.needs] == ["host"] and "syscalls:sys_enter_pwritev" in r.needs[0].command()


def test_beacons_refuse_bare_metal(tmp_path: Any) -> None:
    """Port beacons write to real hardware on bare metal: refused there (a recorded cpuinfo without the flag)."""
    import pytest

    from tsalign.errors import Unavailable
    from tsalign.node.beacon import in_vm, send_beacons

    metal = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr constant_tsc nonstop_tsc\n"
    guest = "processor\t: 0\nflags\t\t: fpu vme tsc constant_tsc hypervisor tsc_known_freq\n"
    assert not in_vm(metal) and in_vm(guest)
    (tmp_path / "cpuinfo").write_text(metal)
    with pytest.raises(Unavailable, match="inside the guest"):
        send_beacons(0x2F8, 1, cpuinfo=str(tmp_path / "cpuinfo"))


def test_port_beacon_offset_interval() -> None:
    """Brackets intersect: before - H <= offset <= after - H for each pair; the fd with N writes is the port's."""
    import pytest

    from tsalign.align.portbeacons import measure
    from tsalign.errors import InvalidParameter

    off = 5000
    hosts = [1000, 2000, 3000]
    beacons = [(i, h + off - 7 - i, h + off + 3 + i) for i, h in enumerate(hosts)]  # guest reads around each write
    r = measure(beacons, {13: hosts, 9: [1, 2, 3, 4, 5]})
    assert (r.lo, r.hi, r.fd, r.pairs) == (off - 7, off + 3, 13, 3) and r.offset == off - 2
    with pytest.raises(InvalidParameter, match="exactly one fd with 3 writes"):
        measure(beacons, {9: [1, 2]})
    # another fd written as often (seen: a TCG guest's other chardev, 100 writes like the 100 beacons): the one whose
    # writes fit the beacons' brackets with one offset is the port's; its writes' spacing does not fit them
    r = measure(beacons, {18: [1500, 1600, 3900], 13: hosts})
    assert (r.fd, r.lo, r.hi) == (13, off - 7, off + 3)
    with pytest.raises(InvalidParameter, match="exactly one fd with 3 writes"):  # both fit: still ambiguous
        measure(beacons, {18: [h + 1 for h in hosts], 13: hosts})


def test_analyses_of_columns_read_only_their_events() -> None:
    """`tsalign analyze` gives each analysis only the events it reads (tsalign.analyze.run): the same answers as all
    of them as dicts, with events no analysis reads mixed in on both sides (and named with their system). The vCPU
    analysis still knows the guest capture's span from every guest event: a guest event at 2800 (none it reads)
    puts the host switch at 2600..2700 inside it (0 outside instead of 1)."""
    from tests.unit.test_verify import _columns
    from tsalign.analyze.run import analyze

    noise = [ev(t, side, name, "x=1", cpu=c) for t, side, name, c in
             ((50, "guest", "timer:hrtimer_start", 0), (1200, "host", "kvm:kvm_exit", 1), (2800, "guest", "tsc_msr", 1))]
    vcpus = {501: 0, 502: 1}
    evs = sorted([*noise, sw(100, "guest", 0, ("swapper/0", 0, "R"), ("dd", 77)),
                  sw(200, "host", 0, ("CPU 0/KVM", 501, "R"), ("stress", 900)),
                  {**sw(700, "host", 0, ("stress", 900, "R"), ("CPU 0/KVM", 501)), "event": "sched:sched_switch"},
                  sw(2500, "guest", 1, ("kworker/1:0", 12, "S"), ("swapper/1", 0)),
                  sw(2600, "host", 0, ("CPU 0/KVM", 501, "R"), ("stress", 900)),
                  sw(2700, "host", 0, ("stress", 900, "R"), ("CPU 0/KVM", 501)),
                  ev(1000, "guest", "block_rq_issue", "253,0 W 4096 () 2048 + 8 [dd]"),
                  ev(1300, "host", "sys_enter_pwritev", "fd: 0x0000000c", pid=4010, tgid=4000),
                  ev(1900, "host", "sys_exit_pwritev", "0x1000", pid=4010, tgid=4000),
                  ev(2400, "guest", "block_rq_complete", "253,0 W () 2048 + 8 [0]"),
                  ev(1500, "host", "kvm_set_irq", "gsi 11 level 1 source 0"),
                  ev(1800, "guest", "irq_handler_entry", "irq=11 name=virtio0")], key=lambda e: e["guest_tsc"])
    cols = _columns(evs)
    assert len(cols.select(host={"sched_switch"}, guest=set())) == 4  # "sched:sched_switch" counted as its bare name
    for kind, whole in (("irq", lambda: analyze_irq(evs, KHZ)), ("vcpu", lambda: analyze_vcpu(evs, vcpus, KHZ)),
                        ("io", lambda: analyze_io(evs, 4000, KHZ))):
        mine, ref = analyze(kind, cols, KHZ, vcpus, 4000).to_dict(), whole().to_dict()
        assert mine == ref and ref["rows"], kind
    r = analyze("vcpu", cols, KHZ, vcpus, 4000)
    assert r.summary["outside_guest_capture"] == 0 and [x["duration_cycles"] for x in r.rows] == [500, 100]
    assert analyze("irq", cols, KHZ, vcpus, 4000).rows[0]["latency_cycles"] == 300


def _as_read(kind: str, host: list[dict[str, Any]], guest: list[dict[str, Any]]) -> Any:
    """The aligned columns of ``host`` and ``guest`` as `tsalign analyze KIND` reads a long capture: each side through
    its payload policy (tsalign.verify.judge.payload_policies with the analysis' held events: the rest in a spill,
    the evidence's events parsed as read)."""
    import numpy as np

    from tsalign.align.columns import AlignedColumns
    from tsalign.analyze.run import reads
    from tsalign.traces.events import EventsBuilder
    from tsalign.verify.judge import payload_policies

    parts = []
    for side, evs, policy in zip(("host", "guest"), (host, guest), payload_policies(reads(kind))):
        b = EventsBuilder(policy)
        n = len(evs)
        b.add_codes(np.asarray([e["guest_tsc"] for e in evs], dtype=np.uint64), np.asarray([e["cpu"] for e in evs]),
                    np.asarray([e["pid"] for e in evs]), np.asarray([e["tgid"] for e in evs]),
                    b.comm_codes(["x"] * n), b.name_codes([e["event"] for e in evs]), [e["payload"] for e in evs])
        got = b.build()
        parts.append(AlignedColumns.from_events(got, got.ts, side == "host", np.full(n, -1)))
    return AlignedColumns.merged(parts)


def _host_dicts(monkeypatch: Any, module: Any, name: str) -> list[int]:
    """How many host events each call of ``module.name`` (an analysis) is given as dicts."""
    seen: list[int] = []
    real = getattr(module, name)

    def counting(events: list[dict[str, Any]], *a: Any) -> Any:
        seen.append(sum(e["side"] == "host" for e in events))
        return real(events, *a)

    monkeypatch.setattr(module, name, counting)
    return seen


def test_vcpu_analysis_of_a_long_capture_reads_only_the_vcpu_threads_switches(monkeypatch: Any) -> None:
    """As `tsalign analyze vcpu` reads a long capture (its payload policy: the host's sched_switch parsed into pids as
    read, their text in the spill): the analysis is the same as of every event as a dict, but only the switches of a
    vCPU thread become dicts (their text read back from the spill); the host's other switches are never made into
    dicts nor held as text. A capture whose host switches are all other threads' still says so (not "no host
    sched_switch events")."""
    import tsalign.analyze.vcpu as vcpu_mod
    from tsalign.analyze.run import analyze

    vcpus = {501: 0, 502: 1}
    noise = [sw(10 + 7 * i, "host", 1, ("kworker", 40 + i, "S"), ("sshd", 90 + i)) for i in range(300)]
    host = sorted([*noise, sw(200, "host", 0, ("CPU 0/KVM", 501, "R"), ("stress", 900)),
                   sw(700, "host", 0, ("stress", 900, "R"), ("CPU 0/KVM", 501)),
                   sw(2600, "host", 0, ("CPU 1/KVM", 502, "S"), ("stress", 900)),
                   sw(2700, "host", 0, ("stress", 900, "R"), ("CPU 1/KVM", 502))], key=lambda e: e["guest_tsc"])
    guest = [sw(100, "guest", 0, ("swapper/0", 0, "R"), ("dd", 77)), sw(2500, "guest", 1, ("kworker/1:0", 12, "S"),
                                                                          ("swapper/1", 0))]
    cols = _as_read("vcpu", host, guest)
    assert not any(cols.payload[cols.is_host])  # no host switch's text held
    ref = analyze_vcpu(sorted(host + guest, key=lambda e: e["guest_tsc"]), vcpus, KHZ).to_dict()
    seen = _host_dicts(monkeypatch, vcpu_mod, "analyze_vcpu")
    mine = analyze("vcpu", cols, KHZ, vcpus, None).to_dict()
    assert mine == ref and [(r["vcpu"], r["duration_cycles"], r["guest_task"]) for r in mine["rows"]] == \
        [(0, 500, "dd-77")] and mine["summary"]["outside_guest_capture"] == 1  # 2600..2700: after the guest's last
    assert seen == [4]  # of 304 host switches
    # only other threads' switches: the capture has host switches, none of a vCPU thread
    r = analyze("vcpu", cols, KHZ, {777: 0}, None)
    assert not r.needs and "no vCPU thread was switched out and back in during the capture" in r.notes


def test_io_analysis_of_a_long_capture_reads_only_the_vm_process_calls(monkeypatch: Any) -> None:
    """The same for `tsalign analyze io`: the host's IO system calls are chosen by their TGID (the VM process's, or
    unknown), only theirs become dicts (text from the spill); other processes' calls are neither held nor made
    into dicts. Same answers as every event as a dict (test_io_breakdown's capture, with 400 other processes'
    calls)."""
    import tsalign.analyze.io as io_mod
    from tsalign.analyze.run import analyze

    qemu = 4000
    noise = [ev(1000 + 5 * i, "host", f"sys_{'enter' if i % 2 == 0 else 'exit'}_pread64", "fd: 3", pid=7000 + i // 2,
                tgid=7000 + i // 2) for i in range(400)]
    host = sorted([*noise, ev(1300, "host", "sys_enter_pwritev", "fd: 0x0000000c", pid=4010, tgid=qemu),
                   ev(1900, "host", "sys_exit_pwritev", "0x1000", pid=4010, tgid=qemu),
                   ev(1950, "host", "sys_enter_pwritev", "fd: 0x0000000c", pid=4011, tgid=qemu),
                   ev(2100, "host", "sys_exit_pwritev", "0x1000", pid=4011, tgid=qemu)], key=lambda e: e["guest_tsc"])
    guest = [ev(1000, "guest", "block_rq_issue", "253,0 W 4096 () 2048 + 8 [dd]"),
             ev(2500, "guest", "block_rq_complete", "253,0 W () 2048 + 8 [0]")]
    cols = _as_read("io", host, guest)
    assert not any(cols.payload[cols.is_host & (cols.tgid != qemu)])  # (the evidence holds write calls' text)
    ref = analyze_io(sorted(host + guest, key=lambda e: e["guest_tsc"]), qemu, KHZ).to_dict()
    seen = _host_dicts(monkeypatch, io_mod, "analyze_io")
    mine = analyze("io", cols, KHZ, {}, qemu).to_dict()
    assert mine == ref and mine["rows"][0]["host_cycles"] == 800 and mine["rows"][0]["host_calls"] == 2
    assert seen == [4]  # of 404 host calls


def test_top_must_be_a_positive_count() -> None:
    """--top -5 ranked all but the last five tasks (a slice from the end), exit 0: now refused, before any read."""
    import subprocess
    import sys
    from pathlib import Path

    ex = Path(__file__).resolve().parents[2] / "examples" / "selftest"
    for top in ("-5", "0", "100001"):
        r = subprocess.run([sys.executable, "-m", "tsalign", "analyze", "vcpu", "--host", str(ex / "host"), "--guest",
                            str(ex / "guest"), "--top", top, "-o", "/proc/self/never-made"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 3 and f"--top: invalid value {top}; expected a number of guest tasks" in r.stderr
