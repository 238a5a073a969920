"""Loops over whole columns compiled by numba (a dependency; each caller keeps a path for an interpreter without it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

__all__ = ["compiled", "put_bytes"]


@overload
def compiled(fn: Callable[..., Any], *, inline: bool = False) -> Callable[..., Any] | None: ...


@overload
def compiled(fn: Callable[..., Any], fallback: Callable[..., Any], *, inline: bool = False) -> Callable[..., Any]: ...


def compiled(fn: Callable[..., Any], fallback: Callable[..., Any] | None = None, *, inline: bool = False
             ) -> Callable[..., Any] | None:
    """``fn`` compiled by numba (nopython, cached on disk, releasing the GIL), or ``fallback`` without numba.
    ``inline``: a helper the other kernels call per value, inlined into them (a call that passes arrays costs
    reference counting: a row writer calling its helpers ran ~2x slower than pyarrow's kernels)."""
    try:
        import numba
    except ImportError:
        return fallback
    out: Callable[..., Any] = numba.njit(cache=True, nogil=True, inline="always" if inline else "never")(fn)
    return out


def put_bytes_py(out: Any, pos: int, src: Any, lo: int, hi: int) -> int:
    """``src[lo:hi]`` into ``out`` from ``pos`` (uint8 arrays); returns the position after it (compiled: the
    writers' kernels call it)."""
    for j in range(lo, hi):
        out[pos] = src[j]
        pos += 1
    return pos


put_bytes = compiled(put_bytes_py, put_bytes_py, inline=True)
