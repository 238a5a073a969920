"""The columnar events table every reader produces, in time-ordered chunks.

A :class:`Chunk` holds numpy columns: ``ts`` (uint64, raw clock units of the trace's clock domain),
``cpu``, ``pid`` (int32), ``event`` and ``comm`` (int32 codes into the shared :class:`Vocab`). Payloads
stay where they are: binary readers keep references to the raw ring-buffer blocks (``raws``, ``src``,
``off``, ``size``) and decode fields only when asked; text readers keep the payload text.
:func:`merge_sorted` merges time-ordered chunk streams (per-CPU buffers, host and guest) with memory
bounded by the chunk size: it emits what no stream can still undercut (a watermark merge).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Chunk", "Vocab", "concat", "distinct", "merge_sorted"]

#: the largest value :func:`distinct` counts rather than hashes (a table of this many counts, 8 bytes each)
_COUNTED = 1 << 16


def distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` of an integer array (ascending), by counting where the values are small and not
    negative (event types, codes into a vocabulary, CPUs, spill sources: ~3x faster than numpy's hash of each value,
    for every chunk a reader makes)."""
    a = np.asarray(values)
    if a.size and a.dtype.kind in "iu":
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi < _COUNTED:
            out: np.ndarray = np.flatnonzero(np.bincount(a.astype(np.intp, copy=False), minlength=hi + 1)).astype(a.dtype)
            return out
    return np.unique(a)


class Vocab:
    """Append-only string <-> code table (event names, comms)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def code(self, s: str) -> int:
        c = self.index.get(s)
        if c is None:
            c = self.index[s] = len(self.items)
            self.items.append(s)
        return c

    def codes(self, strings: Iterable[str]) -> np.ndarray:
        """Codes of ``strings`` (new ones added, in order of first appearance)."""
        values = strings if isinstance(strings, list) else list(strings)
        index = self.index
        for s in dict.fromkeys(values):
            if s not in index:
                self.code(s)
        return np.asarray([index[s] for s in values], dtype=np.int32)

    def decode(self, codes: np.ndarray) -> list[str]:
        items = self.items
        return [items[c] for c in codes.tolist()]


@dataclass
class Chunk:
    """Events in timestamp order. Binary payloads: ``raws[src[i]][off[i]:off[i]+size[i]]``."""

    ts: np.ndarray
    cpu: np.ndarray
    pid: np.ndarray
    event: np.ndarray
    comm: np.ndarray
    #: the texts of a text trace (a pyarrow string array where the reader's :attr:`Trace.arrow_payloads` is set)
    payload: list[str] | Any = None
    raws: list[np.ndarray] = field(default_factory=list)
    src: np.ndarray | None = None
    off: np.ndarray | None = None
    size: np.ndarray | None = None
    type_id: np.ndarray | None = None  # binary: the event's common_type, for field decoding
    tgid: np.ndarray | None = None  # the thread group id where the trace records it (ftrace's TGID column; -1: not shown)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, idx: np.ndarray) -> Chunk:
        """Rows ``idx`` (an index or boolean array), keeping payload references."""
        def sel(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]
        payload = None
        if self.payload is not None:
            ii = np.arange(len(self))[idx] if idx.dtype == bool else idx
            payload = [self.payload[i] for i in ii.tolist()]
        return Chunk(self.ts[idx], self.cpu[idx], self.pid[idx], self.event[idx], self.comm[idx], payload,
                     self.raws, sel(self.src), sel(self.off), sel(self.size), sel(self.type_id), sel(self.tgid))


def _empty_like(c: Chunk) -> Chunk:
    return c.take(np.zeros(0, dtype=np.int64))


def concat(chunks: Sequence[Chunk]) -> Chunk:
    """Concatenate chunks (no reordering); raw payload references are renumbered, unused ones dropped."""
    chunks = [c for c in chunks if len(c)] or list(chunks[:1])
    if len(chunks) == 1:
        return chunks[0]
    if not chunks:
        z = np.zeros(0, dtype=np.int32)
        return Chunk(np.zeros(0, dtype=np.uint64), z, z, z, z)
    cat = np.concatenate
    text = all(c.payload is not None for c in chunks)
    binary = all(c.src is not None for c in chunks)
    payload = [p for c in chunks for p in (c.payload or [])] if text else None
    raws: list[np.ndarray] = []
    srcs = []
    if binary:
        ids: dict[int, int] = {}
        for c in chunks:
            assert c.src is not None
            remap = np.zeros(len(c.raws), dtype=np.int32)
            for s in distinct(c.src).tolist():
                r = c.raws[s]
                if id(r) not in ids:
                    ids[id(r)] = len(raws)
                    raws.append(r)
                remap[s] = ids[id(r)]
            srcs.append(remap[c.src])

    def opt(name: str) -> np.ndarray | None:
        parts = [getattr(c, name) for c in chunks]
        return None if any(p is None for p in parts) else cat(parts)

    return Chunk(cat([c.ts for c in chunks]), cat([c.cpu for c in chunks]), cat([c.pid for c in chunks]),
                 cat([c.event for c in chunks]), cat([c.comm for c in chunks]), payload, raws,
                 cat(srcs) if binary else None, opt("off"), opt("size"), opt("type_id"), opt("tgid"))


def merge_sorted(streams: Sequence[Iterator[Chunk]]) -> Iterator[Chunk]:
    """Merge streams, each time-ordered, into one time-ordered stream of chunks.

    Memory: at most one pending chunk per stream plus the chunk being emitted. Ties keep stream order
    (stable), so a merge of per-CPU streams orders equal timestamps by CPU, as trace-cmd does.
    """
    its = list(streams)
    if len(its) == 1:
        yield from its[0]
        return
    pending: list[Chunk | None] = [None] * len(its)
    live = [True] * len(its)

    def pull(k: int) -> None:
        try:
            nxt = next(its[k])
        except StopIteration:
            live[k] = False
            return
        cur = pending[k]
        pending[k] = nxt if cur is None or not len(cur) else concat([cur, nxt])

    def has(k: int) -> bool:
        p = pending[k]
        return p is not None and len(p) > 0

    while True:
        for k in range(len(its)):
            while live[k] and not has(k):
                pull(k)
        if not any(has(k) for k in range(len(its))):
            return
        # the watermark: a live stream can still produce events at or after its pending last one, so
        # only what is strictly earlier is final (ties wait, keeping them in stream order)
        marks = [int(p.ts[-1]) for k, p in enumerate(pending) if live[k] and p is not None and len(p)]
        mark = min(marks) if marks else None
        parts = []
        for k, p in enumerate(pending):
            if p is None or not len(p):
                continue
            n = len(p) if mark is None else int(np.searchsorted(p.ts, np.uint64(mark), side="left"))
            if n:
                parts.append(p.take(np.arange(n)))
                pending[k] = p.take(np.arange(n, len(p)))
        if parts:
            out = concat(parts)
            yield out.take(np.argsort(out.ts, kind="stable"))
        else:  # everything pending sits at the mark: read further in the streams that set it
            for k, p in enumerate(pending):
                if live[k] and p is not None and len(p) and int(p.ts[-1]) == mark:
                    pull(k)
