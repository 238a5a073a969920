"""Give the C heap's freed memory back to the system between the big steps of an alignment.

glibc's malloc keeps memory freed below its heap top (and in each thread's arena) for reuse; after a step that
made and dropped millions of objects (reading a trace: ~180 MiB for a 2.3 M-event pair) the next step would
otherwise start from a resident set that still holds it. ``malloc_trim(0)`` returns the free pages (~10 ms).
Elsewhere (another C library, no ctypes) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["release_freed_memory"]


@functools.cache
def _trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    fn = _trim()
    return bool(fn is not None and fn(0) >= 0)
