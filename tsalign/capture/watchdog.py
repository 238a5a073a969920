"""Remove a capture's tracefs instance when its owner dies, by any signal (SIGKILL included).

``TraceSession.open`` starts ``python -m tsalign.capture.watchdog INSTANCE`` in a session of its own,
with a pipe on its stdin whose only writer is the owner. When the owner exits (normally, or killed),
the kernel closes the pipe and the read below returns: the watchdog turns the instance's tracing off
and removes it (a no-op when the owner already did). Standard library only (runs on guests).
"""

from __future__ import annotations

import errno
import os
import re
import sys
import time

_INSTANCE = re.compile(r"^tsalign-\d+-\d+$")


def remove(path: str, tries: int = 200) -> bool:
    """Stop and remove instance directory ``path``; retry while a reader holds it busy (~2 s).
    Returns whether it is gone."""
    for _ in range(tries):
        try:
            with open(os.path.join(path, "tracing_on"), "w", encoding="ascii") as f:
                f.write("0")
        except OSError:
            pass
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY:
                return False
        time.sleep(0.01)
    return False


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not _INSTANCE.match(os.path.basename(argv[0])) \
            or os.path.basename(os.path.dirname(argv[0])) != "instances":
        print("usage: python -m tsalign.capture.watchdog TRACEFS/instances/tsalign-PID-N", file=sys.stderr)
        return 2
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, KeyboardInterrupt):
        pass
    return 0 if remove(argv[0]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
