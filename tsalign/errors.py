"""One exception hierarchy for tsalign; every message says what is wrong and how to fix it."""

from __future__ import annotations

__all__ = [
    "InconsistentData",
    "InvalidParameter",
    "MissingParameter",
    "TsalignError",
    "Unavailable",
]


class TsalignError(Exception):
    """Base class of every error tsalign raises on purpose."""


class InvalidParameter(TsalignError, ValueError):
    """A value given by the user (or read from a file) is out of range or malformed."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.name = name
        self.value = value
        self.expected = expected
        super().__init__(f"{name}: invalid value {value!r}; expected {expected}")


class MissingParameter(TsalignError, ValueError):
    """A conversion needs a parameter that was not given."""

    def __init__(self, name: str, needed_for: str, hint: str = "") -> None:
        self.name = name
        msg = f"{name} is required for {needed_for}"
        super().__init__(msg + (f"; {hint}" if hint else ""))


class InconsistentData(TsalignError):
    """Inputs contradict each other in a way that makes the result meaningless."""


class Unavailable(TsalignError):
    """A kernel facility or file is not present here; the message says what would provide it."""
