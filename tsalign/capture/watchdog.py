"""Remove a capture's tracefs instance when its owner dies, by any signal (SIGKILL included).

``TraceSession.open`` starts :data:`SCRIPT` with ``/bin/sh`` *before* it creates the instance, in a session
of its own, with a pipe on its stdin whose only writer is the owner. When the owner exits (normally, or
killed), the kernel closes the pipe, the shell's ``read`` returns, and it turns the instance's tracing off
and removes it (a no-op when the owner already did). A shell, not Python: it is blocked in ``read`` within
milliseconds of its start, even on a loaded machine, and every node has one.
"""

from __future__ import annotations

import subprocess

__all__ = ["SCRIPT", "start"]

#: $1: the instance directory. Waits for EOF on stdin, then up to ~3 s of tries while a reader holds it busy.
SCRIPT = """
while read -r _; do :; done
i=0
while [ -d "$1" ] && [ "$i" -lt 300 ]; do
  echo 0 > "$1/tracing_on" 2>/dev/null
  rmdir "$1" 2>/dev/null && exit 0
  sleep 0.01 2>/dev/null || sleep 1
  i=$((i + 1))
done
"""


def start(path: str) -> subprocess.Popen[bytes] | None:
    """The watchdog of instance ``path`` (which need not exist yet); None where no shell can run."""
    try:
        return subprocess.Popen(["/bin/sh", "-c", SCRIPT, "tsalign-watchdog", path], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
                                start_new_session=True, cwd="/")
    except OSError:
        return None
