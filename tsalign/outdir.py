"""Output directories named on the command line: made and proved writable before the work that fills them (a
1000 s alignment reads for a minute before it writes), an error naming the option where they cannot be, and
nothing of them left where the work fails."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from .errors import InvalidParameter

__all__ = ["make_dir", "output_dir"]


def make_dir(path: str, opt: str) -> list[str]:
    """Create the directory ``path`` and its missing parents, and prove this user can write in it (a file made and
    removed: permissions, a read-only mount, /proc). Returns the directories it created, outermost first. Raises
    :class:`InvalidParameter` naming ``opt`` where ``path`` is a file or cannot be made or written, leaving none of
    the directories it made."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise InvalidParameter(opt, path, "a directory (this is a file)")
    missing, p = [], os.path.abspath(path)
    while not os.path.lexists(p) and os.path.dirname(p) != p:
        missing.append(p)
        p = os.path.dirname(p)
    made = missing[::-1]
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".tsalign-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        _remove_made(made)
        raise InvalidParameter(opt, path, f"a directory this user can create and write in ({e.strerror or e})") from None
    return made


def _remove_made(made: list[str]) -> None:
    """Remove the directories :func:`make_dir` created (innermost first) where they are still empty."""
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            return


@contextlib.contextmanager
def output_dir(path: str, opt: str) -> Iterator[str]:
    """``path`` made (:func:`make_dir`) for the block; where the block raises, the directories made for it are
    removed if it left them empty (what the block writes, it removes itself: ``tsalign.align.merge.all_or_none``)."""
    made = make_dir(path, opt)
    try:
        yield path
    except BaseException:
        _remove_made(made)
        raise
