"""``tsalign align``: host bundle + guest bundle -> one timeline on the guest TSC axis + verdict."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..clock.kvm import TscParams
from ..errors import InconsistentData, InvalidParameter, Unavailable
from ..heap import release_freed_memory
from ..kernel import kprobe
from ..offsets import (
    OffsetSnapshot,
    OffsetTimeline,
    OffsetWrite,
    PvclockTimeline,
    parse_pvclock_update,
)
from ..progress import Step
from ..traces.bundle import Bundle
from ..traces.ftrace_text import parse_kvm_payload
from .sides import time_shift_snapshots

if TYPE_CHECKING:  # numpy is a controller's dependency: the guest-side CLI imports this module without it
    import numpy as np

    from .columns import AlignedColumns

__all__ = ["Aligned", "align", "all_or_none", "guest_axis_khz", "select_vm", "write_timeline", "write_verdict"]


@dataclass
class Aligned:
    """The merged timeline (columns sorted by guest_tsc) and what was learnt building it."""

    columns: AlignedColumns
    timeline: OffsetTimeline
    vm: dict[str, Any]
    tsc_khz: int
    host_count: int
    guest_count: int
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    lost_events: dict[str, int] = field(default_factory=dict)
    #: host TSC at which the host capture started and stopped (None: not recorded)
    host_window: tuple[int | None, int | None] = (None, None)
    #: every offset source read, side by side with the timeline: snapshots and tracepoint writes
    snapshots: list[OffsetSnapshot] = field(default_factory=list)
    writes: list[OffsetWrite] = field(default_factory=list)
    #: why the timeline holds the offsets it holds
    offset_choice: str = ""
    #: host events not on a vCPU thread placed with vCPU ``axis_vcpu``'s offset while the vCPUs' offsets
    #: differed by ``axis_spreads`` cycles (sorted, one per event: their placement uncertainty)
    axis_vcpu: int | None = None
    axis_spreads: list[int] = field(default_factory=list)
    #: host thread id -> vCPU id of the VM's vCPU threads
    tid_to_vcpu: dict[int, int] = field(default_factory=dict)
    #: the guest's kvm-clock records traced by the host (kvm_pvclock_update), per vCPU
    pvclock: PvclockTimeline = field(default_factory=PvclockTimeline)
    #: cycles a guest event's TSC may lie below the true one (kvm-clock ns converted back; 0: exact)
    guest_rounding: int = 0
    #: cycles a guest event's TSC may lie above the true one (ns converted with a guest calibration; 0: exact)
    guest_above: int = 0
    #: a guest calibration against the host's pvclock route, per vCPU (guestclock._cross_check); None: not both
    cross_check: dict[str, Any] | None = None


#: the host events whose payloads the alignment reads (offset sources; kprobe hits are read whatever their name:
#: their payloads start with OFFSET_PREFIXES)
OFFSET_EVENTS = frozenset({"kvm_write_tsc_offset", "kvm_pvclock_update"})
OFFSET_PREFIXES = ("(",)

T = TypeVar("T")

#: cycles before a kprobe hit in which a traced write may not have been stored yet (~40 us at 2.5 GHz)
KPROBE_WINDOW = 100_000

def select_vm(host: Bundle, guest: Bundle) -> dict[str, Any]:
    """The host bundle's VM that the guest bundle was recorded in; errors name both bundles. A host trace
    that is not a bundle (:mod:`tsalign.align.sides`) holds the one VM its vCPU threads name."""
    vms: list[dict[str, Any]] = host.manifest.get("vm", [])
    if len(vms) == 1 and vms[0].get("foreign"):
        return vms[0]
    gid = guest.manifest.get("vm", {}) if isinstance(guest.manifest.get("vm"), dict) else {}
    hnode, gnode = host.manifest.get("node", {}), guest.manifest.get("node", {})
    if gid.get("host_boot_id") and hnode.get("boot_id") and gid["host_boot_id"] != hnode["boot_id"]:
        raise InconsistentData(
            f"bundles of different machines: guest bundle {guest.path} was recorded in a VM of host boot "
            f"{gid['host_boot_id']}, host bundle {host.path} on boot {hnode['boot_id']}; "
            "capture host and guest at the same time (playbooks/capture.yml or tsalign selftest)")
    if not vms:
        raise InvalidParameter("--host", host.path, "a host bundle with the VM's offsets (tsalign capture --vm NAME)")
    for vm in vms:
        if gid.get("pid") == vm.get("pid") and gid.get("vm_fd") == vm.get("vm_fd"):
            return vm
        if gnode.get("product_uuid") and vm.get("uuid") and gnode["product_uuid"].lower() == vm["uuid"].lower():
            return vm
    if len(vms) == 1 and not gid and not (gnode.get("product_uuid") and vms[0].get("uuid")):
        return vms[0]
    raise InconsistentData(
        f"guest bundle {guest.path} matches none of the {len(vms)} VM(s) in host bundle {host.path} "
        f"(guest identity {gid or gnode.get('product_uuid')}; host VMs "
        f"{[(v.get('name'), v.get('uuid'), v.get('pid')) for v in vms]}): bundles of different machines or VMs")


def guest_axis_khz(host_khz: int, guest_khz: int, timeline: OffsetTimeline) -> tuple[int, str | None]:
    """The TSC frequency (kHz) of the guest axis, for its ns: the guest's own where its bundle says it; else the
    host's scaled by the vCPUs' TSC ratio (``host_khz * ratio >> frac_bits``: with TSC scaling a guest cycle is
    not a host cycle); else the host's. A note says where it came from when it is not the obvious one."""
    ratios = {(p.params.ratio, p.params.frac_bits) if p.params.scaled else (1, 0)
              for segs in timeline.segments.values() for p in segs}
    if guest_khz:
        return guest_khz, None
    if ratios <= {(1, 0)} or not host_khz:
        return host_khz, None
    if len(ratios) > 1:
        return 0, (f"the vCPUs run with {len(ratios)} different TSC scaling ratios and the guest bundle states no TSC "
                   "frequency: durations on the guest axis are given in cycles only")
    ratio, frac = next(iter(ratios))
    khz = (host_khz * ratio) >> frac
    return khz, (f"guest axis at {khz} kHz: the host's {host_khz} kHz scaled by the vCPUs' TSC ratio "
                 f"{ratio}/2^{frac}")


