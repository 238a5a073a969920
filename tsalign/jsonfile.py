"""Read a JSON document a user hands tsalign (a calibration, a precheck report): size-limited, every
failure an error that names the file and what was expected."""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import InvalidParameter

__all__ = ["load_json"]


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
