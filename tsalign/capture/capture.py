"""Capture host or guest events in the TSC domain into a bundle, with per-vCPU offset snapshots
(debugfs read between two rdtsc) at start and end and ``kvm:kvm_write_tsc_offset`` recorded."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..catalogue import DEFAULT_GUEST_EVENTS, DEFAULT_HOST_EVENTS, KPROBE_EVENTS
from ..clock.kvm import TscParams
from ..errors import InvalidParameter, Unavailable
from ..node import kvmvms, perfpage, tsc
from ..node.facts import node_facts
from ..node.fs import Root
from ..offsets import OffsetSnapshot
from ..traces.bundle import INCOMPLETE, LOCK, snapshot_to_dict, write_manifest
from .tracefs import TraceSession, check_event_name

__all__ = ["DEFAULT_GUEST_EVENTS", "DEFAULT_HOST_EVENTS", "Capture", "event_exists", "snapshot_vm"]


def snapshot_vm(vm: kvmvms.VmInfo, source: str = "debugfs") -> list[OffsetSnapshot]:
    """Re-read ``vm``'s per-vCPU TSC parameters from debugfs now; each read is stamped with the
    host TSC taken just before it and the one just after (``read_until``, cycles)."""
    out: list[OffsetSnapshot] = []
    if vm.debugfs_dir is None:
        return out
    for v in vm.vcpus:
        base = f"{vm.debugfs_dir}/vcpu{v.id}"
        t = tsc.rdtsc()
        try:
            with open(f"{base}/tsc-offset", encoding="utf-8") as f:
                off = int(f.read().strip())
        except (OSError, ValueError):
            continue
        ratio = frac = None
        try:
            with open(f"{base}/tsc-scaling-ratio", encoding="utf-8") as f:
                ratio = int(f.read().strip())
            with open(f"{base}/tsc-scaling-ratio-frac-bits", encoding="utf-8") as f:
                frac = int(f.read().strip())
        except (OSError, ValueError):
            pass
        out.append(OffsetSnapshot(t, v.id, TscParams(off, ratio or 0, frac if frac is not None else 48), source,
                                  read_until=tsc.rdtsc()))
    return out


@dataclass
class Capture:
    """One capture into directory ``out``. Use as a context manager around start()/stop()/finish():
    the tracefs instance is removed on every exit path; finish() writes the bundle.

    role: ``host`` (events on host TSC) or ``guest`` (guest TSC, or ``perf`` clock = perf ns);
    clock: ``x86-tsc`` or ``perf``; vms: the VMs whose offsets are snapshotted (host role).
    """

    out: str
    role: str = "host"
    events: Sequence[str] = DEFAULT_HOST_EVENTS
    clock: str = "x86-tsc"
    buffer_kb: int = 4096
    vms: list[kvmvms.VmInfo] = field(default_factory=list)
    snapshots: list[OffsetSnapshot] = field(default_factory=list)
    session: TraceSession | None = None
    started_tsc: int = 0
    stopped_tsc: int = 0
    t0: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: host role: also read each vCPU's offset from kernel memory (drgn): ``auto`` where it works, ``on``
    #: (an error where it does not), ``off``
    memory: str = "auto"
    _memory: Any = None
    _lock_fd: int | None = None
    _created: bool = False

    def __post_init__(self) -> None:
        if self.role not in ("host", "guest"):
            raise InvalidParameter("--role", self.role, "host or guest")
        if self.memory not in ("auto", "on", "off"):
            raise InvalidParameter("--memory-offsets", self.memory, "auto, on or off")
        if self.clock not in ("x86-tsc", "perf", "local"):
            raise InvalidParameter("--clock", self.clock, "x86-tsc (TSC cycles), perf (perf/local_clock ns) or local "
                                                          "(sched_clock ns)")
        if self.clock == "local" and self.role != "guest":
            raise InvalidParameter("--clock", self.clock, "x86-tsc on a host (local, sched_clock ns, is for a kvm-clock "
                                                          "guest: align converts it with the host's pvclock records)")
        for e in self.events:
            check_event_name(e)

    def __enter__(self) -> Capture:
        self._lock_out()
        try:
            available = [e for e in self.events if event_exists(e)]
            missing = sorted(set(self.events) - set(available))
            if missing:
                self.notes.append(f"events not on this kernel, skipped: {', '.join(missing)}"
                                  + (" (tsalign:* exists once `tsalign kprobe register` ran)" if KPROBE_EVENTS in missing else ""))
            if not available:
                raise Unavailable(f"none of the events {', '.join(self.events)} exists on this kernel")
            if self.role == "host" and self.memory != "off":
                self._memory = self._open_memory()
            self.session = TraceSession(available, clock=self.clock, buffer_kb=self.buffer_kb)
            self.session.open()
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if self.session is not None:
                self.session.close()
        finally:
            if self._lock_fd is not None:
                if exc_type is not None and self._created:  # aborted: remove what this capture made, under its lock
                    remove_partial(self.out)
                os.close(self._lock_fd)
                self._lock_fd = None

    def _lock_out(self) -> None:
        """Create ``out``, lock it for this capture (a second capture into it fails at once, even one started
        at the same moment) and mark it INCOMPLETE until the manifest is written. An existing ``out`` must be
        an empty directory; it is checked before anything is written into it, and again under the lock."""
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise InvalidParameter("--out", self.out, "a new or empty directory (this is a file)")
        if os.path.isdir(self.out) and os.listdir(self.out) and not os.path.exists(os.path.join(self.out, LOCK)):
            self._refuse_not_empty()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
            try:
                os.mkdir(self.out)
                self._created = True
            except FileExistsError:
                pass
            fd = os.open(os.path.join(self.out, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise InvalidParameter("--out", self.out, f"a directory this user can create and write ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InvalidParameter("--out", self.out, "a directory no other capture is writing (another capture is writing "
                                   "it)") from None
        if set(os.listdir(self.out)) - {LOCK}:  # filled between the first look and the lock
            os.close(fd)
            self._created = False  # never remove what another run wrote
            self._refuse_not_empty()
        self._lock_fd = fd
        with open(os.path.join(self.out, INCOMPLETE), "w", encoding="utf-8") as f:
            f.write(f"tsalign capture pid {os.getpid()} is writing this bundle; if that process is gone, it did not "
                    "finish and the data here is partial\n")

    def _refuse_not_empty(self) -> NoReturn:
        killed = os.path.exists(os.path.join(self.out, INCOMPLETE))
        raise InvalidParameter("--out", self.out, "a new or empty directory (this one is not empty" + (
            f"; its {INCOMPLETE} file says a capture into it did not finish)" if killed else ")"))

    def _open_memory(self) -> Any:
        """The live kernel opened with drgn (tsalign.node.memory), or None with a note (``auto``)."""
        try:
            from ..node.memory import KernelMemory

            mem = KernelMemory()
        except (ImportError, Unavailable) as e:
            if self.memory == "on":
                raise Unavailable(f"--memory-offsets on: {e}") from None
            self.notes.append(f"vCPU offsets not read from kernel memory: {e}")
            return None
        self.notes.append(f"vCPU offsets also read from kernel memory (drgn, types from {mem.route})")
        return mem

    def snapshot(self) -> None:
        """Snapshot the offsets of every selected VM now (re-discovering their vCPUs)."""
        for vm in self.vms:
            if vm.vm_fd is None:  # emulated VM: no KVM state to snapshot
                continue
            fresh = [v for v in kvmvms.discover_vms(Root(), vm.pid) if v.vm_fd == vm.vm_fd]
            if not fresh:
                self.notes.append(f"VM pid {vm.pid} ({vm.name or 'unnamed'}) was gone at host TSC {tsc.rdtsc()}: it "
                                  "exited during the capture, so this snapshot of its offsets is missing")
                continue
            vm.vcpus = fresh[0].vcpus
            self.snapshots.extend(snapshot_vm(vm))
            if self._memory is not None:
                self.snapshots.extend(self._memory_snapshots(vm))

    def _memory_snapshots(self, vm: kvmvms.VmInfo) -> list[OffsetSnapshot]:
        try:
            snaps: list[OffsetSnapshot] = self._memory.snapshots(vm.pid, vm.vm_fd)
        except Exception as e:  # noqa: BLE001 - drgn raises FaultError, LookupError, ...: a source lost, not the capture
            self.notes.append(f"kernel memory read failed at host TSC {tsc.rdtsc()}: {type(e).__name__}: {e}")
            return []
        if not snaps:
            self.notes.append(f"VM pid {vm.pid} fd {vm.vm_fd} not found on kvm's vm_list in kernel memory")
        return snaps

    def start(self) -> None:
        """Start recording, then snapshot: the snapshot lies inside the trace, so every offset write
        around it is recorded (KVM may rewrite offsets at any vCPU load). The capture's start TSC is read
        once recording is on: from it on everything is recorded, so a vCPU thread's first recorded kvm_entry
        proves it did not run since then (read before, a run in the write's latency -- milliseconds on a
        nested TCG host -- went unrecorded and looked like a gap: the lab's CI of 2026-12-02)."""
        assert self.session is not None
        self.t0 = time.monotonic()
        self.session.start()
        self.started_tsc = tsc.rdtsc()
        self.snapshot()

    def stop(self) -> None:
        """Snapshot, then stop recording (the end snapshot inside the trace, as at the start); the stop TSC is
        read while recording is still on, for the same reason."""
        assert self.session is not None
        self.snapshot()
        self.stopped_tsc = tsc.rdtsc()
        self.session.stop()

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write per-CPU data, formats and manifest.json; return the manifest."""
        s = self.session
        assert s is not None
        files = []
        for cpu in s.cpus:
            name = f"cpu{cpu}.txt"
            with open(os.path.join(self.out, name), "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in s.read_text(cpu))
            files.append(name)
        os.makedirs(os.path.join(self.out, "formats"), exist_ok=True)
        formats = {}
        for ev in s.enabled:
            if ev.endswith(":*") or ":" not in ev:
                continue
            text = s.format_of(ev)
            if text:
                fname = f"formats/{ev.replace(':', '.')}"
                with open(os.path.join(self.out, fname), "w", encoding="utf-8") as f:
                    f.write(text)
                formats[ev] = fname
        stats = s.stats()
        facts = node_facts(Root())
        manifest: dict[str, Any] = {
            "role": self.role,
            "node": facts,
            "clock": self._clock(facts),
            "events": list(s.enabled),
            "vm": [self._vm_dict(vm) for vm in self.vms],
            "offsets": {"snapshots": [snapshot_to_dict(x) for x in self.snapshots]},
            "data": {"format": "ftrace-text", "files": files},
            "formats": formats,
            "stats": [st.__dict__ for st in stats],
            "lost_events": sum(st.lost for st in stats),
            "started_host_tsc" if self.role == "host" else "started_tsc": self.started_tsc,
            "stopped_tsc": self.stopped_tsc,
            "duration_s": round(time.monotonic() - self.t0, 6),
            "notes": self.notes,
        }
        manifest.update(extra or {})
        write_manifest(self.out, manifest)
        return manifest

    def _clock(self, facts: dict[str, Any]) -> dict[str, Any]:
        if self.clock == "x86-tsc":
            domain = "host_tsc" if self.role == "host" else "guest_tsc"
            return {"trace_clock": "x86-tsc", "domain": domain, "convertible": True}
        if self.clock == "local":
            return sched_clock_info(facts)
        page: Any
        try:
            page = perfpage.read_user_page()
        except OSError as e:
            return {"trace_clock": "perf", "domain": "perf_ns", "convertible": False,
                    "reason": f"perf user page unreadable: {e}", "perf_user_page": None}
        why = perfpage.conversion_verdict(page)
        return {"trace_clock": "perf", "domain": "perf_ns", "perf_user_page": page.to_dict(),
                "convertible": why is None,
                "reason": None if why is None else "TSC conversion is not supported: " + why}

    @staticmethod
    def _vm_dict(vm: kvmvms.VmInfo) -> dict[str, Any]:
        return {"pid": vm.pid, "vm_fd": vm.vm_fd, "name": vm.name, "uuid": vm.uuid, "notes": vm.notes,
                "debugfs_dir": vm.debugfs_dir, "vcpus": [{"id": v.id, "tid": v.tid} for v in vm.vcpus]}


def sched_clock_info(facts: dict[str, Any]) -> dict[str, Any]:
    """The manifest's clock for a guest capture in ftrace's ``local`` clock: sched_clock() ns, printed in
    microseconds by tracefs text (``resolution_ns`` 1000). On kvm-clock, sched_clock() = kvmclock ns -
    kvm_sched_clock_offset (recorded from the kernel log), which the host's pvclock records convert to TSC."""
    off = facts.get("kvm_sched_clock_offset_ns")
    info: dict[str, Any] = {"trace_clock": "local", "domain": "sched_ns", "convertible": False, "resolution_ns": 1000,
                            "kvm_sched_clock_offset_ns": off}
    if facts.get("sched_clock") == "tsc":
        info["reason"] = ("sched_clock runs on the TSC here (no-kvmclock): capture with --clock x86-tsc, which "
                          "records the TSC itself")
    elif off is None:
        info["reason"] = ("kvm_sched_clock_offset unknown (the kernel log has no 'kvm-clock: using sched offset' "
                          "line): only a guest calibration (tsalign calibrate) converts these timestamps")
    else:
        info["reason"] = ("sched_clock ns of a kvm-clock guest: align converts them to guest TSC with the host's "
                          "kvm_pvclock_update records (or a guest calibration)")
    return info


def event_exists(ev: str) -> bool:
    from ..node import mounts

    d = mounts.tracefs_dir(Root())
    if d is None:
        return False
    system, _, name = ev.partition(":")
    return os.path.isdir(os.path.join(d, "events", system, "" if name in ("", "*") else name))


def remove_partial(out: str) -> None:
    """Remove a bundle directory that never got its manifest (an aborted capture)."""
    if os.path.isdir(out) and not os.path.exists(os.path.join(out, "manifest.json")):
        shutil.rmtree(out, ignore_errors=True)
