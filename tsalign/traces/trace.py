"""The reader interface: a trace's description (:class:`TraceInfo`) and its time-ordered chunks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .clockcheck import domain_of
from .table import Chunk, Vocab

__all__ = ["Trace", "TraceInfo"]


@dataclass
class TraceInfo:
    """Where a trace came from and what its timestamps mean.

    ``clock``: the clock the timestamps are in (after sanity checks); ``domain``: tsc, ns, counter,
    jiffies or unknown; ``resolution``: units one timestamp step can resolve (1 unless the text format
    printed fewer digits, e.g. perf script's microseconds = 1000 ns).
    """

    path: str
    format: str
    clock: str
    domain: str = ""
    buffer: str = ""
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    resolution: int = 1
    notes: list[str] = field(default_factory=list)  # informational (an inferred clock, a resolution)

    def set_clock(self, clock: str, warnings: list[str] = ()) -> None:  # type: ignore[assignment]
        self.clock = clock
        self.domain = domain_of(clock)
        self.warnings.extend(warnings)

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)


class Trace:
    """Base class of readers. Subclasses implement :meth:`raw_chunks` and :meth:`fields`."""

    info: TraceInfo

    def __init__(self) -> None:
        self.events = Vocab()
        self.comms = Vocab()
        self.lost_pages = 0
        #: a consumer that takes a chunk's payload texts as a pyarrow string array too (EventsBuilder) sets this: a
        #: text reader whose columns are pyarrow's then hands them over as they are (1.6 M lines: ~0.6 s less than
        #: Python strings made and turned back); otherwise :attr:`Chunk.payload` is a list of str
        self.arrow_payloads = False

    def warn(self, msg: str) -> None:
        if msg not in self.info.warnings:
            self.info.warnings.append(msg)

    def raw_chunks(self) -> Iterator[Chunk]:
        raise NotImplementedError

    def chunks(self) -> Iterator[Chunk]:
        """Time-ordered chunks of events; warnings (lost events, clock doubts) land in ``info``."""
        yield from self.raw_chunks()
        if self.lost_pages:
            self.warn(f"{self.info.path}: {self.lost_pages} ring-buffer page(s) flag missed events (the buffer overran)")

    def fields(self, chunk: Chunk, event: str, names: list[str] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Rows of ``chunk`` holding ``event`` and their decoded fields (name -> column)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def summary(self) -> dict[str, Any]:
        """Event count, per-event counts, first/last timestamp, CPUs, clock and warnings (reads everything)."""
        count = 0
        per: Counter[int] = Counter()
        first = last = None
        cpus: set[int] = set()
        for c in self.chunks():
            if not len(c):
                continue
            count += len(c)
            codes, n = np.unique(c.event, return_counts=True)
            per.update(dict(zip(codes.tolist(), n.tolist())))
            first = int(c.ts[0]) if first is None else first
            last = int(c.ts[-1])
            cpus.update(np.unique(c.cpu).tolist())
        counts = {self.events.items[i]: n for i, n in per.items()}
        return {"path": self.info.path, "format": self.info.format, "buffer": self.info.buffer,
                "clock": self.info.clock, "domain": self.info.domain, "resolution": self.info.resolution,
                "events": count, "per_event": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
                "first_ts": first, "last_ts": last, "cpus": sorted(cpus), "warnings": list(self.info.warnings),
                "notes": list(self.info.notes),
                "meta": self.info.meta}
