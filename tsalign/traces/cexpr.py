"""The C expressions of a print fmt's string arguments, evaluated on integer field values as libtraceevent does.

A ``%s`` argument such as sched_switch's::

    (REC->prev_state & ((((0x00000000 | 0x00000001 | ...) + 1) << 1) - 1)) ?
        __print_flags(REC->prev_state & (...), "|", { 0x00000001, "S" }, ...) : "R"

or kvm_exit's ``(REC->isa == 1) ? __print_symbolic(REC->exit_reason & 0xffff, { 0, "EXCEPTION_NMI" }, ...) : ...``
is a function of a few integer fields whose values repeat: :func:`compile_string_arg` parses it into a Python
function of those fields' values, and :class:`tsalign.traces.fastprint.ColumnPrinter` calls it once per distinct
tuple of values in a column. Each distinct tuple's text is checked against libtraceevent the first time it occurs
(:class:`tsalign.traces.printfmt.EventPrinter`), so a difference in a corner of the semantics falls back to the
library rather than printing something else.

Semantics (libtraceevent's ``eval_num_arg``/``print_str_arg``): a field is read as an unsigned number of its size;
arithmetic is on unsigned 64-bit values (modulo 2^64; a shift count modulo 64, as x86 does), comparisons unsigned, a
condition true when non-zero; unary ``-`` and ``~`` only before a number or a parenthesis, no ``!``;
``__print_symbolic(v, {n, "s"}, ...)`` prints the ``s`` of the first ``n`` equal to ``v`` (``n`` modulo 2^64), else
``0x%llx`` of ``v``; ``__print_flags(v, "delim", {n, "s"}, ...)`` prints, in list order, the ``s`` of each non-zero
``n`` whose bits are all in ``v`` (removing them from ``v``), joined by ``delim``, then ``0x%llx`` of the bits left
over, if any; a zero ``v`` prints the ``s`` of a zero ``n`` when the list has one. Anything else (casts, function
calls, other helpers, a field that is not an integer of 1, 2, 4 or 8 bytes) is not compiled (None).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .eventformat import EventFormat, Field

__all__ = ["StringArg", "compile_string_arg"]

_M64 = (1 << 64) - 1
_TOKEN = re.compile(r"""\s*(?:
    (?P<rec>REC->(?P<field>\w+))
  | (?P<num>0[xX][0-9a-fA-F]+|\d+)(?:[uU]?[lL]{0,2}|[lL]{1,2}[uU]?)\b
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<name>__print_flags|__print_symbolic)\b
  | (?P<op>\|\||&&|<<|>>|==|!=|<=|>=|[-+*/%&|^~!<>?:(){},])
)""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}
#: binary operators by precedence level, loosest first (C's order; ``?:`` and unary handled apart)
_LEVELS = (("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", ">", "<=", ">="), ("<<", ">>"),
           ("+", "-"), ("*", "/", "%"))
_BINARY: dict[str, Callable[[int, int], int]] = {
    "||": lambda a, b: int(bool(a) or bool(b)), "&&": lambda a, b: int(bool(a) and bool(b)),
    "|": lambda a, b: a | b, "^": lambda a, b: a ^ b, "&": lambda a, b: a & b,
    "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b), "<": lambda a, b: int(a < b),
    ">": lambda a, b: int(a > b), "<=": lambda a, b: int(a <= b), ">=": lambda a, b: int(a >= b),
    "<<": lambda a, b: a << (b & 63), ">>": lambda a, b: a >> (b & 63),  # (the library's C on x86: count mod 64)
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a // b, "%": lambda a, b: a % b,
}

#: a compiled expression: values of the fields (in :attr:`StringArg.fields` order) -> an int or a str
_Fn = Callable[[tuple[int, ...]], "int | str"]


class _Unsupported(Exception):
    """The text is outside the subset compiled here."""


@dataclass(frozen=True)
class StringArg:
    """A ``%s`` argument compiled: ``text(values)`` of the ``fields``' values (unsigned, in this order)."""

    fields: tuple[Field, ...]
    fn: _Fn

    def text(self, values: tuple[int, ...]) -> str | None:
        """The argument's text for these field values; None where libtraceevent's result is not known here
        (division by zero, an integer where a string is printed)."""
        try:
            v = self.fn(values)
        except (ZeroDivisionError, _Unsupported):
            return None
        return v if isinstance(v, str) else None


def compile_string_arg(fmt: EventFormat, text: str) -> StringArg | None:
    """``text`` (one argument of ``fmt``'s print fmt, printed with ``%s``) as a :class:`StringArg`, or None."""
    tokens = _tokens(text)
    if tokens is None:
        return None
    p = _Parser(fmt, tokens)
    try:
        fn = p.ternary()
        if p.pos != len(tokens):
            raise _Unsupported
    except (_Unsupported, RecursionError):  # (a hostile format's parentheses nested thousands deep)
        return None
    return StringArg(tuple(p.fields), fn)