def align(host: Bundle, guest: Bundle, given: dict[int | None, TscParams] | None = None,
          given_source: str = "user", ignore_changes: bool = False, progress: Step | None = None) -> Aligned:
    """Merge both bundles' events on the guest TSC axis using the per-vCPU offset timeline.

    ``given``: parameters known from elsewhere (the user, beacons, an emulated VM whose TSC offset KVM
    does not hold), per vCPU id or for all vCPUs (key None); they replace the bundle's sources for
    those vCPUs and are labelled ``given_source``. ``ignore_changes``: keep only each vCPU's first
    snapshot (to see what an alignment that ignores offset changes would get). ``progress``: told when the
    read is done and the merge starts (:mod:`tsalign.progress`)."""
    if host.role != "host" or host.domain != "host_tsc":
        raise InvalidParameter("--host", host.path,
                               f"a host bundle in host_tsc (found role {host.role}, domain {host.domain}); "
                               "record it with `tsalign capture --role host`")
    if guest.role != "guest":
        raise InvalidParameter("--guest", guest.path, f"a guest bundle (found role {guest.role})")
    vm = select_vm(host, guest)
    with ThreadPoolExecutor(1, thread_name_prefix="tsalign-guest-read") as pool:
        # both sides read at once: the readers' kernels (pyarrow, numpy) release the GIL (40 s pair: 3.9 -> 2.4 s)
        guest_read = pool.submit(guest.events)
        try:
            hev = host.events()
        finally:  # the guest's error first, as when read one after the other
            gev = guest_read.result()
    release_freed_memory()  # what the readers freed, before the merge's peak
    if progress:
        progress(f"read {len(hev):,} host and {len(gev):,} guest events; merging them on the guest TSC axis")
    read = {"host": hev, "guest": gev}
    del hev, gev  # _merge lets each column go once it is in the merged table
    aligned = _merge(host, guest, vm, read, given, given_source, ignore_changes)
    release_freed_memory()  # the merge's parts, before the verdict's peak
    return aligned


