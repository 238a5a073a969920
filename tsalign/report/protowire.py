"""Protocol buffers' wire format for whole columns (pyarrow binary arrays, one encoded value per row): varints
and length-delimited fields, so that millions of messages of one shape are encoded by a few array kernels
instead of a message object each. The field numbers come from the caller (read from the message descriptors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..jit import compiled

__all__ = ["LEN", "VARINT", "binary_of", "key", "put_varint", "varint", "varint_len", "varints", "varints_numpy"]

#: wire types
VARINT, LEN = 0, 2

_MAX_VARINT = 10  # bytes of a 64-bit value


def varint(value: int) -> bytes:
    """The varint bytes of one unsigned value (< 2^64)."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{value} is not an unsigned 64-bit value")
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    """A field's key (tag) bytes."""
    return varint(field << 3 | wire)


def varints(values: np.ndarray) -> tuple[Any, np.ndarray]:
    """(pyarrow binary array of each value's varint bytes, their byte counts (int64)) of uint64 ``values``: in one
    compiled pass (numba) where it is installed, else :func:`varints_numpy`."""
    if _encode is None or _lengths is None:
        return varints_numpy(values)
    v = np.ascontiguousarray(values, dtype=np.uint64)
    nbytes = np.empty(v.size, dtype=np.int64)
    data = np.empty(int(_lengths(v, nbytes)), dtype=np.uint8)
    _encode(v, data)
    return binary_of(data, nbytes), nbytes


def varint_len_py(x: np.uint64) -> int:
    """Bytes of the varint of one uint64 (compiled)."""
    k = 1
    while x >= 0x80:
        x >>= 7
        k += 1
    return k


def put_varint_py(out: np.ndarray, pos: int, x: np.uint64) -> int:
    """The varint bytes of one uint64 into ``out`` from ``pos``; returns the position after them (compiled)."""
    while x >= 0x80:
        out[pos] = (x & 0x7F) | 0x80
        pos += 1
        x >>= 7
    out[pos] = x
    return pos + 1


varint_len, put_varint = (compiled(varint_len_py, varint_len_py, inline=True),
                          compiled(put_varint_py, put_varint_py, inline=True))


def varint_lengths_py(v: np.ndarray, nbytes: np.ndarray) -> int:
    """Bytes of each value's varint into ``nbytes``; returns their sum (compiled by numba)."""
    total = 0
    for i in range(v.size):
        nbytes[i] = varint_len(v[i])
        total += nbytes[i]
    return total


def varint_encode_py(v: np.ndarray, out: np.ndarray) -> None:
    """Every value's varint bytes, one after the other, into ``out`` (sized by :func:`varint_lengths_py`)."""
    pos = 0
    for i in range(v.size):
        pos = put_varint(out, pos, v[i])


_lengths, _encode = compiled(varint_lengths_py), compiled(varint_encode_py)


def varints_numpy(values: np.ndarray) -> tuple[Any, np.ndarray]:
    """:func:`varints` in numpy passes (a pass per 7 bits of the largest value)."""
    v = np.asarray(values, dtype=np.uint64)
    n = v.size
    nbytes = np.ones(n, dtype=np.int64)
    width = 1  # bytes of the largest value
    rest = v >> np.uint64(7)
    while width < _MAX_VARINT and rest.any():
        nbytes += rest != 0
        width += 1
        rest >>= np.uint64(7)
    groups = np.empty((n, width), dtype=np.uint8)
    rest = v.copy()
    for i in range(width):
        groups[:, i] = (rest & np.uint64(0x7F)).astype(np.uint8)
        rest >>= np.uint64(7)
    cols = np.arange(width)
    groups |= ((cols < (nbytes - 1)[:, None]) * 0x80).astype(np.uint8)  # every byte but a value's last: high bit
    data = groups[cols < nbytes[:, None]]  # row by row: each value's bytes in order
    return binary_of(data, nbytes), nbytes


def binary_of(data: np.ndarray, lengths: np.ndarray) -> Any:
    """A pyarrow binary array of ``data`` (uint8) cut into consecutive values of ``lengths`` bytes."""
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), lengths.size,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))])
