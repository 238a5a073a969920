"""Loops over whole columns compiled by numba (a dependency; each caller keeps a path for an interpreter without it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

__all__ = ["compiled", "put_bytes"]


@overload
def compiled(fn: Callable[..., Any], *, inline: bool = ...) -> Callable[..., Any] | None: ...


@overload
def compiled(fn: Callable[..., Any], fallback: Callable[..., Any], inline: bool = ...) -> Callable[..., Any]: ...


def compiled(fn: Callable[..., Any], fallback: Callable[..., Any] | None = None,
             inline: bool = False) -> Callable[..., Any] | None:
    """``fn`` compiled by numba (nopython, cached on disk, releasing the GIL), or ``fallback`` without numba.
    ``inline``: a per-value helper that compiled loops call (put_bytes, the digits), inlined into each of them by
    numba: a call passes every array as a struct with its reference count taken and given back, which cost more
    than the work (a 1 M-row print fmt join 0.26-0.37 s -> 0.12 s; the 5.1 M-event benchmark pair's payload text
    ~0.6 s and its outputs ~1.3 s less; a first, uncached compile ~3 s longer)."""
    try:
        import numba
    except ImportError:
        return fallback
    out: Callable[..., Any] = (numba.njit(cache=True, nogil=True, inline="always") if inline else
                               numba.njit(cache=True, nogil=True))(fn)
    return out


def put_bytes_py(out: Any, pos: int, src: Any, lo: int, hi: int) -> int:
    """``src[lo:hi]`` into ``out`` from ``pos`` (uint8 arrays); returns the position after it (compiled: the
    writers' kernels call it)."""
    for j in range(lo, hi):
        out[pos] = src[j]
        pos += 1
    return pos


put_bytes = compiled(put_bytes_py, put_bytes_py, inline=True)