def _merge(host: Any, guest: Any, vm: dict[str, Any], read: dict[str, Any], given: dict[int | None, TscParams] | None,
           given_source: str, ignore_changes: bool) -> Aligned:
    """:func:`align` once both sides' events are read (``read``: host and guest Events, taken out of it: the merge
    lets each side's columns go as it goes, so that the peak holds about one copy of the events, not two)."""
    hev = read.pop("host")
    tid_to_vcpu = {v["tid"]: v["id"] for v in vm.get("vcpus", []) if v.get("tid")}
    vm_threads = set(tid_to_vcpu) | {vm.get("pid")}
    vcpu_ids = {v["id"] for v in vm.get("vcpus", [])}
    all_writes, kprobe_snaps, pv_updates = _offset_events(hev, vm, vm_threads, vcpu_ids)
    shift_snaps, shift_notes = time_shift_snapshots(host, guest)
    all_snaps = host.snapshots() + kprobe_snaps + shift_snaps
    snaps, writes = all_snaps, all_writes
    choice = "the bundle's snapshots and kvm_write_tsc_offset events (snapshots trusted over the tracepoint)"
    start = int(host.manifest.get("started_host_tsc", 0))
    if given:
        ids = [v["id"] for v in vm.get("vcpus", [])] or sorted({s.vcpu for s in all_snaps}) or [0]
        unknown = sorted(k for k in given if k is not None and k not in ids)
        if unknown:
            raise InvalidParameter("--tsc-offset", unknown, f"vCPU ids of the VM ({ids})")
        chosen = {i: given.get(i, given.get(None)) for i in ids}
        keep = [i for i, p in chosen.items() if p is None]
        snaps = [s for s in all_snaps if s.vcpu in keep] + [
            OffsetSnapshot(start, i, p, given_source) for i, p in chosen.items() if p is not None]
        writes = [w for w in all_writes if w.vcpu in keep]
        choice = f"{given_source} (given for vCPU(s) {sorted(i for i, p in chosen.items() if p is not None)})"
    elif not snaps and not writes and vm.get("foreign"):
        raise InvalidParameter("--tsc-offset", "(none)",
                               f"the guest TSC offset: {host.path} holds no kvm_write_tsc_offset event of the vCPU "
                               f"threads ({sorted(tid_to_vcpu)}); pass --tsc-offset [VCPU=]N (the host's "
                               "/sys/kernel/debug/kvm/PID-FD/vcpuN/tsc-offset while the VM runs), or record "
                               "kvm:kvm_write_tsc_offset from before the VM starts")
    elif not snaps and vm.get("vm_fd") is None and not vm.get("foreign"):
        raise InvalidParameter("--tsc-offset", "(none)",
                               f"the guest TSC offset for VM pid {vm.get('pid')}: it is emulated (no KVM offset); "
                               "measure it with beacons (see tsalign analyze --help) and pass it")
    if ignore_changes:
        firsts: dict[int, OffsetSnapshot] = {}
        for s in sorted(snaps, key=lambda s: s.host_tsc):
            firsts.setdefault(s.vcpu, s)
        for w in sorted(writes, key=lambda w: w.host_tsc):  # a vCPU known from its writes only
            firsts.setdefault(w.vcpu, OffsetSnapshot(start, w.vcpu, TscParams(w.prev), "kvm_write_tsc_offset.prev"))
        snaps, writes = list(firsts.values()), []
        choice += "; offset changes ignored (first snapshot of each vCPU only)"
    timeline = OffsetTimeline.build(snaps, writes)
    khz, khz_note = guest_axis_khz(int(host.manifest.get("node", {}).get("tsc_khz") or 0),
                                   int(guest.manifest.get("node", {}).get("tsc_khz") or 0), timeline)
    from .columns import AlignedColumns, host_on_guest_axis, vcpu_of_threads
    from .guestclock import guest_events_on_tsc

    axis_vcpu = min(timeline.vcpus) if timeline.vcpus else None
    vcpu_of = vcpu_of_threads(hev.pid, tid_to_vcpu)
    # spreads: difference between vCPU offsets where each non-vCPU event was placed (cycles)
    conv, placed, spreads = host_on_guest_axis(timeline, hev.ts, vcpu_of, axis_vcpu)
    dropped = {"host_no_offset": int((~placed).sum())}
    host_count = len(hev)
    if dropped["host_no_offset"]:
        hev, vcpu_of = hev.take(placed), vcpu_of[placed]
    host_part = AlignedColumns.from_events(hev, conv, True, vcpu_of)
    del hev, vcpu_of, conv, placed
    pvclock = PvclockTimeline.build(pv_updates)
    g = guest_events_on_tsc(guest, pvclock, host.path, read.pop("guest"))
    notes = [*host.manifest.get("notes", []), *guest.manifest.get("notes", []), *shift_notes, *g.notes,
             *([khz_note] if khz_note else [])]
    guest_count = len(g.events)
    guest_part = AlignedColumns.from_events(g.events, g.events.ts, False)
    g.events = None  # type: ignore[assignment]  # (the part holds its columns; merged() lets them go)
    cols = AlignedColumns.merged([host_part, guest_part], consume=True)
    del host_part, guest_part
    lost = {"host": int(host.manifest.get("lost_events", 0)), "guest": int(guest.manifest.get("lost_events", 0))}
    stopped = host.manifest.get("stopped_tsc")
    window = (start or None, int(stopped) if isinstance(stopped, int) else None)
    return Aligned(cols, timeline, vm, khz, host_count, guest_count, dropped, notes, lost, window,
                   all_snaps, all_writes, choice, axis_vcpu, sorted(spreads), tid_to_vcpu, pvclock,
                   g.below, g.above, g.cross_check)


