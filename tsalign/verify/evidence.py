"""The extractors of every evidence kind of :mod:`tsalign.catalogue` (direction, tracepoints and
pairing of each are listed there). Pairing never uses the offset being judged: by content
(port value, MSR index and value) or by order where order is unambiguous (counts equal, or one
fd / one line); ambiguous pairs are not evidence. Each extractor returns
:class:`~tsalign.verify.intervals.Brackets` per vCPU (bounds on the offset error ``delta``) and
notes saying what it skipped and why.

Host events are converted to the guest axis with the offset in use for the vCPU named (the
timeline of the alignment); guest events are on the guest axis already.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..align.brackets import signed_diff
from ..align.columns import vcpu_of_threads
from ..align.portbeacons import WRITE_CALLS, beacon_fd, guest_beacons, host_port_write_threads
from ..analyze.irq import INJECTIONS, injection_line
from ..clock.kvm import host_to_guest_tsc
from ..errors import InconsistentData, InvalidParameter
from ..heap import release_freed_memory
from ..jit import compiled
from ..traces.events import narrow
from ..traces.ftrace_text import parse_kvm_payload
from ..traces.payloads import kv
from ..traces.sparse import payload_strings, sparse_of
from .intervals import Brackets

__all__ = ["Found", "extract_all"]



@dataclass
class Found:
    """What the extractors found: brackets, notes on what was skipped, details for reports."""

    brackets: list[Brackets] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


#: the events whose payloads the evidence reads, per side (every other payload may be left in a spill:
#: tsalign.traces.spill), and the payload text that marks a guest event it reads whatever its name (port beacons)
READS = {"host": frozenset({"kvm_pio", "kvm_msr", "sched_switch", "sched_waking", "sched_wakeup",
                            *WRITE_CALLS, *INJECTIONS}),
         "guest": frozenset({"tsalign_beacon", "write_msr", "tsalign_msr", "tsalign_irq", "irq_handler_entry"})}
MARKERS = ("tsalign_beacon",)

#: rows the extractors take at a time where a column of millions would be a temporary (payloads parsed by
#: :meth:`_Ctx.fields`, beacons bracketed): ~100 bytes a row each, ~25 MiB a block
BLOCK_ROWS = 1 << 18


class _Ctx:
    """The alignment's columns bucketed by side and event name (index arrays, in each side's time order),
    vCPU threads, and the conversion in use. Rows become dicts only for the buckets an extractor asks
    :meth:`host`/:meth:`guest` for."""

    def __init__(self, a: Any) -> None:
        self.a = a
        self.col = a.columns
        self.tid_to_vcpu: dict[int, int] = a.tid_to_vcpu
        col = self.col
        self._code: dict[str, list[int]] = {}  # bare name -> codes of the event names that are it
        for k, n in enumerate(col.names.tolist()):
            self._code.setdefault(n.split(":")[-1], []).append(k)
        self._rows: dict[tuple[str, str], np.ndarray] = {}
        self._dicts: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._switches: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._wakes: tuple[np.ndarray, np.ndarray] | None = None
        self._vcpus = set(a.timeline.vcpus)

    def rows(self, side: str, *names: str) -> np.ndarray:
        """Indices of ``side``'s events named ``names`` (any system), ordered by that side's clock (stable)."""
        out = []
        for name in names:
            key = (side, name)
            if key not in self._rows:
                wanted = np.zeros(len(self.col.names), dtype=bool)  # (a table: np.isin cost 30 ms a call at 5 M rows)
                wanted[self._code.get(name, [])] = True
                m = wanted[self.col.event_code] & (self.col.is_host if side == "host" else ~self.col.is_host)
                r = narrow(np.nonzero(m)[0])  # (cached: int32 where it fits)
                del m
                t = self.col.host_tsc[r] if side == "host" else self.col.guest_tsc[r]
                self._rows[key] = r[np.argsort(t, kind="stable")]
            out.append(self._rows[key])
        if len(out) == 1:
            return out[0]
        r = np.concatenate(out)
        t = self.col.host_tsc[r] if side == "host" else self.col.guest_tsc[r]
        return r[np.argsort(t, kind="stable")]

    def fields(self, side: str, names: tuple[str, ...], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(field 0, field 1 (uint64), matched (bool)) of ``rows`` (events named ``names``, one parser of
        :data:`FIELDS` for all of them): as read with the trace where its reader parsed them (their payloads then
        wait in a spill), else parsed from the payloads here."""
        col = self.col
        if col.f0 is not None and all((side == "host", n) in col.parsed for n in names):
            return col.f0[rows], col.f1[rows], col.fok[rows]
        parse = FIELDS[side][names[0]]
        if len(rows) <= BLOCK_ROWS:
            return parse(payload_strings(col.payload[rows]))
        # a block of payloads at a time: their text and the parser's temporaries (~100 bytes a payload) follow the
        # block, not the trace (11 M guest MSR writes parsed at once: ~1 GiB)
        f0, f1, ok = np.zeros(len(rows), np.uint64), np.zeros(len(rows), np.uint64), np.zeros(len(rows), bool)
        for lo in range(0, len(rows), BLOCK_ROWS):
            f0[lo:lo + BLOCK_ROWS], f1[lo:lo + BLOCK_ROWS], ok[lo:lo + BLOCK_ROWS] = parse(
                payload_strings(col.payload[rows[lo:lo + BLOCK_ROWS]]))
        return f0, f1, ok

    def _as_dicts(self, side: str, name: str) -> list[dict[str, Any]]:
        """``side``'s ``name`` events as :meth:`AlignedColumns.rows` makes them (made once)."""
        key = (side, name)
        if key not in self._dicts:
            self._dicts[key] = self.col.take(self.rows(side, name)).rows()
        return self._dicts[key]

    def host(self, *names: str) -> list[dict[str, Any]]:
        if len(names) == 1:
            return self._as_dicts("host", names[0])
        return sorted((e for n in names for e in self._as_dicts("host", n)), key=lambda e: e["host_tsc"])

    def guest(self, name: str) -> list[dict[str, Any]]:
        return self._as_dicts("guest", name)

    @property
    def switches(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(host TSCs, prev_pid, next_pid) of every host sched_switch (arrays, host TSC order), parsed once."""
        if self._switches is None:
            r = self.rows("host", "sched_switch")
            prev, nxt, ok = self.fields("host", ("sched_switch",), r)
            self._switches = (self.col.host_tsc[r][ok], prev[ok].astype(np.int64), nxt[ok].astype(np.int64))
        return self._switches

    @property
    def wakes(self) -> tuple[np.ndarray, np.ndarray]:
        """(host TSCs, woken pid) of every host sched_waking/sched_wakeup (the payload's last ``pid=``; -1: none),
        parsed once."""
        if self._wakes is None:
            r = self.rows("host", "sched_waking", "sched_wakeup")
            self._wakes = (self.col.host_tsc[r],
                           self.fields("host", ("sched_waking", "sched_wakeup"), r)[0].view(np.int64))
        return self._wakes

    def host_times_of(self, tid: int) -> np.ndarray:
        """Sorted host TSCs of thread ``tid``'s host events (uint64)."""
        c = self.col
        return np.sort(c.host_tsc[c.is_host & (c.pid == tid)])

    def to_guest(self, host_tsc: int, vcpu: int, at: int | None = None) -> int | None:
        """``host_tsc`` on the guest axis with vCPU ``vcpu``'s offset in use at host TSC ``at``
        (default: at ``host_tsc`` itself); None when no offset is known for it."""
        if vcpu not in self._vcpus:
            return None
        try:
            return host_to_guest_tsc(host_tsc, self.a.timeline.params_at(vcpu, host_tsc if at is None else at))
        except InconsistentData:
            return None

    def to_guest_many(self, vcpu: int, host_tsc: np.ndarray, at: np.ndarray) -> np.ndarray | None:
        """Host TSCs (uint64 array) on the guest axis with ``vcpu``'s offset in use at ``at`` (same shape);
        None when no offset is known for the vCPU."""
        if vcpu not in self._vcpus:
            return None
        return np.asarray(self.a.timeline.host_to_guest_many(np.full(len(host_tsc), vcpu), host_tsc, at), dtype=np.uint64)

    def vcpus_of_threads(self, tids: np.ndarray) -> np.ndarray:
        """The vCPU of each thread id (-1: none); with no vCPU threads known and one vCPU, that vCPU."""
        if not self.tid_to_vcpu and len(self._vcpus) == 1:
            return np.full(len(tids), next(iter(self._vcpus)), dtype=np.int64)
        return vcpu_of_threads(tids, self.tid_to_vcpu)

    def to_guest_each(self, vcpus: np.ndarray, host_tsc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Host TSCs on the guest axis, each with its vCPU's offset in use at it; (guest TSCs, mask of the rows
        whose vCPU has a known offset — the others' values are 0)."""
        ok = np.isin(vcpus, np.asarray(sorted(self._vcpus), dtype=np.int64))
        out = np.zeros(len(host_tsc), dtype=np.uint64)
        if ok.any():
            out[ok] = np.asarray(self.a.timeline.host_to_guest_many(vcpus[ok], host_tsc[ok]), dtype=np.uint64)
        return out, ok

    def vcpu_of_thread(self, tid: int) -> int | None:
        """:meth:`vcpus_of_threads` of one thread (None: none)."""
        v = int(self.vcpus_of_threads(np.asarray([tid], dtype=np.int64))[0])
        return None if v < 0 else v


def _extract(text: Any, pattern: str) -> tuple[list[Any], np.ndarray]:
    """The groups of ``pattern`` (RE2, anchored as written) in each payload (a pyarrow string array), one pyarrow
    string array per group, and the mask of payloads it matched (unmatched: empty strings) — in one pass of
    pyarrow's regex kernel."""
    r = pc.extract_regex(text, pattern)
    ok = np.asarray(r.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return [r.field(i) for i in range(r.type.num_fields)], ok


_NIBBLE = np.zeros(256, dtype=np.uint64)
_NIBBLE[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10, dtype=np.uint64)
_NIBBLE[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint64)
_NIBBLE[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint64)


def _hex(values: Any, ok: np.ndarray) -> np.ndarray:
    """Hex digits (a pyarrow string array of 1 to 16 digits where ``ok``, as the patterns of :func:`_extract`
    capture them) -> uint64, a digit position at a time over the whole column (0 where ``ok`` is False)."""
    if isinstance(values, pa.ChunkedArray):  # over 2 GiB of text
        parts, at = [], 0
        for ch in values.chunks:
            parts.append(_hex(ch, ok[at:at + len(ch)]))
            at += len(ch)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    n = len(values)
    out = np.zeros(n, dtype=np.uint64)
    if not n:
        return out
    buf = values.buffers()
    offs = np.frombuffer(buf[1], dtype=np.int32)[values.offset:values.offset + n + 1].astype(np.int64)
    data = np.frombuffer(buf[2], dtype=np.uint8) if buf[2] is not None else np.zeros(0, dtype=np.uint8)
    length = np.where(ok, np.diff(offs), 0)
    if int(length.max(initial=0)) > 16:
        raise ValueError("more than 16 hex digits")  # the patterns capture at most 16
    for j in range(int(length.max(initial=0))):
        m = np.nonzero(length > j)[0]
        out[m] = (out[m] << np.uint64(4)) | _NIBBLE[data[offs[m] + j]]
    return out


def _pio_parse(text: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(port, val, True) of kvm_pio payloads (the kernel's print fmt; another text is an error naming it)."""
    (port, val), ok = _extract(text, r"^pio_(?:read|write) at 0x(?P<p>[0-9a-f]{1,16}) size \d+ count \d+ val 0x(?P<v>[0-9a-f]{1,16})")
    if not ok.all():
        parse_kvm_payload("kvm_pio", text[int(np.nonzero(~ok)[0][0])].as_py())  # raises, naming the payload
    return _hex(port, ok), _hex(val, ok), ok


def _msr_parser(pattern: str, kv_fallback: bool = False) -> Callable[[Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A parser of (MSR index, value) payloads matching ``pattern``; ``kv_fallback``: others read by the key=value
    parser (``msr=`` and ``value=``)."""
    def parse(text: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        (msr, val), ok = _extract(text, pattern)
        ms, vs = _hex(msr, ok), _hex(val, ok)
        if kv_fallback:
            for i in np.nonzero(~ok)[0].tolist():
                kvs = kv(text[i].as_py())
                if "msr" in kvs and "value" in kvs and 0 <= kvs["msr"] < 1 << 64 and 0 <= kvs["value"] < 1 << 64:
                    ms[i], vs[i], ok[i] = kvs["msr"], kvs["value"], True
        return ms, vs, ok
    return parse


def _switch_parse(text: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prev_pid, next_pid (int64 bits), matched) of sched_switch payloads, as
    :func:`tsalign.traces.payloads.sched_switch` reads them, in one pass of the regex kernel (a pid beyond 10 digits:
    not matched)."""
    (prev, nxt), ok = _extract(text, r"prev_comm=.*? prev_pid=(?P<pp>-?\d{1,10}) prev_prio=-?\d+ prev_state=\S+ "
                                     r"==> next_comm=.*? next_pid=(?P<np>-?\d{1,10}) next_prio=-?\d+")
    return _decimal(prev, ok).view(np.uint64), _decimal(nxt, ok).view(np.uint64), ok


def _wake_parse(text: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(woken pid: the payload's last ``pid=`` (1 to 18 digits), -1 where none, as uint64 bits; 0;
    True) of sched_waking/wakeup."""
    (pid,), ok = _extract(text, r"^.*\bpid=(?P<p>\d+)")
    ok &= np.asarray(pc.utf8_length(pid).to_numpy(zero_copy_only=False)) <= 18
    pids = np.where(ok, _decimal(pid, ok), -1)
    return pids.view(np.uint64), np.zeros(len(pids), dtype=np.uint64), np.ones(len(pids), dtype=bool)


def _decimal(values: Any, ok: np.ndarray) -> np.ndarray:
    """Decimal integers (a pyarrow string array, as :func:`_extract` captures them) -> int64 (0 where not ``ok``)."""
    return np.asarray(pc.cast(pc.if_else(pa.array(ok), values, pa.scalar("0")), pa.int64()).to_numpy(
        zero_copy_only=False), dtype=np.int64)


def _beacon_parse(text: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1 where the micro-VM's beacon marker names its port (``port=``: a pio beacon), else 0; its ``seq=``
    (the guest's write order); whether it names one)."""
    port = np.asarray(pc.match_substring(text, "port=").fill_null(False).to_numpy(zero_copy_only=False), dtype=np.uint64)
    (seq,), ok = _extract(text, r"(?:^|\s)seq=(?P<s>\d{1,19})(?:\s|$)")
    seq = pc.cast(pc.if_else(pa.array(ok), seq, pa.scalar("0")), pa.uint64()).to_numpy(zero_copy_only=False)
    return port, np.asarray(seq, dtype=np.uint64), ok


#: the payload fields the evidence reads, per side and event: a parser of payloads (a pyarrow string array) ->
#: (field 0, field 1 (uint64), matched). A reader may apply them as it reads
#: (tsalign.traces.spill.PayloadPolicy.parsers), so that these payloads need not be held.
FIELDS: dict[str, dict[str, Callable[[Any], tuple[np.ndarray, np.ndarray, np.ndarray]]]] = {
    "host": {"kvm_pio": _pio_parse,
             "kvm_msr": _msr_parser(r"^msr_write (?P<m>[0-9a-fA-F]{1,16}) = 0x(?P<v>[0-9a-fA-F]{1,16})\s*$"),
             "sched_switch": _switch_parse, "sched_waking": _wake_parse, "sched_wakeup": _wake_parse},
    # tsalign's own markers print "msr=0x... value=0x..."; any other spelling is read by the key=value parser
    "guest": {"tsalign_beacon": _beacon_parse,
              "write_msr": _msr_parser(r"^\s*(?P<m>[0-9a-fA-F]{1,16}), value (?P<v>[0-9a-fA-F]{1,16})\s*$"),
              "tsalign_msr": _msr_parser(r"^msr=0x(?P<m>[0-9a-fA-F]{1,16}) value=0x(?P<v>[0-9a-fA-F]{1,16})$", True)},
}


_M32 = np.uint64(0xFFFFFFFF)


def _pio_fields(c: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """kvm_pio's (port, val) from its record as the text parser reads them from ``... at 0x%x ... val 0x%x``."""
    port, val = (c[k].astype(np.uint64) & _M32 for k in ("port", "val"))
    return port, val, np.ones(len(port), dtype=bool)


def _msr_fields(c: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """kvm_msr's (ecx, data, a write without #GP) as the text parser reads ``msr_write %x = 0x%llx``."""
    ok = np.asarray((c["write"] != 0) & (c["exception"] == 0), dtype=bool)
    zero = np.uint64(0)
    return np.where(ok, c["ecx"].astype(np.uint64) & _M32, zero), np.where(ok, c["data"].astype(np.uint64), zero), ok


def _switch_fields(c: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """sched_switch's (prev_pid, next_pid) as int64 bits."""
    prev, nxt = (np.asarray(c[k]).astype(np.int64) for k in ("prev_pid", "next_pid"))
    return prev.view(np.uint64), nxt.view(np.uint64), np.ones(len(prev), dtype=bool)


def _wake_fields(c: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """sched_waking/wakeup's pid (None where one is negative: the text parser reads those otherwise)."""
    pid = np.asarray(c["pid"]).astype(np.int64)
    if bool((pid < 0).any()):
        return None
    return pid.view(np.uint64), np.zeros(len(pid), dtype=np.uint64), np.ones(len(pid), dtype=bool)


#: :data:`FIELDS` of a binary trace's events taken from their records' fields (the names their format files give)
#: instead of their printed text: (the fields read, a function of their columns -> the parser's result, or None
#: where the text must be parsed). Equal to the text parsers' result wherever those read the kernel's own print
#: fmt (tests/unit/test_spill.py, on real traces).
BINARY_FIELDS: dict[str, dict[str, tuple[tuple[str, ...], Callable[[Mapping[str, np.ndarray]],
                                                                    tuple[np.ndarray, np.ndarray, np.ndarray] | None]]]] = {
    "host": {"kvm_pio": (("port", "val"), _pio_fields), "kvm_msr": (("write", "ecx", "data", "exception"), _msr_fields),
             "sched_switch": (("prev_pid", "next_pid"), _switch_fields), "sched_waking": (("pid",), _wake_fields),
             "sched_wakeup": (("pid",), _wake_fields)},
    "guest": {},
}


def _greedy_one_py(w: int, tol: int, vals: np.ndarray, idx: np.ndarray, last: int) -> int:
    """The first position after ``last`` that holds ``w + r`` for some r in 0..tol (modulo 2^32), -1 where none:
    ``vals``/``idx`` are the positions' values and positions sorted by (value, position) (compiled)."""
    best = -1
    for r in range(tol + 1):
        v = (w + r) & 0xFFFFFFFF
        lo = np.searchsorted(vals, v, side="left")
        hi = np.searchsorted(vals, v, side="right")
        a, b = lo, hi  # first position > last among idx[lo:hi] (ascending)
        while a < b:
            mid = (a + b) // 2
            if idx[mid] <= last:
                a = mid + 1
            else:
                b = mid
        if a < hi and (best < 0 or idx[a] < best):
            best = idx[a]
    return best


_greedy_one = compiled(_greedy_one_py, _greedy_one_py, inline=True)


#: exits looked at in order after the last match before a beacon's exit is searched by its value (a beacon's
#: exit is the next one unless exits were lost)
_SCAN = 64


def greedy_scan_py(want: np.ndarray, tol: int, at: np.ndarray, vals: np.ndarray, idx: np.ndarray, start: int,
                   last: int, out: np.ndarray) -> tuple[int, int]:
    """The beacons' pairing rule (:func:`_greedy_match`) from wanted value ``start`` on (``last``: the position matched before it),
    into ``out``; each value's position looked for among the next :data:`_SCAN` positions first, in order
    (``at``: the positions' values), then by :func:`_greedy_one_py` over the sorted ``vals``/``idx`` — or, where
    those are empty, the pass stops there (the caller sorts and goes on). Returns (the wanted value it stopped
    at, or ``want.size``; ``last`` then) (compiled)."""
    m = at.shape[0]
    for i in range(start, want.shape[0]):
        w = want[i]
        best = -1
        stop = min(last + 1 + _SCAN, m)
        for p in range(last + 1, stop):
            if (at[p] - w) & 0xFFFFFFFF <= tol:
                best = p
                break
        if best < 0 and stop < m:  # none in the next positions: a later one holds it, or none does
            if vals.shape[0] == 0:
                return i, last
            best = _greedy_one(w, tol, vals, idx, last)
        if best >= 0:
            last = best
            out[i] = best
    return want.shape[0], last


_greedy_scan = compiled(greedy_scan_py, greedy_scan_py)


def _greedy_match(want: np.ndarray, tol: int, at: np.ndarray) -> np.ndarray:
    """The beacons' pairing: for each wanted low half ``want[i]`` in order, the first position not yet passed whose
    value (``at``: int64, in position order) is it or up to ``tol`` above it (modulo 2^32); -1 where none; each match
    passes every earlier position (a beacon's exit comes after the previous beacon's). In one pass in position order: the values are sorted only when
    a wanted value is not among the next positions (exits lost; a 50 M-event capture's 11 M beacons: 15 s of
    searches in the sorted values -> ~1 s)."""
    want, at = np.asarray(want, dtype=np.int64), np.asarray(at, dtype=np.int64)
    out = np.full(want.shape[0], -1, dtype=np.int64)
    none = np.zeros(0, dtype=np.int64)
    i, last = _greedy_scan(want, tol, at, none, none, 0, -1, out)
    if i < want.shape[0]:
        order = np.argsort(at, kind="stable")
        _greedy_scan(want, tol, at, at[order], order.astype(np.int64), i, last, out)
    return out


def _pio_beacons(c: _Ctx, f: Found) -> None:
    col = c.col
    b_rows = c.rows("guest", "tsalign_beacon")
    if not b_rows.size or not c.fields("guest", ("tsalign_beacon",), b_rows[:1])[0][0]:  # not a pio beacon's marker
        return
    seq, named = c.fields("guest", ("tsalign_beacon",), b_rows)[1:]
    bg = col.guest_tsc[b_rows]
    del b_rows
    lo_rows, lo_val, hi_ts = _pio_exits(c)
    tol = int(c.a.guest_rounding)  # a converted guest TSC lies up to this far below the value the guest sent
    want = (bg & np.uint64(0xFFFFFFFF)).view(np.int64)  # (the low halves: below 2^32, the same as int64)
    k = _greedy_match(want, tol, lo_val)
    del lo_val, want
    matched = np.nonzero(k >= 0)[0]  # beacon indices with their exit
    # the brackets of the matched beacons whose exit has a vCPU and an offset: filled a block of beacons at a time
    # (each temporary a block's, not a column of millions of beacons)
    n = len(matched)
    out_g, out_v = np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.int32)
    lower, upper, has_hi = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    outs: tuple[np.ndarray, ...] = (out_g, out_v, lower, upper, has_hi)
    at = 0
    for lo in range(0, n, BLOCK_ROWS):
        got = _pio_block(c, matched[lo:lo + BLOCK_ROWS], k, lo_rows, hi_ts, bg, seq, named)
        for arr, part in zip(outs, got):
            arr[at:at + len(part)] = part
        at += len(got[0])
    del k
    g, vcpu, lower, upper, has_hi = out_g[:at], out_v[:at], lower[:at], upper[:at], has_hi[:at]
    vcpus = np.unique(vcpu).tolist()
    if len(vcpus) == 1:  # (the usual case: its brackets are the arrays themselves, not copies)
        f.brackets.append(Brackets("pio_beacon", int(vcpus[0]), lower, upper, np.ones(len(g), dtype=bool), has_hi, g))
    else:
        for v in vcpus:
            m = vcpu == v
            f.brackets.append(Brackets("pio_beacon", int(v), lower[m], upper[m], np.ones(int(m.sum()), dtype=bool),
                                       has_hi[m], g[m]))
    # (residuals: an int64 array, not a list — a Python int per beacon cost ~36 bytes each at millions of them)
    f.details["pio_beacon"] = {"beacons": len(bg), "matched": n, "residuals": -lower}


def _pio_exits(c: _Ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The host's port-0x10 exits (their rows, the low 32 bits of their values as int64) and its port-0x11 exits'
    host TSCs, in the host's order (:meth:`_Ctx.rows` orders them so: the guest axis reorders host events where the
    TSC offset steps back), their fields read a block at a time."""
    col = c.col
    pio = c.rows("host", "kvm_pio")
    rows: list[np.ndarray] = [np.zeros(0, dtype=pio.dtype)]
    vals: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    high: list[np.ndarray] = [np.zeros(0, dtype=np.uint64)]
    for lo in range(0, len(pio), BLOCK_ROWS):
        r = pio[lo:lo + BLOCK_ROWS]
        port, val, _ = c.fields("host", ("kvm_pio",), r)
        low = port == 0x10
        rows.append(r[low])
        vals.append((val[low] & np.uint64(0xFFFFFFFF)).astype(np.int64))
        high.append(col.host_tsc[r[port == 0x11]])
    return np.concatenate(rows), np.concatenate(vals), np.concatenate(high)


def _pio_block(c: _Ctx, matched: np.ndarray, k: np.ndarray, lo_rows: np.ndarray, hi_ts: np.ndarray, bg: np.ndarray,
               seq: np.ndarray, named: np.ndarray) -> tuple[np.ndarray, ...]:
    """The pio-beacon brackets of some matched beacons (``matched``: their indices; ``k``: every beacon's exit among
    the port-0x10 exits ``lo_rows``; ``hi_ts``: the port-0x11 exits' host TSCs; ``bg``, ``seq``, ``named``: every
    beacon's guest TSC and seq): (guest TSC, vCPU, lower, upper, has upper) of those whose exit has a vCPU and an
    offset."""
    col = c.col
    ex = k[matched]
    ex_ts = col.host_tsc[lo_rows[ex]]
    vcpu = c.vcpus_of_threads(col.pid[lo_rows[ex]])
    h, ok = c.to_guest_each(vcpu, ex_ts)
    keep = (vcpu >= 0) & ok
    if not keep.all():
        matched, ex, ex_ts, vcpu, h = matched[keep], ex[keep], ex_ts[keep], vcpu[keep], h[keep]
    g = bg[matched]
    lower = _diff(g, h)
    # upper: the next beacon's TSC minus this exit's high-half exit (the first port-0x11 exit after it, before
    # the next port-0x10 exit)
    has_hi = np.zeros(len(matched), dtype=bool)
    upper = np.zeros(len(matched), dtype=np.int64)
    if len(hi_ts) and len(matched):  # (then lo_rows and bg are not empty either)
        j = np.searchsorted(hi_ts, ex_ts, side="right")
        hi_at = hi_ts[np.minimum(j, len(hi_ts) - 1)]
        last = ex + 1 >= len(lo_rows)
        before_next = last | (hi_at < col.host_tsc[lo_rows[np.minimum(ex + 1, len(lo_rows) - 1)]])
        hh, ok2 = c.to_guest_each(vcpu, hi_at)
        has_hi = (matched + 1 < len(bg)) & (j < len(hi_ts)) & before_next & ok2
        # the next beacon on the guest axis was written after this one only where its seq says so (a kvm-clock
        # stamp converted back can land after later beacons' when the pvclock records step back; seq restarts
        # with each run of the guest; a gap is a beacon not traced)
        nxt = np.minimum(matched + 1, len(bg) - 1)
        has_hi &= ~(named[matched] & named[nxt]) | (seq[nxt] > seq[matched])
        upper = _diff(bg[nxt], hh)
    np.copyto(upper, 0, where=~has_hi)
    return g, vcpu, lower, upper, has_hi


def _msr_writes(c: _Ctx, f: Found) -> None:
    col = c.col
    picked: list[list[np.ndarray]] = [[], [], [], []]  # rows, MSR, value, guest-first: per event
    for name, first in (("write_msr", False), ("tsalign_msr", True)):
        r = c.rows("guest", name)
        ms, vs, ok = c.fields("guest", (name,), r)
        for into, part in zip(picked, (r[ok], ms[ok], vs[ok], np.full(int(ok.sum()), first))):
            into.append(part)
        del ms, vs, ok
    rows, gm, gx, gf = (np.concatenate(p) for p in picked)
    picked.clear()
    if not rows.size:
        return
    gv, gt = col.cpu[rows], col.guest_tsc[rows]
    del rows
    r = c.rows("host", "kvm_msr")
    hm, hx, ok = c.fields("host", ("kvm_msr",), r)
    hv = c.vcpus_of_threads(col.pid[r])
    ok &= hv >= 0
    hv, hm, hx, ht = hv[ok], hm[ok], hx[ok], col.host_tsc[r][ok]
    del r, ok
    # pair by content: a (vCPU, MSR, value) seen exactly once on each side — each side sorted on its own, then joined
    # in one pass (a sort of both sides together and its group arrays held ~80 bytes a write more)
    gk, hk = _vcpu_msr_keys(gv, gm, hv, hm)
    del gm, hm, hv
    host_of = np.full(gk.size, -1, dtype=np.int64)
    shared = np.zeros(gk.size, dtype=bool)  # its (vCPU, MSR, value) seen on the host too
    _msr_join(gk, gx, np.lexsort((gx, gk)), hk, hx, np.lexsort((hx, hk)), host_of, shared)
    del gk, gx, hk, hx
    paired = host_of >= 0
    ambiguous = int((shared & ~paired).sum())
    if paired.any():
        pv = gv[paired]
        h, conv = c.to_guest_each(pv, ht[host_of[paired]])
        g, gfirst = gt[paired], gf[paired]
        d = _diff(g, h)
        for vc in np.unique(pv[conv]).tolist():
            sel = conv & (pv == vc)
            f.brackets.append(Brackets("msr_write", int(vc), np.where(gfirst[sel], d[sel], 0),
                                       np.where(gfirst[sel], 0, d[sel]), gfirst[sel], ~gfirst[sel], g[sel]))
    if ambiguous:
        f.notes.append(f"msr_write: {ambiguous} guest MSR writes not used (the same index and value more than once)")


def _vcpu_msr_keys(gv: np.ndarray, gm: np.ndarray, hv: np.ndarray, hm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (vCPU, MSR) of the guest's and the host's writes as one int64 key each, equal where both are: vCPU << 32 |
    MSR where every vCPU id and MSR index fits in 32 bits, else the codes of both among the distinct values seen
    (rare: a guest print of a longer index)."""
    v, m = np.concatenate([gv, hv]), np.concatenate([gm, hm])
    if not v.size or (int(v.min()) >= 0 and int(v.max()) < 1 << 32 and int(m.max()) < 1 << 32):
        k = (v.astype(np.int64) << np.int64(32)) | m.astype(np.int64)
    else:
        _, cv = np.unique(v, return_inverse=True)
        um, cm = np.unique(m, return_inverse=True)
        k = cv.reshape(-1).astype(np.int64) * np.int64(um.size) + cm.reshape(-1)
    return k[:gv.size], k[gv.size:]


def msr_join_py(gk: np.ndarray, gx: np.ndarray, og: np.ndarray, hk: np.ndarray, hx: np.ndarray, oh: np.ndarray,
                host_of: np.ndarray, shared: np.ndarray) -> None:
    """Join the guest's writes (keys ``gk``, values ``gx``, ``og`` ordering them by (key, value)) with the host's
    (``hk``, ``hx``, ``oh``): for each guest write whose (key, value) each side holds exactly once, ``host_of`` gets
    its host write's index; ``shared`` marks the guest writes whose (key, value) the host holds at all (compiled)."""
    i, j = 0, 0
    ng, nh = og.shape[0], oh.shape[0]
    while i < ng:
        k, v = gk[og[i]], gx[og[i]]
        i2 = i + 1
        while i2 < ng and gk[og[i2]] == k and gx[og[i2]] == v:
            i2 += 1
        while j < nh and (hk[oh[j]] < k or (hk[oh[j]] == k and hx[oh[j]] < v)):
            j += 1
        j2 = j
        while j2 < nh and hk[oh[j2]] == k and hx[oh[j2]] == v:
            j2 += 1
        for t in range(i, i2):
            shared[og[t]] = j2 > j
            if i2 - i == 1 and j2 - j == 1:
                host_of[og[t]] = oh[j]
        i, j = i2, j2


_msr_join = compiled(msr_join_py, msr_join_py)


def _port_beacons(c: _Ctx, f: Found) -> None:
    class _R:  # the record shape portbeacons reads
        __slots__ = ("event", "payload", "pid", "ts")

        def __init__(self, e: dict[str, Any]) -> None:
            self.event, self.payload, self.pid = e["event"], e["payload"], e["pid"]
            self.ts = e["host_tsc"] if e["side"] == "host" else e["guest_tsc"]

    col = c.col
    held = sparse_of(col.payload)  # (the payloads held; a policy holds markers only)
    hits = []  # the guest rows whose payload is a marker, a block at a time (millions of pio beacons' are held too)
    for lo in range(0, len(held.at), BLOCK_ROWS):
        at = held.at[lo:lo + BLOCK_ROWS]
        text = pa.array(held.texts[lo:lo + BLOCK_ROWS], pa.string())
        marker = np.asarray(pc.match_substring(text, "tsalign_beacon seq=").to_numpy(zero_copy_only=False), dtype=bool)
        hits.append(at[marker & ~col.is_host[at]])
    markers = [_R({"event": col.names[col.event_code[i]], "payload": col.payload[i], "pid": int(col.pid[i]),
                   "side": "guest", "guest_tsc": int(col.guest_tsc[i])})
               for i in np.concatenate([np.zeros(0, dtype=np.int64), *hits]).tolist()]
    beacons = guest_beacons(markers)
    if not beacons:
        return
    writes = host_port_write_threads((_R(e) for n in WRITE_CALLS for e in c.host(n)), set(c.tid_to_vcpu))
    try:
        fd = beacon_fd(beacons, writes)
    except InvalidParameter as e:  # an unusable beacon set is a note, not an error
        f.notes.append(f"port_beacon: not used: {e}")
        return
    rows: dict[int, list[tuple[int | None, int | None, int]]] = defaultdict(list)
    for (_, before, after), (ts, tid) in zip(beacons, sorted(writes[fd])):
        vcpu = c.vcpu_of_thread(tid)
        h = None if vcpu is None else c.to_guest(ts, vcpu)
        if vcpu is not None and h is not None:
            rows[vcpu].append((signed_diff(before, h), signed_diff(after, h), before))
    f.brackets += [Brackets.from_rows("port_beacon", v, r) for v, r in rows.items()]


def _irq_injections(c: _Ctx, f: Found) -> None:
    present = [n for n in INJECTIONS if c.host(n)]
    micro = c.guest("tsalign_irq")
    linux = c.guest("irq_handler_entry")
    if not present or not (micro or linux):
        return
    family = present[0]
    inj: list[tuple[dict[str, Any], tuple[str, int | None]]] = []
    for e in c.host(family):
        line = injection_line(e)
        if line is not None:
            inj.append((e, line))
    rows: dict[int, list[tuple[int | None, int | None, int]]] = defaultdict(list)
    latencies: list[int] = []
    if micro:
        if len(inj) != len(micro):
            f.notes.append(f"irq_injection: {len(inj)} {family} events for {len(micro)} micro-VM handlers: "
                           "not paired (lost events?)")
            return
        for k, (h_ev, g_ev) in enumerate(zip(inj, micro)):
            vcpu = g_ev["cpu"]
            h = c.to_guest(h_ev[0]["host_tsc"], vcpu)
            if h is None:
                continue
            upper = signed_diff(g_ev["guest_tsc"], h)
            latencies.append(upper)
            lower = signed_diff(micro[k - 1]["guest_tsc"], h) if k else None
            rows[vcpu].append((lower, upper, g_ev["guest_tsc"]))
    else:
        by_line: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for e, (kind, num) in inj:
            if kind == "gsi" and num is not None:
                by_line[num].append(e)
        handlers: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for g in linux:
            irq = kv(g["payload"]).get("irq")
            if irq is not None:
                handlers[irq].append(g)
        skipped = []
        for irq, hs in handlers.items():
            ij = by_line.get(irq, [])
            if not ij:
                continue
            if len(ij) != len(hs):
                skipped.append(f"irq {irq}: {len(ij)} injections, {len(hs)} handlers")
                continue
            for inj_ev, g_ev in zip(ij, hs):
                h = c.to_guest(inj_ev["host_tsc"], g_ev["cpu"])
                if h is not None:
                    d = signed_diff(g_ev["guest_tsc"], h)
                    latencies.append(d)
                    rows[g_ev["cpu"]].append((None, d, g_ev["guest_tsc"]))
        if skipped:
            f.notes.append("irq_injection: lines not paired (counts differ, order is ambiguous): " + "; ".join(skipped))
    f.brackets += [Brackets.from_rows("irq_injection", v, r) for v, r in rows.items()]
    f.details["irq_injection"] = {"injections": len(inj), "handlers": len(micro) + len(linux), "latencies": latencies}


def _gaps(c: _Ctx, tid: int) -> tuple[str, np.ndarray, np.ndarray] | None:
    """Host-TSC intervals during which vCPU thread ``tid`` certainly did not run guest code:
    (source, their starts, their ends: uint64 arrays, sorted, disjoint); None when the capture shows nothing of
    the thread.

    kvm_exit -> next kvm_entry where they fire (both traced in the thread itself). Otherwise a
    sched_switch away from the thread -> the first later sign that it may run again: its switch-in,
    or its sched_waking/sched_wakeup, whichever comes first. Switches *from idle* are not traced on every
    kernel (this CI machine records none on CPU 1): where the thread executes an event of its own before
    any switch-in or wakeup was recorded, when it resumed is unknown and that gap is not used."""
    start, stop = c.a.host_window
    col = c.col
    en, ex = c.rows("host", "kvm_entry"), c.rows("host", "kvm_exit")
    entries, exits = col.host_tsc[en[col.pid[en] == tid]], col.host_tsc[ex[col.pid[ex] == tid]]
    if entries.size and exits.size:  # in whole columns: millions of them in a long capture
        tt = np.concatenate([entries, exits])
        on = np.concatenate([np.ones(entries.size, dtype=bool), np.zeros(exits.size, dtype=bool)])
        o = np.lexsort((on, tt))  # by time; at one time the exit first
        tt, on = tt[o], on[o]
        at = np.nonzero(~on[:-1] & on[1:])[0]  # an exit followed by an entry
        gs, ge = [tt[at]], [tt[at + 1]]
        if on[0] and start is not None and start < int(tt[0]):
            gs.insert(0, np.asarray([start], dtype=np.uint64))
            ge.insert(0, tt[:1])
        if not on[-1] and stop is not None and int(tt[-1]) < stop:
            gs.append(tt[-1:])
            ge.append(np.asarray([stop], dtype=np.uint64))
        return "kvm_entry/kvm_exit", np.concatenate(gs), np.concatenate(ge)
    sw_t, sw_prev, sw_next = c.switches
    outs, ins = sw_t[sw_prev == tid], sw_t[sw_next == tid]  # in host TSC order
    if not outs.size and not ins.size:
        return None
    wake_t, wake_pid = c.wakes
    own = c.host_times_of(tid)
    signs = np.unique(np.concatenate([ins, wake_t[wake_pid == tid]]))  # sorted
    gs, ge = [], []
    if ins.size and start is not None and start < int(ins[0]) and (not own.size or own[0] >= ins[0]) \
            and (not outs.size or outs[0] > ins[0]):
        gs.append(np.asarray([start], dtype=np.uint64))  # off from the capture start until it was first switched in
        ge.append(ins[:1])
    # each switch-out: the gap ends at the next switch-in or wakeup; if the thread ran again (its own next event)
    # before any of them was recorded, when it resumed is unknown: no gap
    j = np.searchsorted(signs, outs, side="right")
    k = np.searchsorted(own, outs, side="right")
    sign_j = signs[np.minimum(j, signs.size - 1)] if signs.size else np.zeros(outs.size, dtype=np.uint64)
    own_k = own[np.minimum(k, own.size - 1)] if own.size else np.zeros(outs.size, dtype=np.uint64)
    ok = (j < signs.size) & ((k == own.size) | (sign_j <= own_k))
    gs.append(outs[ok])
    ge.append(sign_j[ok])
    a, b = np.concatenate(gs), np.concatenate(ge)
    o = np.lexsort((b, a))
    return "sched_switch", a[o], b[o]


def _vcpu_run(c: _Ctx, f: Found) -> None:
    if c.a.lost_events.get("host"):
        f.notes.append("vcpu_run: not used: the host ring buffers lost events (a lost sched_switch would fake a gap); "
                       "capture with a larger --buffer-kb")
        return
    col = c.col
    guest = ~col.is_host
    sources = {}
    for tid, vcpu in sorted(c.tid_to_vcpu.items(), key=lambda t: t[1]):
        gs = col.guest_tsc[guest & (col.cpu == vcpu)]
        if not gs.size:
            continue
        found = _gaps(c, tid)
        if found is None:
            continue
        src, gap_s, gap_e = found
        sources[f"vcpu{vcpu}"] = src
        # the runs are what the gaps leave (unbounded before the first and after the last)
        n = gap_s.size
        f.brackets.append(_run_brackets(
            c, vcpu, np.concatenate([np.zeros(1, dtype=np.uint64), gap_e]), np.concatenate([gap_s, np.zeros(1, dtype=np.uint64)]),
            np.arange(n + 1) > 0, np.arange(n + 1) < n, np.sort(gs)))
    if sources:
        f.details["vcpu_run"] = {"run_source": sources}


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b on the 64-bit circle, signed (uint64 arrays in, int64 out)."""
    return np.asarray((a - b).view(np.int64))


def _run_brackets(c: _Ctx, vcpu: int, host_s: np.ndarray, host_e: np.ndarray, hs: np.ndarray, he: np.ndarray,
                  g: np.ndarray) -> Brackets:
    """Each guest event (``g``) must lie in a run (host TSCs ``host_s`` to ``host_e``, uint64; a start or end
    where ``hs``/``he`` is False is unbounded), on the guest axis with the run's offset in use, the one in
    force at its end: inside run k, delta is bounded by [g - end_k, g - start_k]; between runs it is a
    violation, with the nearer escape as its bound. The runs allow a set of offsets that is not one
    interval, so these bounds hold around the offset judged; ``reeval(x)`` gives them around the offset
    in use + x (the judge uses it to say how far a wrong offset is from what all evidence allows)."""
    hs, he = hs.copy(), he.copy()
    at = np.where(he, host_e, host_s)  # the offset in force at a run's end (KVM writes it on vCPU load)
    gs, ge = c.to_guest_many(vcpu, host_s, at), c.to_guest_many(vcpu, host_e, at)
    if gs is None or ge is None:  # no offset known for the vCPU: no run bounds anything
        hs[:], he[:] = False, False
        gs = ge = host_s
    st = np.where(hs, gs, np.uint64(0)).astype(np.uint64)
    en = np.where(he, ge, np.uint64(2**64 - 1)).astype(np.uint64)
    order = np.argsort(st, kind="stable")
    st, en, hs, he = st[order], en[order], hs[order], he[order]

    def around(x: int) -> Brackets:
        b = _runs_at(vcpu, st, en, hs, he, g, x)
        b.reeval = around
        b.forbidden = lambda lo, hi: _runs_forbid(st, en, hs, he, g, lo, hi)
        return b

    return around(0)


#: guest events judged at a time by :func:`_runs_at` (its ~20 temporaries per event stay ~40 MiB)
_RUNS_BLOCK = 1 << 18


def _runs_at(vcpu: int, st: np.ndarray, en: np.ndarray, hs: np.ndarray, he: np.ndarray, g: np.ndarray,
             x: int) -> Brackets:
    """vCPU-run brackets of guest TSCs ``g`` judged around delta = ``x`` (bounds relative to delta 0), made
    :data:`_RUNS_BLOCK` events at a time."""
    parts = [_runs_block(st, en, hs, he, g[i:i + _RUNS_BLOCK], x) for i in range(0, len(g), _RUNS_BLOCK)]
    lower, upper, has_l, has_u = (np.concatenate([p[k] for p in parts]) if parts else
                                  np.zeros(0, dtype=np.int64 if k < 2 else bool) for k in range(4))
    return Brackets("vcpu_run", vcpu, lower, upper, has_l, has_u, g)


def _runs_block(st: np.ndarray, en: np.ndarray, hs: np.ndarray, he: np.ndarray, g: np.ndarray,
                x: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_runs_at` of some guest events: (lower, upper, has lower, has upper)."""
    ge = g - np.uint64(x % (1 << 64))  # where the events fall on the host's runs if the offset were off by x
    k = np.searchsorted(st, ge, side="right").astype(np.int64) - 1
    n = len(g)
    lower, upper = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    has_l, has_u = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    before_all = k < 0
    kk = np.clip(k, 0, len(st) - 1)
    inside = ~before_all & (ge <= en[kk])
    # inside run kk: delta >= g - end (when the end is known), delta <= g - start (when known)
    m = inside & he[kk]
    lower[m], has_l[m] = _diff(g[m], en[kk][m]), True
    m = inside & hs[kk]
    upper[m], has_u[m] = _diff(g[m], st[kk][m]), True
    # between run kk and kk+1 (or before the first run): outside every run -> the nearer escape
    gap = ~inside
    nxt = np.clip(kk + np.where(before_all, 0, 1), 0, len(st) - 1)
    has_next = gap & (before_all | (kk + 1 < len(st)))
    i64 = np.iinfo(np.int64)
    up_esc = np.where(has_next & hs[nxt], _diff(g, st[nxt]), i64.min)  # delta <= g - next start
    lo_esc = np.where(gap & ~before_all & he[kk], _diff(g, en[kk]), i64.max)  # delta >= g - end
    xf = float(x)
    use_up = gap & (np.abs(up_esc.astype(np.float64) - xf) <= np.abs(lo_esc.astype(np.float64) - xf))
    use_lo = gap & ~use_up & (lo_esc != i64.max)
    upper[use_up], has_u[use_up] = up_esc[use_up], True
    lower[use_lo], has_l[use_lo] = lo_esc[use_lo], True
    return lower, upper, has_l, has_u


_FAR = 1 << 62  # beyond any capture (cycles): an unbounded side of a gap
_MAX_CUTS = 2_000_000


def _runs_forbid(st: np.ndarray, en: np.ndarray, hs: np.ndarray, he: np.ndarray, g: np.ndarray,
                 lo: int, hi: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The open intervals (starts, ends: int64 arrays) of delta within [lo, hi] where some guest TSC of ``g`` would
    fall outside every run (exact: event g forbids (g - gap end, g - gap start) for every gap between runs); None
    when there are more than ``_MAX_CUTS`` of them."""
    none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if not len(g) or not len(st):
        return none
    ref = g[0]
    big = np.int64(_FAR)
    s = np.where(hs, _diff(st, np.full_like(st, ref)), -big)
    e = np.where(he, _diff(en, np.full_like(en, ref)), big)
    reach = np.maximum.accumulate(e)  # a gap starts where every earlier run has ended
    a = np.concatenate(([-big], reach))  # gap k lies between run k-1 and run k; gap len(st) after the last
    b = np.concatenate((s, [big]))
    keep = (a < b) & np.concatenate(([hs[0]], np.ones(len(st), dtype=bool))) \
        & np.concatenate((np.ones(len(st), dtype=bool), [he[-1]]))
    a, b = a[keep], b[keep]
    starts, ends = [none[0]], [none[1]]
    total = 0
    for i in range(0, len(g), _RUNS_BLOCK):  # (a block of events at a time: a few temporaries per event)
        gi = _diff(g[i:i + _RUNS_BLOCK], np.full(min(_RUNS_BLOCK, len(g) - i), ref, dtype=np.uint64))
        first = np.searchsorted(b, gi - np.int64(hi), side="right")  # gaps ending at or before g - hi miss the window
        last = np.searchsorted(a, gi - np.int64(lo), side="left")  # gaps starting at or after g - lo miss it
        count = np.maximum(last - first, 0)
        total += int(count.sum())
        if total > _MAX_CUTS:
            return None
        for m in range(int(count.max(initial=0))):
            sel = count > m
            j = first[sel] + m
            starts.append(gi[sel] - b[j])
            ends.append(gi[sel] - a[j])
    return np.concatenate(starts), np.concatenate(ends)


EXTRACTORS: tuple[Callable[[_Ctx, Found], None], ...] = (_vcpu_run, _msr_writes, _pio_beacons, _port_beacons,
                                                        _irq_injections)


def extract_all(aligned: Any) -> Found:
    """Every kind of the catalogue found in an alignment (``tsalign.align.merge.Aligned``)."""
    c = _Ctx(aligned)
    found = Found()
    for fn in EXTRACTORS:
        fn(c, found)
        release_freed_memory()  # its temporaries, before the next one's (each ~50 bytes per event at millions)
    return found
