"""Loops over whole columns compiled by numba (a dependency; each caller keeps a path for an interpreter without it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

__all__ = ["compiled", "put_bytes"]


@overload
def compiled(fn: Callable[..., Any]) -> Callable[..., Any] | None: ...


@overload
def compiled(fn: Callable[..., Any], fallback: Callable[..., Any]) -> Callable[..., Any]: ...


def compiled(fn: Callable[..., Any], fallback: Callable[..., Any] | None = None) -> Callable[..., Any] | None:
    """``fn`` compiled by numba (nopython, cached on disk, releasing the GIL), or ``fallback`` without numba.
    (numba's ``inline="always"`` for the per-value helpers the row writers call was tried: the writers ran ~3x
    slower, so helpers are plain calls.)"""
    try:
        import numba
    except ImportError:
        return fallback
    out: Callable[..., Any] = numba.njit(cache=True, nogil=True)(fn)
    return out


def put_bytes_py(out: Any, pos: int, src: Any, lo: int, hi: int) -> int:
    """``src[lo:hi]`` into ``out`` from ``pos`` (uint8 arrays); returns the position after it (compiled: the
    writers' kernels call it)."""
    for j in range(lo, hi):
        out[pos] = src[j]
        pos += 1
    return pos


put_bytes = compiled(put_bytes_py, put_bytes_py)