def _tokens(text: str) -> list[tuple[str, str]] | None:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip():
                return None
            break
        pos = m.end()
        kind = next(k for k in ("rec", "num", "str", "name", "op") if m[k] is not None)
        out.append((kind, m["field"] if kind == "rec" else m[kind]))
    return out


class _Parser:
    """Recursive descent over C's precedence levels, building closures over the field values."""

    def __init__(self, fmt: EventFormat, tokens: list[tuple[str, str]]) -> None:
        self.fmt, self.tokens, self.pos = fmt, tokens, 0
        self.fields: list[Field] = []

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self, op: str) -> None:
        if self.peek() != ("op", op):
            raise _Unsupported
        self.pos += 1

    def ternary(self) -> _Fn:
        cond = self.binary(0)
        if self.peek() != ("op", "?"):
            return cond
        self.pos += 1
        then = self.ternary()
        self.take(":")
        other = self.ternary()
        return lambda v: then(v) if _num(cond(v)) else other(v)

    def binary(self, level: int) -> _Fn:
        if level == len(_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in _LEVELS[level]:
            f = _BINARY[self.peek()[1]]
            self.pos += 1
            right = self.binary(level + 1)
            left = _apply(f, left, right)
        return left

    def unary(self) -> _Fn:
        kind, tok = self.peek()
        if kind == "op" and tok in "-~":
            # only before a number or a parenthesis (``~0xffff``, ``-1``): libtraceevent parses a unary operator
            # before a field with the rest of the expression (``!REC->x ? "a" : "b"`` does not print as in C)
            self.pos += 1
            if self.peek()[0] != "num" and self.peek() != ("op", "("):
                raise _Unsupported
            inner = self.primary()
            if tok == "-":
                return lambda v: -_num(inner(v)) & _M64
            return lambda v: ~_num(inner(v)) & _M64
        return self.primary()

    def primary(self) -> _Fn:
        kind, tok = self.peek()
        self.pos += 1
        if kind == "num":
            n = int(tok, 0) & _M64
            return lambda v: n
        if kind == "str":
            s = _unquote(tok)
            return lambda v: s
        if kind == "rec":
            f = self.fmt.get(tok)
            if f is None or f.name.startswith("common_") or f.kind != "int" or f.size not in (1, 2, 4, 8):
                raise _Unsupported  # (the column decoder reads an event's own integer fields only)
            if f not in self.fields:
                self.fields.append(f)
            i = self.fields.index(f)
            return lambda v: v[i]
        if kind == "name":
            return self.helper(tok)
        if (kind, tok) == ("op", "("):
            inner = self.ternary()
            self.take(")")
            return inner
        raise _Unsupported

    def helper(self, name: str) -> _Fn:
        self.take("(")
        value = self.ternary()
        delim = ""
        if name == "__print_flags":
            self.take(",")
            kind, tok = self.peek()
            if kind != "str":
                raise _Unsupported
            self.pos += 1
            delim = _unquote(tok)
        table: list[tuple[int, str]] = []
        while self.peek() == ("op", ","):
            self.pos += 1
            self.take("{")
            try:
                n = self.ternary()(())
            except (IndexError, ZeroDivisionError):  # a field in a table's value, or a division by zero
                raise _Unsupported from None
            self.take(",")
            kind, tok = self.peek()
            if kind != "str" or not isinstance(n, int):
                raise _Unsupported
            self.pos += 1
            self.take("}")
            table.append((n, _unquote(tok)))
        self.take(")")
        if name == "__print_symbolic":
            return lambda v: _symbolic(_num(value(v)), table)
        return lambda v: _flags(_num(value(v)), delim, table)


def _apply(f: Callable[[int, int], int], left: _Fn, right: _Fn) -> _Fn:
    return lambda v: f(_num(left(v)), _num(right(v))) & _M64


def _num(x: int | str) -> int:
    if isinstance(x, str):
        raise _Unsupported  # (a string where a number is read: never compiled into a working arg)
    return x


def _unquote(tok: str) -> str:
    body, out, i = tok[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            esc = _ESCAPES.get(body[i + 1:i + 2])
            if esc is None:
                raise _Unsupported
            out.append(esc)
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _symbolic(v: int, table: list[tuple[int, str]]) -> str:
    for n, s in table:
        if n == v:
            return s
    return f"0x{v:x}"


def _flags(v: int, delim: str, table: list[tuple[int, str]]) -> str:
    out: list[str] = []
    for n, s in table:
        if not v and not n:
            return s
        if n and v & n == n:
            out.append(s)
            v &= ~n
    if v:
        out.append(f"0x{v:x}")
    return delim.join(out)
