"""The small ``up``/``down --state FILE`` command line shared by the test-target helpers."""

from __future__ import annotations

import json
import os
from typing import Any, Callable


def run_state_cli(action: str, state: str, up: Callable[[], dict[str, Any]], down: Callable[[dict[str, Any]], None]) -> None:
    """``up``: start, write the state to ``state`` and print it; ``down``: read it, stop, delete it."""
    if action == "up":
        st = up()
        with open(state, "w", encoding="utf-8") as f:
            json.dump(st, f)
        print(json.dumps(st))
        return
    try:
        with open(state, encoding="utf-8") as f:
            st = json.load(f)
    except FileNotFoundError:
        return
    down(st)
    os.unlink(state)


def terminate(pid: int, group: bool = False, wait_s: float = 5.0) -> None:
    """SIGTERM ``pid`` (its process group with ``group``), wait up to ``wait_s``, then SIGKILL."""
    import signal
    import time

    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:  # our own child stays a zombie, alive to kill(0), until it is reaped
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            kill(pid, 0)
            time.sleep(0.05)
        kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
