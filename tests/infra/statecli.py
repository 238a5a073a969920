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
