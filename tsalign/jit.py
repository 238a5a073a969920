"""Loops over whole columns compiled by numba (a dependency; each caller keeps a path for an interpreter without it).

Compiled code is cached on disk, in a directory named after the content of every tsalign source file
(:func:`cache_dir`): numba keys a cached function by its own file only, so a loop that inlines a helper from another
file (put_bytes, the digits) would be loaded stale after that file changed — an upgrade or an edit that touches only
the helper would write wrong bytes with no error.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, overload

__all__ = ["cache_dir", "compiled", "put_bytes"]

#: cache directories of other source versions kept beside the current one (the most recently used)
KEEP_OTHER_CACHES = 3


def source_digest(package: Path | None = None) -> str:
    """SHA-256 (hex) of every ``.py`` file of the tsalign package (names and contents, in name order)."""
    root = package or Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def cache_dir() -> str | None:
    """The directory compiled code is cached in: ``$NUMBA_CACHE_DIR`` (else ``$XDG_CACHE_HOME``, else ``~/.cache``)
    ``/tsalign/numba/<first 16 hex digits of source_digest()>``, made if missing; the oldest caches of other source
    versions beyond :data:`KEEP_OTHER_CACHES` are removed. None when it cannot be made or written (then nothing is
    cached: each process compiles its loops again, ~3 s the first time they run). Made once a process."""
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tsalign", "numba")
    path = os.path.join(base, source_digest()[:16])
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(path)
        os.utime(path)
        _prune(Path(base), Path(path))
    except OSError:
        return None
    return path


def _prune(base: Path, current: Path) -> None:
    """Remove the caches of other source versions in ``base`` but the :data:`KEEP_OTHER_CACHES` used last."""
    import shutil

    others = sorted((p for p in base.iterdir() if p.is_dir() and p != current and len(p.name) == 16),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for p in others[KEEP_OTHER_CACHES:]:
        shutil.rmtree(p, ignore_errors=True)


@overload
def compiled(fn: Callable[..., Any], *, inline: bool = ...) -> Callable[..., Any] | None: ...


@overload
def compiled(fn: Callable[..., Any], fallback: Callable[..., Any], inline: bool = ...) -> Callable[..., Any]: ...


def compiled(fn: Callable[..., Any], fallback: Callable[..., Any] | None = None,
             inline: bool = False) -> Callable[..., Any] | None:
    """``fn`` compiled by numba (nopython, cached on disk in :func:`cache_dir`, releasing the GIL), or ``fallback``
    without numba.
    ``inline``: a per-value helper that compiled loops call (put_bytes, the digits), inlined into each of them by
    numba: a call passes every array as a struct with its reference count taken and given back, which cost more
    than the work (a 1 M-row print fmt join 0.26-0.37 s -> 0.12 s; the 5.1 M-event benchmark pair's payload text
    ~0.6 s and its outputs ~1.3 s less; a first, uncached compile ~3 s longer)."""
    try:
        import numba
    except ImportError:
        return fallback
    d = cache_dir()
    if d is not None:  # (numba reads it when it makes a function's cache: at the njit below)
        numba.config.CACHE_DIR = d  # type: ignore[attr-defined]
    out: Callable[..., Any] = (numba.njit(cache=d is not None, nogil=True, inline="always") if inline else
                               numba.njit(cache=d is not None, nogil=True))(fn)
    return out


def put_bytes_py(out: Any, pos: int, src: Any, lo: int, hi: int) -> int:
    """``src[lo:hi]`` into ``out`` from ``pos`` (uint8 arrays); returns the position after it (compiled: the
    writers' kernels call it)."""
    for j in range(lo, hi):
        out[pos] = src[j]
        pos += 1
    return pos


put_bytes = compiled(put_bytes_py, put_bytes_py, inline=True)
