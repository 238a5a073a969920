"""Parsing and range checks of the integers tsalign accepts (decimal or 0x-hex).

Standard library only: this module is also shipped to managed nodes.
"""

from __future__ import annotations

from .errors import InvalidParameter

__all__ = [
    "MASK64",
    "MAX_SECONDS",
    "U64_MAX",
    "check_u64",
    "parse_int",
    "parse_offset",
    "parse_u64",
    "to_signed64",
]

MASK64 = (1 << 64) - 1
#: the longest duration any option takes, in seconds (a year): captures, micro-VM runs, output windows
MAX_SECONDS = 366 * 86400
U64_MAX = MASK64


def parse_int(text: str, name: str) -> int:
    """Parse a decimal or 0x-hex integer (optional sign, `_` separators allowed).

    Raises InvalidParameter naming `name` for anything else.
    """
    s = str(text).strip().replace("_", "")
    neg = s.startswith("-")
    body = s[1:] if s[:1] in "+-" else s
    try:
        if not body.isascii() or len(body) > 40:  # Unicode digits are not digits here; no 64-bit value is longer
            raise ValueError
        if body[:2].lower() == "0x":
            if not body[2:]:
                raise ValueError
            value = int(body, 0)
        else:
            if not body.isdigit():
                raise ValueError
            value = int(body, 10)
    except ValueError:
        raise InvalidParameter(
            name, str(text).strip(), "a decimal or 0x-hex integer such as 123456 or 0x1e240"
        ) from None
    return -value if neg else value


def check_u64(value: int, name: str) -> int:
    """Return `value` if 0 <= value < 2**64, else raise InvalidParameter."""
    if not 0 <= value <= U64_MAX:
        raise InvalidParameter(name, value, "an unsigned 64-bit integer, 0 .. 0xffffffffffffffff")
    return value


def parse_u64(text: str, name: str) -> int:
    """Parse an unsigned 64-bit integer (decimal or 0x-hex)."""
    return check_u64(parse_int(text, name), name)


def parse_offset(text: str | int, name: str = "tsc offset") -> int:
    """Parse a TSC offset given either as unsigned 64-bit (as the kvm_write_tsc_offset tracepoint
    and kprobes print it, e.g. ``0xffee6aba03eccaac``) or as signed 64-bit (as KVM debugfs prints
    it, e.g. ``-5093764063286612``). Returns the canonical unsigned form (mod 2**64), in cycles.
    """
    value = parse_int(text, name) if isinstance(text, str) else int(text)
    if not -(1 << 63) <= value <= U64_MAX:
        raise InvalidParameter(
            name, text, "a 64-bit offset: signed -2^63 .. 2^63-1 or unsigned 0 .. 2^64-1"
        )
    return value & MASK64


def to_signed64(value: int) -> int:
    """Interpret an unsigned 64-bit value as two's complement signed."""
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value
