"""Strings as the compiled loops take them: one uint8 buffer and int64 offsets (string ``k``:
``data[offs[k]:offs[k + 1]]``), from a pyarrow string array's own buffers or packed from a few byte strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["pack", "string_buffers"]


def string_buffers(a: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(data, offsets) of a pyarrow string or large_string array without nulls (views of its buffers, its slice's
    offsets widened to int64); None for anything else (a chunked array, nulls, another type)."""
    import pyarrow as pa

    if not isinstance(a, pa.Array) or a.null_count or a.type not in (pa.string(), pa.large_string()):
        return None
    n = len(a)
    if not n:
        return np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64)
    bufs = a.buffers()
    width = np.int32 if a.type == pa.string() else np.int64
    offs = np.frombuffer(bufs[1], dtype=width)[a.offset:a.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, dtype=np.uint8)
    return data, offs


def pack(items: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(data, offsets) of byte strings, back to back (a vocabulary, a writer's constant pieces)."""
    offs = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in items], out=offs[1:])
    return np.frombuffer(b"".join(items), dtype=np.uint8).copy(), offs
