"""A tracefs session in a private instance (``instances/tsalign-<pid>-<n>``): trace clock, events,
buffer size, start/stop, per-CPU text and stats. Nothing global is ever written; the instance is
removed on every exit path (context manager, SIGINT/SIGTERM turned into exceptions by the caller,
and instances of dead tsalign processes are reaped by the next session: SIGKILL)."""

from __future__ import annotations

import errno
import itertools
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import InvalidParameter, Unavailable
from ..node import mounts
from ..node.fs import Root
from . import watchdog

__all__ = ["EVENT_NAME", "INSTANCE_PREFIX", "CpuStats", "TraceSession", "check_event_name", "global_state",
           "parse_events", "reap_stale"]

INSTANCE_PREFIX = "tsalign-"
_NAME = re.compile(r"^tsalign-(\d+)-(\d+)$")
_counter = itertools.count()
#: an event selector: ``system:event`` or ``system:*`` (names as tracefs spells them; nothing else reaches a path)
EVENT_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}:(\*|[A-Za-z0-9_]{1,128})$")


def check_event_name(ev: str) -> str:
    """``ev`` if it is ``system:event`` or ``system:*``; InvalidParameter otherwise."""
    if not EVENT_NAME.match(ev):
        raise InvalidParameter("event", ev[:200], "system:event or system:* (letters, digits, _), e.g. kvm:kvm_entry")
    return ev


def parse_events(text: str) -> list[str]:
    """A comma-separated ``--events`` value, every name checked (an empty item is an error, not "all")."""
    return [check_event_name(e.strip()) for e in text.split(",")]


@dataclass(frozen=True)
class CpuStats:
    """Per-CPU ring buffer statistics (``per_cpu/cpuN/stats``); counts of events."""

    cpu: int
    entries: int
    overrun: int
    commit_overrun: int
    dropped_events: int

    @property
    def lost(self) -> int:
        return self.overrun + self.commit_overrun + self.dropped_events


def _tracefs() -> str:
    d = mounts.tracefs_dir(Root())
    if d is None:
        raise Unavailable("tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing "
                          "(or tsalign precheck --mount)")
    if not os.access(os.path.join(d, "instances"), os.W_OK):
        raise Unavailable(f"{d}/instances is not writable: run as root")
    return d


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(value)
    except OSError as e:
        raise Unavailable(f"writing {value.strip()!r} to {path} failed: {e.strerror}") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale(tracefs: str | None = None) -> list[str]:
    """Remove tsalign instances whose owning process is gone (a capture killed with SIGKILL).
    Returns the names removed."""
    d = tracefs or _tracefs()
    removed = []
    for name in os.listdir(os.path.join(d, "instances")):
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _remove_instance(os.path.join(d, "instances", name))
            removed.append(name)
    return removed


def _remove_instance(path: str) -> None:
    for attempt in range(200):
        _write_quiet(os.path.join(path, "tracing_on"), "0")
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or attempt == 199:
                raise Unavailable(f"cannot remove tracefs instance {path}: {e.strerror}") from None
            time.sleep(0.01)  # a reader still holds a file open


