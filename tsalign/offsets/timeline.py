"""OffsetTimeline: per vCPU, piecewise-constant TSC parameters valid from a host TSC onwards.

Built from *snapshots* (debugfs / kprobe / memory reads at known host TSCs, e.g. capture start and
end) and from ``kvm:kvm_write_tsc_offset`` *writes* (vcpu, prev, next). Snapshots are trusted over
the tracepoint: on some hypervisors (PVM, nested) KVM emits the tracepoint for an offset it never
applies, and a later snapshot is how that is seen. Every contradiction is kept as an Issue.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..clock.kvm import TscParams, host_to_guest_tsc
from ..errors import InconsistentData
from ..numbers import to_signed64

__all__ = ["Issue", "OffsetSnapshot", "OffsetTimeline", "OffsetWrite", "Segment"]


@dataclass(frozen=True)
class OffsetSnapshot:
    """The parameters of one vCPU read at host TSC ``host_tsc`` (cycles) from ``source``
    (``debugfs``, ``kprobe``, ``memory``, ``beacons``...)."""

    host_tsc: int
    vcpu: int
    params: TscParams
    source: str = "debugfs"
    #: host TSC just after the read (cycles); the value was read somewhere in [host_tsc, read_until].
    #: None: an instant (the read took no measurable time, or the source does not say).
    read_until: int | None = None

    @property
    def end(self) -> int:
        """The last host TSC (cycles) at which the value may have been read."""
        return self.host_tsc if self.read_until is None else max(self.host_tsc, self.read_until)


@dataclass(frozen=True)
class OffsetWrite:
    """A ``kvm:kvm_write_tsc_offset`` event: at host TSC ``host_tsc`` vCPU ``vcpu``'s offset
    changed from ``prev`` to ``next`` (unsigned 64-bit cycles, as the tracepoint prints them)."""

    host_tsc: int
    vcpu: int
    prev: int
    next: int


@dataclass(frozen=True)
class Segment:
    """Parameters in force for one vCPU from ``start`` (host TSC cycles) until the next segment."""

    start: int
    params: TscParams
    source: str


@dataclass(frozen=True)
class Issue:
    """An inconsistency found while building a timeline.

    kind: ``prev_mismatch`` (a write whose prev is not the known offset), ``write_not_applied``
      (a later snapshot still shows the offset from before the write), ``unexplained_change``
      (two snapshots differ and no write explains it; the change lies somewhere between them),
      ``vcpus_disagree`` (vCPUs of one VM have different parameters), ``no_source``.
    """

    kind: str
    message: str
    vcpu: int | None = None
    host_tsc: int | None = None
    until_host_tsc: int | None = None


@dataclass
class _Builder:
    vcpu: int
    segments: list[Segment] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    last_snapshot: OffsetSnapshot | None = None
    writes_since_snapshot: list[tuple[OffsetWrite, int]] = field(default_factory=list)
    raced: int = 0

    @property
    def current(self) -> TscParams | None:
        return self.segments[-1].params if self.segments else None

    def add_write(self, w: OffsetWrite) -> None:
        cur = self.current
        if cur is None:
            base = TscParams(offset=w.prev)
            self.segments.append(Segment(0, base, "kvm_write_tsc_offset.prev"))
            cur = base
        elif cur.offset != w.prev & ((1 << 64) - 1):
            self.issues.append(Issue(
                "prev_mismatch",
                f"vcpu{self.vcpu}: kvm_write_tsc_offset at host TSC {w.host_tsc} says prev="
                f"{w.prev:#x} but the known offset is {cur.offset:#x} ({cur.signed_offset})",
                self.vcpu, w.host_tsc))
        self.writes_since_snapshot.append((w, len(self.segments)))
        self.segments.append(Segment(w.host_tsc, replace(cur, offset=w.next), "kvm_write_tsc_offset"))

    def _held_during_the_read(self, s: OffsetSnapshot) -> bool:
        """Whether the vCPU had ``s``'s parameters at some moment of its read window [host_tsc, end]: the value
        in force when the read began, or one set by a write traced inside the window. Such a read is consistent:
        KVM traces kvm_write_tsc_offset before it stores the offset, and a read (debugfs, or a kprobe in another
        thread) is not instantaneous."""
        for seg in reversed(self.segments):
            if seg.params == s.params:
                return True
            if seg.start <= s.host_tsc:
                return False
        return False

    def add_snapshot(self, s: OffsetSnapshot) -> None:
        cur = self.current
        if cur is None:
            self.segments.append(Segment(0, s.params, s.source))
        elif cur != s.params and self._held_during_the_read(s):
            self.raced += 1
        elif cur != s.params:
            prev_snap = self.last_snapshot
            if self.writes_since_snapshot:
                first_write, first_idx = self.writes_since_snapshot[0]
                before = self.segments[first_idx - 1].params
                if before == s.params:
                    # the tracepoint reported writes the hypervisor never applied (PVM): the snapshot
                    # value held all along; drop the tentative segments
                    self.issues.append(Issue(
                        "write_not_applied",
                        f"vcpu{self.vcpu}: {len(self.writes_since_snapshot)} kvm_write_tsc_offset "
                        f"event(s) from host TSC {first_write.host_tsc} set offset "
                        f"{cur.offset:#x}, but {s.source} at host TSC {s.host_tsc} reads "
                        f"{s.params.offset:#x} ({s.params.signed_offset}), the value from before them; "
                        f"trusting {s.source}",
                        self.vcpu, first_write.host_tsc, s.host_tsc))
                    del self.segments[first_idx:]
                else:
                    # the writes were applied, and the offset changed once more after the last of them
                    # without an event (a write the trace missed): from the snapshot on, trust it
                    last_write = self.writes_since_snapshot[-1][0]
                    self.issues.append(Issue(
                        "unexplained_change",
                        f"vcpu{self.vcpu}: the last kvm_write_tsc_offset (host TSC {last_write.host_tsc}) set "
                        f"{cur.offset:#x}, but {s.source} at host TSC {s.host_tsc} reads {s.params.offset:#x} "
                        f"({s.params.signed_offset}); events in between are uncertain",
                        self.vcpu, last_write.host_tsc, s.host_tsc))
                    self.segments.append(Segment(max(s.host_tsc, self.segments[-1].start), s.params, s.source))
            else:
                since = prev_snap.host_tsc if prev_snap else 0
                self.issues.append(Issue(
                    "unexplained_change",
                    f"vcpu{self.vcpu}: offset changed from {cur.offset:#x} to {s.params.offset:#x} "
                    f"between host TSC {since} and {s.host_tsc} with no kvm_write_tsc_offset event; "
                    "events in that interval are uncertain (record kvm:kvm_write_tsc_offset)",
                    self.vcpu, since, s.host_tsc))
                self.segments.append(Segment(max(s.host_tsc, self.segments[-1].start), s.params, s.source))
        self.last_snapshot = s
        self.writes_since_snapshot = []


class OffsetTimeline:
    """Per-vCPU piecewise-constant TSC parameters, with the issues found building them."""

    def __init__(self, segments: dict[int, list[Segment]], issues: list[Issue], raced: int = 0) -> None:
        self.segments = segments
        self.issues = issues
        #: snapshots read while a write was being applied (consistent with the value before it)
        self.raced = raced
        self._starts = {v: [s.start for s in segs] for v, segs in segments.items()}

    @classmethod
    def build(cls, snapshots: Iterable[OffsetSnapshot], writes: Iterable[OffsetWrite] = ()) -> OffsetTimeline:
        """Build from snapshots and write events (any order); see the module doc for trust."""
        items: list[tuple[int, int, int, Any]] = []
        for s in snapshots:  # ordered by the end of its read: writes traced during the read come first
            items.append((s.vcpu, s.end, 1, s))
        for w in writes:
            items.append((w.vcpu, w.host_tsc, 0, w))
        items.sort(key=lambda t: (t[0], t[1], t[2]))
        builders: dict[int, _Builder] = {}
        for vcpu, _, _, item in items:
            b = builders.setdefault(vcpu, _Builder(vcpu))
            if isinstance(item, OffsetSnapshot):
                b.add_snapshot(item)
            else:
                b.add_write(item)
        issues = [i for b in builders.values() for i in b.issues]
        segments = {v: b.segments for v, b in sorted(builders.items())}
        firsts = {v: segs[0].params for v, segs in segments.items()}
        if len(set(firsts.values())) > 1:
            desc = ", ".join(f"vcpu{v}={p.signed_offset}" for v, p in firsts.items())
            issues.append(Issue(
                "vcpus_disagree",
                f"vCPUs of one VM start with different TSC parameters ({desc}); each event is "
                "converted with its own vCPU's parameters", None, None))
        if not segments:
            issues.append(Issue("no_source", "no offset snapshot and no kvm_write_tsc_offset event"))
        return cls(segments, issues, sum(b.raced for b in builders.values()))

    @property
    def vcpus(self) -> list[int]:
        return list(self.segments)

    def params_at(self, vcpu: int, host_tsc: int) -> TscParams:
        """The parameters in force for ``vcpu`` at ``host_tsc`` (cycles)."""
        starts = self._starts.get(vcpu)
        if starts is None:
            raise InconsistentData(
                f"no TSC offset known for vcpu{vcpu} (known: {self.vcpus}); capture offsets for "
                "every vCPU of the VM"
            )
        i = max(bisect.bisect_right(starts, host_tsc) - 1, 0)
        return self.segments[vcpu][i].params

    def vm_params_at(self, host_tsc: int) -> TscParams:
        """Parameters for an event not tied to one vCPU: all vCPUs must agree at ``host_tsc``."""
        found = {self.params_at(v, host_tsc) for v in self.vcpus}
        if len(found) != 1:
            raise InconsistentData(
                f"vCPUs disagree on TSC parameters at host TSC {host_tsc}: "
                + ", ".join(str(p.signed_offset) for p in found)
            )
        return found.pop()

    def host_to_guest(self, vcpu: int, host_tsc: int) -> int:
        """Scalar conversion of one host TSC of ``vcpu`` to guest TSC cycles."""
        return host_to_guest_tsc(host_tsc, self.params_at(vcpu, host_tsc))

    def params_ids(self, vcpu: int, at: Any) -> tuple[Any, list[TscParams]]:
        """For host TSCs ``at`` (uint64 array): the index of the parameters ``vcpu`` had at each, into the returned
        table of distinct parameters (equal indices: equal parameters, whatever the segment). Binary search of
        the vCPU's segment starts, as :meth:`params_at`."""
        import numpy as np

        if vcpu not in self._starts:
            raise InconsistentData(f"no TSC offset known for vcpu{vcpu} (known: {self.vcpus})")
        table: dict[TscParams, int] = {}
        for segs in self.segments.values():
            for seg in segs:
                table.setdefault(seg.params, len(table))
        ids = np.asarray([table[seg.params] for seg in self.segments[vcpu]], dtype=np.int64)
        starts = np.asarray(self._starts[vcpu], dtype=np.uint64)
        i = np.maximum(np.searchsorted(starts, np.asarray(at, dtype=np.uint64), side="right").astype(np.int64) - 1, 0)
        return ids[i], list(table)

    def host_to_guest_many(self, vcpus: Any, host_tsc: Any, at: Any = None) -> Any:
        """Vectorised conversion (numpy arrays of vcpu ids and host TSCs -> uint64 guest TSCs), each with
        the parameters its vCPU had at ``at`` (same shape; default: at the host TSC itself), as
        :meth:`params_at` finds them: a binary search of each vCPU's segment starts (O(n log segments))."""
        import numpy as np

        from ..clock import vec

        vcpus = np.asarray(vcpus, dtype=np.int64)
        host = np.asarray(host_tsc, dtype=np.uint64)
        look = host if at is None else np.asarray(at, dtype=np.uint64)
        missing = sorted(set(np.unique(vcpus).tolist()) - set(self.vcpus))
        if missing:
            raise InconsistentData(f"no TSC offset known for vcpu(s) {missing} (known: {self.vcpus})")
        idx = np.zeros(host.shape, dtype=np.int64)
        base = 0
        for v in self.vcpus:
            m = vcpus == v
            starts = np.asarray(self._starts[v], dtype=np.uint64)
            idx[m] = base + np.maximum(np.searchsorted(starts, look[m], side="right").astype(np.int64) - 1, 0)
            base += len(self.segments[v])
        params = [s.params for v in self.vcpus for s in self.segments[v]]
        offset = np.asarray([p.offset for p in params], dtype=np.uint64)[idx]
        if not any(p.scaled for p in params):
            return host + offset
        if len(set(params)) == 1:
            return vec.host_to_guest_tsc(host, params[0])
        ratio = np.asarray([p.ratio for p in params], dtype=np.uint64)[idx]
        frac = np.asarray([p.frac_bits for p in params], dtype=np.uint64)[idx]
        return vec.host_to_guest_tsc_arrays(host, offset, ratio, frac)

    def segment_rows(self) -> Iterator[dict[str, Any]]:
        """Every segment, JSON-ready (one dict per segment: vCPU, start host TSC in cycles, offset unsigned,
        hex and signed, ratio, fraction bits, source), vCPU by vCPU in time order."""
        for v, segs in sorted(self.segments.items()):
            for s in segs:
                yield {"vcpu": v, "start_host_tsc": s.start, "offset": s.params.offset,
                       "offset_hex": f"{s.params.offset:#x}", "offset_signed": to_signed64(s.params.offset),
                       "ratio": s.params.ratio, "frac_bits": s.params.frac_bits, "source": s.source}

    def to_dict(self, keep: int = 4) -> dict[str, Any]:
        """JSON-ready summary: per vCPU the number of segments and of distinct offsets, the first and last
        ``keep`` segments (all of them: :meth:`segment_rows`); issues as dicts."""
        rows: dict[int, list[dict[str, Any]]] = {}
        for r in self.segment_rows():
            rows.setdefault(r.pop("vcpu"), []).append(r)
        return {
            "vcpus": {
                str(v): {"segments": len(rs), "distinct_offsets": len({r["offset"] for r in rs}),
                         "first": rs[:keep], "last": rs[max(keep, len(rs) - keep):]}
                for v, rs in rows.items()
            },
            "issues": [asdict(i) for i in self.issues],
            "snapshots_read_during_a_write": self.raced,
        }