def _offset_events(hev: Any, vm: dict[str, Any], vm_threads: set[Any], vcpu_ids: set[int]
                   ) -> tuple[list[OffsetWrite], list[OffsetSnapshot], list[Any]]:
    """The host events that carry offsets, from the VM's threads: kvm_write_tsc_offset writes, tsalign's kprobe
    hits (as snapshots with a read window) and kvm_pvclock_update records of the VM's vCPUs."""
    import numpy as np

    mine = np.isin(hev.pid, np.asarray(sorted(t for t in vm_threads if t is not None), dtype=np.int64))
    if vm.get("pid") is not None:
        in_process = mine | (hev.tgid == int(vm["pid"]))
    else:
        in_process = mine
    pv_updates = []
    for ts, payload in _rows_of(hev, "kvm_pvclock_update", mine):
        u = parse_pvclock_update(ts, payload)
        if u is not None and u.vcpu in vcpu_ids:
            pv_updates.append(u)
    writes = []
    for ts, payload in _rows_of(hev, "kvm_write_tsc_offset", mine):
        f = parse_kvm_payload("kvm_write_tsc_offset", payload)
        writes.append(OffsetWrite(ts, f["vcpu"], f["prev"], f["next"]))
    snaps = []
    # tsalign's kprobe (tsalign kprobe register) reads vcpu->arch.tsc_offset and vcpu->vcpu_id, often in another
    # thread, where the value may predate a write that thread's CPU traced just before it (the tracepoint fires
    # before KVM stores the offset): a read window, as for debugfs reads. A kprobe event prints "(func+0x0/..)"
    # first: only event types whose payloads start so are parsed.
    for code, name in enumerate(hev.names):
        rows = np.nonzero(in_process & (hev.event == code))[0]
        if not rows.size or name in ("kvm_pvclock_update", "kvm_write_tsc_offset") \
                or not any(str(p).startswith("(") for p in hev.payload[rows[:8]].tolist()):
            continue
        for ts, payload in zip(hev.ts[rows].tolist(), hev.payload[rows].tolist()):
            hit = kprobe.parse_hit(payload)
            if hit and hit[1] in vcpu_ids:
                snaps.append(OffsetSnapshot(max(ts - KPROBE_WINDOW, 0), hit[1], TscParams(hit[0]), "kprobe",
                                            read_until=ts))
    return writes, snaps, pv_updates


