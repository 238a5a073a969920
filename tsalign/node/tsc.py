"""Read this CPU's TSC from Python: a 10-byte ``rdtsc`` function in an executable mapping."""

from __future__ import annotations

import ctypes
import mmap
from typing import Callable

__all__ = ["rdtsc"]

# rdtsc ; shl rdx,32 ; or rax,rdx ; ret
_CODE = bytes([0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3])
_fn: Callable[[], int] | None = None
_keep: list[mmap.mmap] = []


def _load() -> Callable[[], int]:
    global _fn
    if _fn is None:
        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        buf.write(_CODE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        _keep.append(buf)
        _fn = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)
    return _fn


def rdtsc() -> int:
    """The TSC of the CPU this thread runs on (cycles). x86-64 only."""
    return int(_load()())