def _write_quiet(path: str, value: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(value)
    except OSError:
        pass


GLOBAL_FILES = ("trace_clock", "set_event", "tracing_on", "buffer_size_kb", "current_tracer", "trace_options")


def global_state(tracefs: str | None = None) -> dict[str, str]:
    """The global instance's settings tsalign must never change (for tests and self-checks)."""
    d = tracefs or _tracefs()
    out = {}
    for f in GLOBAL_FILES:
        try:
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                out[f] = fh.read()
        except OSError:
            out[f] = "<unreadable>"
    return out


@dataclass
class TraceSession:
    """One private tracefs instance. Use as a context manager: the instance is removed on exit.

    events: ``system:event`` or ``system:*`` names; clock: a trace_clock name (``x86-tsc``);
    buffer_kb: per-CPU buffer size in KiB.
    """

    events: Sequence[str]
    clock: str = "x86-tsc"
    buffer_kb: int = 4096
    tracefs: str | None = None
    name: str = ""
    path: str = ""
    enabled: list[str] = field(default_factory=list)
    watchdog: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TraceSession:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        d = self.tracefs or _tracefs()
        self.tracefs = d
        reap_stale(d)
        self.name = f"{INSTANCE_PREFIX}{os.getpid()}-{next(_counter)}"
        self.path = os.path.join(d, "instances", self.name)
        # the watchdog first: from the moment the instance exists, this process's death removes it
        self.watchdog = watchdog.start(self.path)
        try:
            os.mkdir(self.path)
        except OSError as e:
            self.close()
            raise Unavailable(f"cannot create tracefs instance {self.path}: {e.strerror}") from None
        try:
            self._configure()
        except BaseException:
            self.close()
            raise

    def _configure(self) -> None:
        with open(os.path.join(self.path, "trace_clock"), encoding="utf-8") as f:
            clocks = [c.strip("[]") for c in f.read().split()]
        if self.clock not in clocks:
            raise InvalidParameter("clock", self.clock, f"a trace clock of this kernel: {', '.join(clocks)}")
        _write(os.path.join(self.path, "tracing_on"), "0")
        _write(os.path.join(self.path, "trace_clock"), self.clock)
        _write(os.path.join(self.path, "buffer_size_kb"), str(self.buffer_kb))
        tgid = os.path.join(self.path, "options", "record-tgid")
        if os.path.exists(tgid):  # per instance on recent kernels: the TGID column names each thread's process
            _write(tgid, "1")
        for ev in self.events:
            system, _, event = check_event_name(ev).partition(":")
            target = os.path.join(self.path, "events", system) if event == "*" else os.path.join(self.path, "events", system, event)
            if not os.path.isdir(target):
                raise InvalidParameter("event", ev, f"an event of {self.tracefs}/events (system:event or system:*)")
            _write(os.path.join(target, "enable"), "1")
            self.enabled.append(ev)

    def start(self) -> None:
        _write(os.path.join(self.path, "tracing_on"), "1")

    def stop(self) -> None:
        _write(os.path.join(self.path, "tracing_on"), "0")

    @property
    def cpus(self) -> list[int]:
        return sorted(int(c[3:]) for c in os.listdir(os.path.join(self.path, "per_cpu")) if c[3:].isdigit())

    def read_text(self, cpu: int) -> Iterator[str]:
        """The text lines of CPU ``cpu``'s buffer (``per_cpu/cpuN/trace``), comments skipped."""
        with open(os.path.join(self.path, "per_cpu", f"cpu{cpu}", "trace"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith("#"):
                    yield line.rstrip("\n")

    def stats(self) -> list[CpuStats]:
        out = []
        for cpu in self.cpus:
            vals: dict[str, int] = {}
            with open(os.path.join(self.path, "per_cpu", f"cpu{cpu}", "stats"), encoding="utf-8") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    v = v.strip()
                    if v.isdigit():
                        vals[k.strip()] = int(v)
            out.append(CpuStats(cpu, vals.get("entries", 0), vals.get("overrun", 0),
                                vals.get("commit overrun", 0), vals.get("dropped events", 0)))
        return out

    def format_of(self, event: str) -> str | None:
        """The ``format`` file of ``system:event`` (for the bundle)."""
        system, _, name = event.partition(":")
        try:
            with open(os.path.join(self.path, "events", system, name, "format"), encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None

    def close(self) -> None:
        """Stop tracing and remove the instance (idempotent); then let the watchdog go."""
        try:
            if self.path and os.path.isdir(self.path):
                _remove_instance(self.path)
        finally:
            w, self.watchdog = self.watchdog, None
            if w is not None:
                assert w.stdin is not None
                w.stdin.close()
                try:
                    w.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    w.kill()