def _rows_of(hev: Any, name: str, mask: Any) -> list[tuple[int, str]]:
    import numpy as np

    rows = np.nonzero(mask & (hev.event == hev.code(name)))[0]
    return list(zip(hev.ts[rows].tolist(), hev.payload[rows].tolist()))


#: the timeline's outputs :func:`write_timeline` can write (``tsalign align --outputs``), and their files
TIMELINE_OUTPUTS = {"jsonl": "timeline.jsonl", "parquet": "timeline.parquet", "perfetto": "trace.perfetto-trace"}


def write_timeline(a: Aligned, out: str, outputs: tuple[str, ...] | None = None,
                   rows: slice | np.ndarray | None = None) -> tuple[dict[str, str], list[str]]:
    """offsets.jsonl (every offset segment: the verdict keeps a summary) and the timeline's ``outputs`` (names of
    :data:`TIMELINE_OUTPUTS`; default: all, Perfetto where the TSC frequency is known and the perfetto package is
    installed) in ``out``, one in this thread and the others in threads (they spend their time in pyarrow's and
    numpy's kernels and the file writes, which release the GIL). An output not asked for is not left there from an
    earlier alignment. ``rows``: the rows the timeline's files hold (default: all; :mod:`tsalign.align.selection`).
    Returns the paths written and notes on what was not (a package missing). On an error none of them is left
    behind."""
    kinds = _outputs(a, outputs)
    os.makedirs(out, exist_ok=True)
    for kind, name in TIMELINE_OUTPUTS.items():  # the directory holds one alignment's files
        if kind not in kinds[0] and os.path.isfile(os.path.join(out, name)):
            os.unlink(os.path.join(out, name))
    return all_or_none(out, OUTPUT_FILES, "the alignment's outputs", lambda: _write_timeline(a, out, *kinds, rows))


def _outputs(a: Aligned, outputs: tuple[str, ...] | None) -> tuple[tuple[str, ...], list[str]]:
    """The outputs to write and notes on the defaults left out; an asked-for output that cannot be made is an
    error, before anything is written."""
    import importlib.util

    unknown = sorted(set(outputs or ()) - set(TIMELINE_OUTPUTS))
    if unknown:
        raise InvalidParameter("--outputs", ",".join(unknown), f"names among {', '.join(TIMELINE_OUTPUTS)} (or none)")
    perfetto = importlib.util.find_spec("perfetto") is not None  # an optional package
    if outputs is not None:
        if "perfetto" in outputs and not a.tsc_khz:
            raise InvalidParameter("--outputs", "perfetto", "a TSC frequency for its ns: give --tsc-khz (neither "
                                   "input records one)")
        if "perfetto" in outputs and not perfetto:
            raise InvalidParameter("--outputs", "perfetto", "the perfetto package installed (pip install perfetto)")
        return tuple(k for k in TIMELINE_OUTPUTS if k in outputs), []
    if a.tsc_khz and not perfetto:
        return ("jsonl", "parquet"), ["perfetto package not installed: no perfetto output written"]
    return ("jsonl", "parquet", "perfetto") if a.tsc_khz else ("jsonl", "parquet"), []


