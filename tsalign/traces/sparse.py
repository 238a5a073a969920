"""A column of texts that is mostly None, held as the rows that have one.

A side read with a payload policy (tsalign.traces.spill) keeps only a few payloads in memory (the evidence's
markers, the offset events'); the others are None and wait in the spill. As a numpy object array that column
costs 8 bytes a row for nothing (40 MiB at 5 M events, in each side read and again in the merged table).
:class:`SparseTexts` holds the rows that have a text (sorted int64) and their texts, and answers what the
alignment asks of a payload column: its length, a row, ``[slice]`` and ``[rows]`` (another sparse column),
:meth:`~SparseTexts.tolist`, :meth:`~SparseTexts.dense`; :func:`placed` puts several columns' rows where a merge
puts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["SparseTexts", "as_dense", "concatenated", "payload_strings", "placed", "sparse_of"]


class SparseTexts:
    """``n`` rows; row ``at[k]`` holds ``texts[k]`` (``at`` sorted, distinct, int64), every other row None."""

    __slots__ = ("at", "n", "texts")
    dtype = np.dtype(object)

    def __init__(self, n: int, at: np.ndarray, texts: np.ndarray) -> None:
        if len(at) != len(texts):
            raise ValueError(f"{len(at)} rows for {len(texts)} texts")
        self.n, self.at, self.texts = int(n), np.asarray(at, dtype=np.int64), texts

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int]:
        return (self.n,)

    @property
    def size(self) -> int:
        return self.n

    def __getitem__(self, idx: Any) -> Any:
        """A row's text (None: none) for an integer; a :class:`SparseTexts` of the rows asked for a slice (step 1),
        an integer array or a boolean mask (numpy's indexing, negative indices included)."""
        if isinstance(idx, (int, np.integer)):
            i = int(idx) + (self.n if int(idx) < 0 else 0)
            if not 0 <= i < self.n:
                raise IndexError(f"row {int(idx)} of {self.n}")
            k = int(np.searchsorted(self.at, i))
            return self.texts[k] if k < len(self.at) and int(self.at[k]) == i else None
        if isinstance(idx, slice):
            lo, hi, step = idx.indices(self.n)
            if step == 1:
                a, b = np.searchsorted(self.at, [lo, max(lo, hi)])
                return SparseTexts(max(hi - lo, 0), self.at[a:b] - lo, self.texts[a:b])
            rows = np.arange(lo, hi, step, dtype=np.int64)
        else:
            rows = np.asarray(idx)
        if rows.dtype == np.bool_:
            if rows.shape != (self.n,):
                raise IndexError(f"a mask of {rows.shape} for {self.n} rows")
            rows = np.flatnonzero(rows)
        if rows.size and rows.dtype.kind not in "iu":
            raise IndexError(f"rows of dtype {rows.dtype}")
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (int(rows.min()) < -self.n or int(rows.max()) >= self.n):
            raise IndexError(f"rows {int(rows.min())}..{int(rows.max())} of {self.n}")
        rows = np.where(rows < 0, rows + self.n, rows)
        if not len(self.at):
            return SparseTexts(rows.size, self.at, self.texts)
        pos = np.minimum(np.searchsorted(self.at, rows), len(self.at) - 1)
        hit = np.flatnonzero(self.at[pos] == rows)
        return SparseTexts(rows.size, hit, self.texts[pos[hit]])

    def dense(self) -> np.ndarray:
        """Every row (object array: the text or None)."""
        out = np.full(self.n, None, dtype=object)
        out[self.at] = self.texts
        return out

    def tolist(self) -> list[Any]:
        out: list[Any] = self.dense().tolist()
        return out

    def __repr__(self) -> str:
        return f"SparseTexts({self.n} rows, {len(self.at)} texts)"


def sparse_of(values: Sequence[Any] | np.ndarray) -> SparseTexts:
    """``values`` (an object array or a list; None: no text) as a :class:`SparseTexts`."""
    if isinstance(values, SparseTexts):
        return values
    a = values if isinstance(values, np.ndarray) else np.asarray(list(values), dtype=object)
    at = np.flatnonzero(np.asarray(a != None, dtype=bool)) if a.size else np.zeros(0, dtype=np.int64)  # (elementwise)
    return SparseTexts(len(a), at, a[at])


def as_dense(values: Any) -> Any:
    """``values`` as it is, or an object array where it is a :class:`SparseTexts`."""
    return values.dense() if isinstance(values, SparseTexts) else values


def payload_strings(payload: Any) -> Any:
    """A payload column as a pyarrow string array (a numpy object array or a sparse column converted, a pyarrow one
    as it is)."""
    import pyarrow as pa

    return payload if isinstance(payload, (pa.Array, pa.ChunkedArray)) else pa.array(as_dense(payload), pa.string())


def concatenated(parts: Sequence[Any]) -> SparseTexts:
    """The parts' rows (sparse columns, or object arrays made sparse) one after the other."""
    sp = [sparse_of(p) for p in parts]
    base = np.cumsum([0, *(len(s) for s in sp)])
    empty = np.zeros(0, dtype=np.int64)
    return SparseTexts(int(base[-1]), np.concatenate([b + s.at for b, s in zip(base.tolist(), sp)] or [empty]),
                       np.concatenate([s.texts for s in sp]) if sp else np.zeros(0, dtype=object))


def placed(parts: Sequence[Any], n: int, positions: Sequence[np.ndarray] | None = None,
           order: np.ndarray | None = None) -> SparseTexts:
    """The parts' rows (sparse columns, or object arrays made sparse) in one sparse column of ``n`` rows: part
    ``j``'s row ``i`` at ``positions[j][i]``, or — with ``order`` (the merged rows as indices into the parts
    concatenated) — at the place ``order`` gives it."""
    if positions is not None:
        sp = [sparse_of(p) for p in parts]
        at = np.concatenate([pos[s.at] for pos, s in zip(positions, sp)] or [np.zeros(0, dtype=np.int64)])
        texts = np.concatenate([s.texts for s in sp]) if sp else np.zeros(0, dtype=object)
    else:
        assert order is not None, "positions or order"
        whole = concatenated(parts)
        where = np.empty(len(order), dtype=np.int64)
        where[order] = np.arange(len(order), dtype=np.int64)
        at, texts = where[whole.at], whole.texts
        del where
    k = np.argsort(at, kind="stable")
    return SparseTexts(n, at[k], texts[k])
