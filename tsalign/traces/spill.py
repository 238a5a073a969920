"""Event payloads kept on disk while an alignment holds only the ones it reads.

``tsalign align`` judges an alignment from the payloads of a few event types (:data:`PayloadPolicy.keep`: the
evidence, the offset sources) and writes every payload only in its outputs. A :class:`PayloadSpill` takes each
side's payload text as it is read, in the trace's row order, into an unlinked temporary Arrow IPC file (in
``$TMPDIR``: nothing is left behind, even when the process is killed), and gives rows back by their row
numbers when the outputs are written, a block at a time: the text of the whole trace is never held in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import Unavailable
from .table import distinct

__all__ = ["PayloadPolicy", "PayloadSpill"]


@dataclass(frozen=True)
class PayloadPolicy:
    """Which payloads stay in memory when a side is read: those of the events named ``keep`` (bare names, without
    their system), those that start with one of ``prefixes`` (kprobe hits print ``(func+0x0/..)`` first) and those
    that contain one of ``markers``; every other row's payload is None in memory and kept in the spill only."""

    keep: frozenset[str]
    prefixes: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    #: per event name, a parser of its payloads (a pyarrow string array) -> (field 0, field 1 (uint64 arrays),
    #: matched (bool array)), applied as the events are read: what a consumer reads of those payloads is kept as
    #: two integers per row (:attr:`tsalign.traces.events.Events.fields`), the text only in the spill
    parsers: Mapping[str, Callable[[Any], tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    #: per event name, the same fields from a binary record's fields: (field names, their columns -> (field 0,
    #: field 1, matched), or None where the text must be parsed); a binary reader applies them
    #: (:meth:`tsalign.traces.printfmt.EventPrinter.fields`) and hands the result to :meth:`apply`
    binary: Mapping[str, tuple[tuple[str, ...], Callable[[Mapping[str, np.ndarray]], Any]]] = field(default_factory=dict)
    #: the spill of every payload (made by the reader that applies the policy)
    spill: PayloadSpill | None = field(default=None, compare=False)

    def with_spill(self) -> PayloadPolicy:
        """This policy with a new, empty spill (one per side read)."""
        return replace(self, spill=PayloadSpill())

    def with_parsers(self, parsers: Mapping[str, Callable[[Any], tuple[np.ndarray, np.ndarray, np.ndarray]]]
                     ) -> PayloadPolicy:
        """This policy parsing the payloads of ``parsers``' events too (its own parser first where both name one)."""
        return replace(self, parsers={**parsers, **self.parsers})

    def apply(self, names: Sequence[str], event: np.ndarray, payload: Sequence[str | None] | Any,
              decoded: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
              ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """The spill takes ``payload`` (one chunk, in row order: str or a pyarrow string array); returns the rows' payloads to hold in memory
        (object array: the text where the policy keeps it, None elsewhere) and, with :attr:`parsers`, the rows'
        parsed fields (zeros and not matched for the rows of other events). ``names``: the event vocabulary
        ``event`` (codes) indexes. ``decoded``: fields read from the records already (field 0, field 1, matched,
        and which rows they cover): an event's rows all covered are not parsed again."""
        import pyarrow as pa
        import pyarrow.compute as pc

        assert self.spill is not None, "with_spill() first"
        text = payload if isinstance(payload, pa.Array) else pa.array(payload, pa.string())
        self.spill.add(text)
        n = len(text)
        codes = distinct(event)
        lut = np.zeros(int(codes.max()) + 1 if codes.size else 1, dtype=bool)
        bare = {c: names[c].split(":")[-1] for c in codes.tolist()}
        for c, b in bare.items():
            lut[c] = b in self.keep
        keep = lut[event] if n else np.zeros(0, dtype=bool)
        fields = None
        if self.parsers:
            f0, f1, ok = np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=bool)
            for c, b in bare.items():
                parse = self.parsers.get(b)
                if parse is not None:
                    at = np.nonzero(event == c)[0]
                    if decoded is not None and decoded[3][at].all():
                        f0[at], f1[at], ok[at] = decoded[0][at], decoded[1][at], decoded[2][at]
                    else:
                        f0[at], f1[at], ok[at] = parse(text.take(pa.array(at)))
            fields = (f0, f1, ok)
        for p in self.prefixes:
            keep |= np.asarray(pc.fill_null(pc.starts_with(text, p), False).to_numpy(zero_copy_only=False), dtype=bool)
        for m in self.markers:
            keep |= np.asarray(pc.fill_null(pc.match_substring(text, m), False).to_numpy(zero_copy_only=False), dtype=bool)
        out = np.full(n, None, dtype=object)
        rows = np.nonzero(keep)[0]
        if rows.size:
            out[rows] = text.take(pa.array(rows)).to_pylist()
        return out, fields


def _unavailable(e: OSError) -> Unavailable:
    """A spill that cannot be written, named with its directory and the fix."""
    return Unavailable(f"the payload spill in {tempfile.gettempdir()} cannot be written ({e.strerror or e}): long "
                       "traces keep their payload text there while they are aligned (~50 bytes per event); set "
                       "TMPDIR to a directory on a disk with room")


#: rows per batch in the spill file (a block of the outputs reads about one back)
BATCH_ROWS = 1 << 16


class PayloadSpill:
    """Payload text in row order, appended a chunk at a time and taken back by row numbers (see the module doc)."""

    def __init__(self) -> None:
        # unlinked from the start: gone with the process, however it ends (closed with the object)
        try:
            self._file = tempfile.TemporaryFile(prefix="tsalign-payloads-")  # noqa: SIM115
        except OSError as e:
            raise _unavailable(e) from None
        self._writer: Any = None
        self._reader: Any = None
        self._starts = [0]  # row number of each batch's first row, then the total
        self._cache: dict[int, Any] = {}

    def __len__(self) -> int:
        return self._starts[-1]

    def add(self, text: Any) -> None:
        """Append one chunk's payloads (a pyarrow string array)."""
        import pyarrow as pa

        if self._reader is not None:
            raise RuntimeError("payload spill: rows added after rows were taken")
        if not len(text):
            return
        try:
            if self._writer is None:
                self._writer = pa.ipc.new_file(self._file, pa.schema([("payload", pa.string())]))
            for lo in range(0, len(text), BATCH_ROWS):  # small batches: what a block reads back is about one
                part = text.slice(lo, BATCH_ROWS)
                self._writer.write_batch(pa.record_batch([part], names=["payload"]))
                self._starts.append(self._starts[-1] + len(part))
        except OSError as e:  # e.g. TMPDIR full
            raise _unavailable(e) from None

    def take(self, rows: np.ndarray) -> Any:
        """The payloads of row numbers ``rows`` (a pyarrow string array, in the order asked). Batches are read as
        needed; those before the lowest row asked are let go (rows are asked for in about increasing order)."""
        import pyarrow as pa

        rows = np.asarray(rows, dtype=np.int64)
        if not rows.size:
            return pa.array([], pa.string())
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"payload spill: rows {int(rows.min())}..{int(rows.max())} asked of {len(self)}")
        if self._reader is None:
            self._writer.close()
            self._file.seek(0)
            self._reader = pa.ipc.open_file(self._file)
        starts = np.asarray(self._starts, dtype=np.int64)
        batch = np.searchsorted(starts, rows, side="right") - 1
        low = int(batch.min())
        for b in [b for b in self._cache if b < low]:
            del self._cache[b]
        used = np.unique(batch).tolist()
        for b in used:
            if b not in self._cache:
                self._cache[b] = self._reader.get_batch(b).column(0)
        if len(used) == 1:
            return self._cache[used[0]].take(pa.array(rows - starts[used[0]]))
        # each batch's rows taken from it, then put back in the order asked
        by_batch = np.argsort(batch, kind="stable")
        pieces = []
        for b in used:
            at = by_batch[batch[by_batch] == b]
            pieces.append(self._cache[b].take(pa.array(rows[at] - starts[b])))
        back = np.empty(rows.size, dtype=np.int64)
        back[by_batch] = np.arange(rows.size)
        return pa.concat_arrays(pieces).take(pa.array(back))
