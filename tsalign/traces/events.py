"""One side's events as columns: what ``align`` and ``analyze`` read from a bundle or any trace.

:class:`Events` holds numpy columns in the trace's order: ``ts`` (uint64, the trace's clock units), ``cpu``,
``pid``, ``tgid`` (int32, or int64 where a value needs it: :func:`narrow`; ``tgid`` -1 where the trace does not
record it), ``comm`` and ``event`` (int32 codes
into :attr:`Events.comms` / :attr:`Events.names`; event names without their system), ``payload`` (object
array of str: the kernel's text of each event; None where a :class:`~tsalign.traces.spill.PayloadPolicy` left it in
the side's :attr:`Events.spill`). Selecting the rows of one event name, one thread or one
CPU is a mask on integer columns; only the rows a consumer needs are ever turned into Python objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..heap import release_freed_memory
from .ftrace_text import Record
from .sparse import SparseTexts, concatenated, sparse_of
from .spill import PayloadPolicy, PayloadSpill
from .table import Vocab, distinct

__all__ = ["Events", "EventsBuilder", "narrow", "objects"]


def narrow(values: np.ndarray) -> np.ndarray:
    """An integer column as int32 where every value fits (CPUs, thread ids: half the memory of int64), else int64."""
    a = np.asarray(values)
    if a.dtype == np.int32:
        return a
    if a.size and (int(a.min()) < -(1 << 31) or int(a.max()) >= 1 << 31):
        return a.astype(np.int64, copy=False)
    return a.astype(np.int32)


def objects(values: Sequence[str]) -> np.ndarray:
    """``values`` as a numpy object array."""
    a = np.empty(len(values), dtype=object)
    a[:] = values
    return a


@dataclass
class Events:
    """Columns of one side's events (see the module doc)."""

    ts: np.ndarray
    cpu: np.ndarray
    pid: np.ndarray
    tgid: np.ndarray
    comm: np.ndarray
    event: np.ndarray
    payload: np.ndarray | SparseTexts
    comms: list[str]
    names: list[str]
    #: every row's payload text, where ``payload`` holds only those a policy kept (None: ``payload`` is complete)
    spill: PayloadSpill | None = None
    #: with a spill: each row's row number in it (int64; None: the rows are the spill's, in order)
    src: np.ndarray | None = None
    #: payload fields parsed as the events were read (a policy's parsers): field 0, field 1 (uint64), matched (bool)
    #: per row, for the rows of the events named in ``parsed`` (bare names)
    fields: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    parsed: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def code(self, name: str) -> int:
        """The code of event ``name`` (-1: no such event)."""
        try:
            return self.names.index(name)
        except ValueError:
            return -1

    def rows(self, *names: str) -> np.ndarray:
        """Indices of the events named ``names``, in order."""
        codes = [c for c in (self.code(n) for n in names) if c >= 0]
        if not codes:
            return np.zeros(0, dtype=np.int64)
        return np.nonzero(np.isin(self.event, codes))[0]

    def event_strings(self) -> np.ndarray:
        """The event name of every row (object array)."""
        return objects(self.names)[self.event] if len(self) else np.zeros(0, dtype=object)

    def comm_strings(self) -> np.ndarray:
        return objects(self.comms)[self.comm] if len(self) else np.zeros(0, dtype=object)

    def spill_rows(self) -> np.ndarray | None:
        """Each row's row number in :attr:`spill` (None without one)."""
        if self.spill is None:
            return None
        return np.arange(len(self), dtype=np.int64) if self.src is None else self.src

    def take(self, idx: np.ndarray) -> Events:
        rows = self.spill_rows()
        return Events(self.ts[idx], self.cpu[idx], self.pid[idx], self.tgid[idx], self.comm[idx], self.event[idx],
                      self.payload[idx], self.comms, self.names, self.spill, None if rows is None else rows[idx],
                      None if self.fields is None else (self.fields[0][idx], self.fields[1][idx], self.fields[2][idx]),
                      self.parsed)

    def with_ts(self, ts: np.ndarray) -> Events:
        """The same events with other timestamps (a conversion's result, same length)."""
        return Events(np.asarray(ts, dtype=np.uint64), self.cpu, self.pid, self.tgid, self.comm, self.event, self.payload,
                      self.comms, self.names, self.spill, self.src, self.fields, self.parsed)

    def records(self) -> Iterator[Record]:
        """Row by row, for consumers that read one event at a time."""
        names, comms = self.names, self.comms
        for ts, cpu, pid, comm, ev, payload, tgid in zip(self.ts.tolist(), self.cpu.tolist(), self.pid.tolist(),
                                                          self.comm.tolist(), self.event.tolist(), self.payload.tolist(),
                                                          self.tgid.tolist()):
            yield Record(ts, cpu, pid, comms[comm], names[ev], payload, tgid)

    @classmethod
    def from_records(cls, recs: Iterable[Record]) -> Events:
        b = EventsBuilder()
        b.add_records(list(recs))
        return b.build()


#: chunks between returns of the C heap's freed pages while a trace is read (malloc_trim, ~10 ms each)
TRIM_EVERY = 4