def _write_timeline(a: Aligned, out: str, kinds: tuple[str, ...], notes: list[str],
                    rows: slice | np.ndarray | None = None) -> tuple[dict[str, str], list[str]]:
    paths = {"offsets": os.path.join(out, "offsets.jsonl")}
    line = json.JSONEncoder(sort_keys=True).encode
    with open(paths["offsets"], "w", encoding="utf-8") as f:
        f.writelines(line(r) + "\n" for r in a.timeline.segment_rows())
    if not kinds:
        return paths, notes
    from ..report.perfetto import write_perfetto
    from ..traces.export import write_aligned_parquet
    from .columns import write_jsonl_blocks
    from .fanout import Blocks, Cancelled, Fanout

    meta = {"axis": "guest_tsc", "tsc_khz": a.tsc_khz, "vm": a.vm.get("name")}
    key = {"jsonl": "timeline", "parquet": "parquet", "perfetto": "perfetto"}
    paths.update({key[k]: os.path.join(out, TIMELINE_OUTPUTS[k]) for k in kinds})

    def jsonl(b: Iterator[Any]) -> None:
        with open(paths["timeline"], "wb") as bf:
            write_jsonl_blocks(bf, b)

    writers: dict[str, Callable[[Iterator[Any]], Any]] = {
        "jsonl": jsonl,
        "parquet": lambda b: write_aligned_parquet(paths["parquet"], Blocks(b), meta),
        "perfetto": lambda b: write_perfetto(paths["perfetto"], Blocks(b), a.tsc_khz)}
    # the rows are made once, a block at a time (payloads read back from the spills), and every output takes each
    # block: the first here, the others in threads
    fan = Fanout(_trimmed(a.columns.blocks(rows=rows)), len(kinds)).start()
    try:
        with ThreadPoolExecutor(2, thread_name_prefix="tsalign-outputs") as pool:  # leaving it waits for the threads
            others = [pool.submit(fan.feed, i, writers[k]) for i, k in enumerate(kinds) if i]
            try:
                fan.feed(0, writers[kinds[0]])
                for done in others:
                    done.result()
            except Cancelled:  # another output failed first: its error is the one raised
                fan.stop()
                for done in others:
                    e = done.exception()
                    if e is not None and not isinstance(e, Cancelled):
                        raise e from None
                raise
    finally:
        fan.stop()
    return paths, notes


def _trimmed(blocks: Iterator[Any], every: int = 8) -> Iterator[Any]:
    """``blocks``, the C heap's freed pages returned every ``every`` blocks: the writers' temporaries, freed in four
    threads, otherwise stay resident (at 2.4 M events ~200 MiB above what the outputs hold)."""
    for k, block in enumerate(blocks, 1):
        yield block
        if k % every == 0:
            release_freed_memory()


#: the files :func:`write_timeline` and :func:`write_verdict` write in their directory
OUTPUT_FILES = ("timeline.jsonl", "offsets.jsonl", "timeline.parquet", "trace.perfetto-trace", "verdict.json")


def all_or_none(out: str, names: tuple[str, ...], what: str, write: Callable[[], T]) -> T:
    """``write()`` the files ``names`` in ``out``; on any error none of them is left (the files: a directory of the
    same name is not one of them), and an OSError (a full disk, a directory in the way) becomes a clear error,
    exit 4, naming ``what`` and the file."""
    try:
        return write()
    except BaseException as e:
        for name in names:
            path = os.path.join(out, name)
            if os.path.islink(path) or os.path.isfile(path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        if isinstance(e, OSError):
            raise Unavailable(f"writing {what} in {out} failed: {e.strerror or e}"
                              + (f" ({e.filename})" if e.filename else "") + "; none of them was left there") from None
        raise


def write_verdict(verdict: dict[str, Any], paths: dict[str, str], out: str) -> dict[str, str]:
    """verdict.json in ``out`` (the verdict's public keys and the artifacts' paths); returns ``paths`` with it."""
    paths = {**paths, "verdict": os.path.join(out, "verdict.json")}
    public = {k: v for k, v in verdict.items() if not k.startswith("_")}
    public["artifacts"] = paths
    with open(paths["verdict"], "w", encoding="utf-8") as f:
        json.dump(public, f, indent=2, sort_keys=True)
    return paths
