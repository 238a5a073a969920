"""JSON files tsalign reads from users (a calibration, a precheck report: size-limited, every failure an
error naming the file and what was expected) and writes (atomically: a reader never sees half a file)."""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import InvalidParameter

__all__ = ["load_json", "save_json"]


def load_json(path: str, what: str, expected: str, limit: int = 64 << 20) -> Any:
    """The document in ``path`` (at most ``limit`` bytes); ``what`` names the option or input in errors,
    ``expected`` says what the file should be."""
    try:
        if os.path.getsize(path) > limit:
            raise InvalidParameter(what, path, f"{expected} under {limit >> 20} MiB")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InvalidParameter(what, path, f"{expected}, readable JSON ({str(e)[:200]})") from None


def save_json(path: str, doc: Any, what: str) -> None:
    """Write ``doc`` to ``path`` through a temporary file and a rename; ``what`` names the option in errors."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        raise InvalidParameter(what, path, f"a file path this user can write ({e.strerror})") from None