class EventsBuilder:
    """Collects chunks of events (codes into its own vocabularies) into one :class:`Events`; with a ``policy``,
    every payload goes to a spill and only those the policy keeps stay in memory."""

    def __init__(self, policy: PayloadPolicy | None = None) -> None:
        self.policy = None if policy is None else policy.with_spill()
        self._comms, self._names = Vocab(), Vocab()
        self.comms, self.names = self._comms.items, self._names.items
        #: per column (ts, cpu, pid, tgid, comm, event), its chunks
        self._cols: list[list[np.ndarray]] = [[] for _ in range(6)]
        self._payloads: list[Any] = []
        self._fields: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._chunks = 0

    def comm_codes(self, comms: Sequence[str]) -> np.ndarray:
        return self._comms.codes(list(comms))

    def name_codes(self, names: Sequence[str]) -> np.ndarray:
        return self._names.codes(list(names))

    def recode(self, codes: np.ndarray, vocab: Sequence[str], kind: str, bare: bool = False) -> np.ndarray:
        """``codes`` into ``vocab`` (a reader's) as codes into this builder's ``kind`` (``comm`` or ``event``)
        vocabulary; ``bare``: names without their ``system:``."""
        used = distinct(codes)
        lut = np.zeros(int(used.max()) + 1 if used.size else 1, dtype=np.int32)
        strings = [vocab[c].split(":")[-1] if bare else vocab[c] for c in used.tolist()]
        mine = self.comm_codes(strings) if kind == "comm" else self.name_codes(strings)
        lut[used] = mine
        out: np.ndarray = lut[codes]
        return out

    def add_codes(self, ts: np.ndarray, cpu: np.ndarray, pid: np.ndarray, tgid: np.ndarray | None, comm: np.ndarray,
                  event: np.ndarray, payload: Sequence[str] | Any,
                  decoded: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        """One chunk's columns; ``payload``: its payload texts (a sequence of str, or a pyarrow string array);
        ``decoded``: fields the policy parses, read from the records already (:meth:`PayloadPolicy.apply`)."""
        n = len(ts)
        arrays: tuple[np.ndarray, ...] = (
            np.asarray(ts, dtype=np.uint64), narrow(cpu), narrow(pid),
            np.full(n, -1, dtype=np.int32) if tgid is None else narrow(tgid),
            np.asarray(comm, dtype=np.int32), np.asarray(event, dtype=np.int32))
        for col, a in zip(self._cols, arrays):
            col.append(a)
        if self.policy is not None:
            held, fields = self.policy.apply(self.names, arrays[5], payload, decoded)
            payload = sparse_of(held)  # (the few it keeps: a row's None would cost 8 bytes)
            if fields is not None:
                self._fields.append(fields)
        elif hasattr(payload, "to_pylist"):  # a reader's pyarrow strings (all held: as str)
            payload = payload.to_pylist()
        self._payloads.append(payload)
        self._chunks += 1
        if self._chunks % TRIM_EVERY == 0:  # the readers' freed temporaries, before they set the read's peak
            release_freed_memory()

    def add_records(self, rs: Sequence[Record]) -> None:
        """Add event records (one chunk)."""
        self.add_codes(np.fromiter((r.ts for r in rs), dtype=np.uint64, count=len(rs)),
                       np.fromiter((r.cpu for r in rs), dtype=np.int64, count=len(rs)),
                       np.fromiter((r.pid for r in rs), dtype=np.int64, count=len(rs)),
                       np.fromiter((r.tgid for r in rs), dtype=np.int64, count=len(rs)),
                       self.comm_codes([r.comm for r in rs]), self.name_codes([r.event for r in rs]),
                       [r.payload for r in rs])

    def build(self) -> Events:
        """The events collected (once: the builder gives up its chunks, a column at a time, so that the peak holds
        the chunks and one column more, not two copies of everything)."""
        if not self._cols[0]:
            z = np.zeros(0, dtype=np.int64)
            return Events(np.zeros(0, dtype=np.uint64), z, z, z, z.astype(np.int32), z.astype(np.int32),
                          np.zeros(0, dtype=object), self.comms, self.names,
                          None if self.policy is None else self.policy.spill)
        cols = []
        for parts in self._cols:
            cols.append(np.concatenate(parts))
            parts.clear()
        payload: np.ndarray | SparseTexts
        if self.policy is not None:  # the payloads the policy keeps, a few: the others are None (in the spill)
            payload = concatenated(self._payloads)
        else:
            payload = np.empty(len(cols[0]), dtype=object)
            at = 0
            for p in self._payloads:
                payload[at:at + len(p)] = p
                at += len(p)
        self._payloads.clear()
        ts, cpu, pid, tgid, comm, event = cols
        fields = None
        if self._fields:
            fields = (np.concatenate([f[0] for f in self._fields]), np.concatenate([f[1] for f in self._fields]),
                      np.concatenate([f[2] for f in self._fields]))
            self._fields.clear()
        return Events(ts, cpu, pid, tgid, comm, event, payload, self.comms, self.names,
                      None if self.policy is None else self.policy.spill, None, fields,
                      frozenset(self.policy.parsers) if fields is not None and self.policy is not None else frozenset())
