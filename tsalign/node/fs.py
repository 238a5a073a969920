"""Thin, failure-tolerant readers of /proc and /sys under a root (``/`` or a recorded tree)."""

from __future__ import annotations

import os

__all__ = ["Root"]


class Root:
    """A filesystem root. Paths passed to the methods are absolute paths of the target machine."""

    def __init__(self, path: str = "/") -> None:
        self.path = os.path.abspath(path)

    @property
    def is_live(self) -> bool:
        """True when probing this machine itself (not a recorded tree)."""
        return self.path == "/"

    def join(self, path: str) -> str:
        return os.path.join(self.path, path.lstrip("/"))

    def read(self, path: str, limit: int = 1 << 20) -> str | None:
        """The text of ``path``, or None when it is absent or unreadable."""
        try:
            with open(self.join(path), "rb") as f:
                return f.read(limit).decode("utf-8", "replace")
        except OSError:
            return None

    def read_error(self, path: str) -> str | None:
        """Why ``path`` cannot be read (None when it can)."""
        try:
            with open(self.join(path), "rb") as f:
                f.read(1)
            return None
        except OSError as e:
            return f"{path}: {e.strerror}"

    def exists(self, path: str) -> bool:
        return os.path.exists(self.join(path))

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.join(path)))
        except OSError:
            return []

    def writable(self, path: str) -> bool:
        return os.access(self.join(path), os.W_OK)
