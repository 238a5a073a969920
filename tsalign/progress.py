"""Progress lines on stderr for the long steps of an alignment or an analysis.

A 50 M-event pair takes minutes to read, merge, judge and write; without a word in between, a user cannot tell a
run that works from one that hangs. Each step says what it starts (and what the one before it found), with the
seconds since the command started::

    tsalign align: [0.0 s] reading host.dat (185.5 MiB) and guest.txt (1.5 GiB)
    tsalign align: [29.3 s] read 33,792,129 host and 22,382,000 guest events; merging them on the guest TSC axis

On by default where stderr is a terminal (``--progress``/``--no-progress`` say otherwise): a script or a pipe
reading stderr sees only warnings and errors, as before.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "Step", "size_text"]

#: what a library function takes to report its steps: called with one line's text (no prefix, no newline)
Step = Callable[[str], None]


class Progress:
    """A command's progress lines (``tsalign COMMAND: [SECONDS s] TEXT``) on ``stream`` when ``enabled``; else a
    call does nothing. ``enabled`` None: where ``stream`` is a terminal."""

    def __init__(self, command: str, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.command = command
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream) if enabled is None else bool(enabled)
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"tsalign {self.command}: [{time.monotonic() - self.started:.1f} s] {text}\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def size_text(path: str) -> str:
    """``path``'s name and size (its files' total for a directory: a bundle), as a progress line names an input."""
    if os.path.isdir(path):
        total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files
                    if os.path.isfile(os.path.join(d, f)))
    else:
        total = os.path.getsize(path) if os.path.isfile(path) else 0
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if total >= size:
            return f"{os.path.basename(os.path.normpath(path))} ({total / size:.1f} {unit})"
    return f"{os.path.basename(os.path.normpath(path))} ({total} bytes)"
