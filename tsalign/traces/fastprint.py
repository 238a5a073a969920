"""Print fmts simple enough to evaluate in whole columns: events printed without a call per event.

libtraceevent (:mod:`tsalign.traces.printfmt`) prints one event per call through ctypes: ~20 us an event,
most of an alignment's time on a multi-million-event .dat. Most KVM and scheduler events have print
fmts that are a C format string over plain fields, e.g. kvm_pio's::

    "pio_%s at 0x%x size %d count %d val 0x%x %s", REC->rw ? "write" : "read", REC->port, REC->size,
    REC->count, REC->val, REC->count > 1 ? "(...)" : ""

:func:`compile_print_fmt` turns such a fmt into a :class:`ColumnPrinter` that decodes the fields of many
events at once (:func:`tsalign.traces.fields.decode`) and formats them with Python's ``%`` (which agrees
with C's printf for the conversions accepted here); any other fmt (``__print_symbolic``, ``__print_flags``,
casts, arithmetic, ``%p``, the ``#`` flag, ``__data_loc`` fields) gives None and stays with libtraceevent.
:class:`~tsalign.traces.printfmt.EventPrinter` checks each compiled fmt against libtraceevent on the first
events of its type before using it (a difference keeps that type with libtraceevent).

Arguments accepted: ``REC->f``; ``REC->f ? "a" : "b"``; ``REC->f OP N ? "a" : "b"`` (OP one of ``> < >= <=
== != &``), each optionally in parentheses. Conversions: ``%d %i %u %x %X %s`` with flags ``-0+`` and
space, width, precision and length ``l``/``ll``/``z`` (64 bits; 32 without). Integers are converted as
libtraceevent does: the field's bytes as an unsigned number (no sign extension), then C's conversion to the
conversion's width, signed for ``d``/``i``; operators compare unsigned 64-bit values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .eventformat import EventFormat, Field

__all__ = ["ColumnPrinter", "compile_print_fmt", "split_args"]

_SPEC = re.compile(r"%(?P<flags>[-0+ #]*)(?P<width>\d*)(?:\.(?P<prec>\d+))?(?P<len>hh|h|ll|l|z|L|j|t)?(?P<conv>.)")
_FIELD = r"\(?\s*REC->(\w+)\s*\)?"
_PLAIN = re.compile(rf"^{_FIELD}$")
_TERNARY = re.compile(rf'^\(?\s*{_FIELD}\s*(?:(>=|<=|==|!=|>|<|&)\s*(0x[0-9a-fA-F]+|\d+)\s*)?\)?\s*\?\s*"([^"\\]*)"\s*:\s*"([^"\\]*)"$')
_OPS: dict[str, Callable[[np.ndarray, np.uint64], np.ndarray]] = {
    ">": lambda a, n: a > n, "<": lambda a, n: a < n, ">=": lambda a, n: a >= n, "<=": lambda a, n: a <= n,
    "==": lambda a, n: a == n, "!=": lambda a, n: a != n, "&": lambda a, n: (a & n) != np.uint64(0),
}


def split_args(fmt: str) -> tuple[str, list[str]] | None:
    """``"FORMAT", arg, ...`` -> (FORMAT with C escapes \\n \\t \\\\ \\" undone, [arg, ...]) split at top-level
    commas; None when the text is not of that shape."""
    s = fmt.strip()
    if not s.startswith('"'):
        return None
    i, out = 1, []
    while i < len(s) and s[i] != '"':
        if s[i] == "\\" and i + 1 < len(s):
            esc = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}.get(s[i + 1])
            if esc is None:
                return None
            out.append(esc)
            i += 2
            continue
        out.append(s[i])
        i += 1
    if i >= len(s):
        return None
    rest, depth, quoted = s[i + 1:].strip(), 0, False
    args: list[str] = []
    cur: list[str] = []
    if rest and not rest.startswith(","):
        return None
    for ch in rest[1:]:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "({[":
            depth += 1
        elif not quoted and ch in ")}]":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur or rest:
        args.append("".join(cur).strip())
    return "".join(out), [a for a in args if a] if rest else []


@dataclass(frozen=True)
class _Arg:
    field: Field
    conv: str  # 'd', 'u' (also x/X) or 's'
    bits: int  # 32 or 64 for integers
    ternary: bool = False
    op: str | None = None
    num: int = 0
    then: str = ""
    other: str = ""


@dataclass(frozen=True)
class ColumnPrinter:
    """One event type's print fmt, evaluated in columns (see the module doc)."""

    fmt: EventFormat
    template: str  # a Python %-format
    args: tuple[_Arg, ...]

    @property
    def fields(self) -> list[str]:
        return sorted({a.field.name for a in self.args})

    @property
    def min_size(self) -> int:
        """Bytes a record needs to hold every field read."""
        return max((a.field.offset + a.field.size for a in self.args), default=0)

    def format(self, cols: dict[str, Any], n: int) -> list[str]:
        """The payload text of ``n`` events from their decoded fields (trailing blanks removed)."""
        values: list[list[Any]] = []
        for a in self.args:
            col = cols[a.field.name]
            if a.ternary:
                v = _unsigned(col)
                cond = _OPS[a.op](v, np.uint64(a.num % (1 << 64))) if a.op else v != 0
                then, other = a.then, a.other
                values.append([then if c else other for c in cond.tolist()])
            elif a.conv == "s":
                values.append(list(col))
            else:
                values.append(_c_int(np.asarray(col), a.conv, a.bits).tolist())
        if not values:
            return [self.template.rstrip()] * n
        t = self.template
        return [(t % row).rstrip() for row in zip(*values)]


def _unsigned(col: Any) -> np.ndarray:
    """A field's values as libtraceevent reads them: its bytes as an unsigned number, widened to 64 bits without
    sign extension (so ``REC->delta < 0`` is never true there, and an ``s8`` of -86 prints as 170 with ``%d``)."""
    v = np.asarray(col)
    return v.view(v.dtype.str.replace("i", "u")).astype(np.uint64) if v.dtype.kind == "i" \
        else v.astype(np.uint64)


def _c_int(v: np.ndarray, conv: str, bits: int) -> np.ndarray:
    """A field's values as printf's ``conv`` of ``bits`` bits sees them (C's conversion of libtraceevent's unsigned
    value: modulo 2^bits)."""
    wide = _unsigned(v)
    if bits == 64:
        return wide.astype(np.int64) if conv == "d" else wide.astype(np.uint64)
    return wide.astype(np.int32) if conv == "d" else wide.astype(np.uint32)


def compile_print_fmt(fmt: EventFormat, long_size: int = 8) -> ColumnPrinter | None:
    """A :class:`ColumnPrinter` for ``fmt``'s print fmt, or None when it is outside the accepted subset."""
    parts = split_args(fmt.print_fmt)
    if parts is None:
        return None
    text, raw_args = parts
    template: list[str] = []
    args: list[_Arg] = []
    pos = 0
    for m in _SPEC.finditer(text):
        template.append(text[pos:m.start()].replace("%", "%%"))
        pos = m.end()
        if m["conv"] == "%":
            template.append("%%")
            continue
        if "#" in m["flags"] or m["conv"] not in "diuxXs" or m["len"] in ("hh", "h", "L", "j", "t"):
            return None
        if len(args) >= len(raw_args):
            return None
        arg = _arg(fmt, raw_args[len(args)], m["conv"], 64 if m["len"] in ("ll", "z") or (m["len"] == "l" and long_size == 8)
                   else 32)
        if arg is None:
            return None
        args.append(arg)
        template.append("%" + m["flags"] + m["width"] + (f".{m['prec']}" if m["prec"] is not None else "")
                        + ("d" if m["conv"] in "iu" else m["conv"]))
    template.append(text[pos:].replace("%", "%%"))
    if len(args) != len(raw_args):
        return None
    return ColumnPrinter(fmt, "".join(template), tuple(args))


def _arg(fmt: EventFormat, text: str, conv: str, bits: int) -> _Arg | None:
    m = _PLAIN.match(text)
    if m:
        f = fmt.get(m[1])
        if f is None or f.name.startswith("common_"):  # (the column decoder reads an event's own fields only)
            return None
        if conv == "s":
            return _Arg(f, "s", 0) if f.kind == "string" else None
        if f.kind != "int" or f.size not in (1, 2, 4, 8):
            return None
        return _Arg(f, "d" if conv in "di" else "u", bits)
    m = _TERNARY.match(text)
    if m and conv == "s":
        f = fmt.get(m[1])
        if f is None or f.name.startswith("common_") or f.kind != "int" or f.size not in (1, 2, 4, 8):
            return None
        return _Arg(f, "s", 0, True, m[2], int(m[3], 0) if m[3] else 0, m[4], m[5])
    return None
