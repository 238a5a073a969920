"""Print fmts simple enough to evaluate in whole columns: events printed without a call per event.

libtraceevent (:mod:`tsalign.traces.printfmt`) prints one event per call through ctypes: ~20 us an event,
most of an alignment's time on a multi-million-event .dat. Most KVM and scheduler events have print
fmts that are a C format string over plain fields, e.g. kvm_pio's::

    "pio_%s at 0x%x size %d count %d val 0x%x %s", REC->rw ? "write" : "read", REC->port, REC->size,
    REC->count, REC->val, REC->count > 1 ? "(...)" : ""

:func:`compile_print_fmt` turns such a fmt into a :class:`ColumnPrinter` that decodes the fields of many
events at once (:func:`tsalign.traces.fields.decode`) and formats them in whole columns (pyarrow's string
kernels, compiled loops for hex and decimal digits) as Python's ``%`` would, which agrees with C's printf for the
conversions accepted here (tests/unit/test_fast_readers.py checks both); any other fmt (casts, arithmetic printed
as a number, ``%p``, the ``#`` flag, ``__data_loc`` fields) gives None and stays with libtraceevent.
:class:`~tsalign.traces.printfmt.EventPrinter` checks each compiled fmt against libtraceevent on the first
events of its type before using it, and each distinct value tuple of an expression argument when it first occurs
(a difference keeps that type with libtraceevent).

Arguments accepted: ``REC->f``; ``REC->f ? "a" : "b"``; ``REC->f OP N ? "a" : "b"`` (OP one of ``> < >= <=
== != &``), each optionally in parentheses; for a plain ``%s``, any string expression
:mod:`tsalign.traces.cexpr` compiles (C integer expressions over the event's integer fields, ternaries,
``__print_flags``, ``__print_symbolic``), its text made once per distinct tuple of those fields' values. Conversions: ``%d %i %u %x %X %s`` with flags ``-0+`` and
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

from ..jit import compiled
from .cexpr import StringArg, compile_string_arg
from .digits import PAIRS, POW10, put_decimal, put_hex
from .eventformat import EventFormat, Field
from .printjoin import COL, DEC, HEX, HEXU, LIT, VOCAB, Piece, join_pieces

__all__ = ["ColumnPrinter", "compile_print_fmt", "decimal_text", "split_args"]

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
    field: Field | None  # None: an expression's (``expr``)
    conv: str  # 'd', 'u' (also x/X) or 's'
    bits: int  # 32 or 64 for integers
    ternary: bool = False
    op: str | None = None
    num: int = 0
    then: str = ""
    other: str = ""
    #: a string argument of any other shape (:mod:`tsalign.traces.cexpr`): printed once per distinct value tuple
    expr: StringArg | None = None

    @property
    def reads(self) -> tuple[Field, ...]:
        """The fields this argument reads."""
        return self.expr.fields if self.expr is not None else (self.field,) if self.field is not None else ()


class NotColumnar(ValueError):
    """A column holds a value whose text is not known here (see :meth:`StringArg.text`): print it otherwise."""


@dataclass(frozen=True)
class ColumnPrinter:
    """One event type's print fmt, evaluated in columns (see the module doc)."""

    fmt: EventFormat
    template: str  # a Python %-format
    args: tuple[_Arg, ...]

    @property
    def fields(self) -> list[str]:
        return sorted({f.name for a in self.args for f in a.reads})

    @property
    def min_size(self) -> int:
        """Bytes a record needs to hold every field read."""
        return max((f.offset + f.size for a in self.args for f in a.reads), default=0)

    def new_values(self, cols: dict[str, Any], seen: set[tuple[int, tuple[int, ...]]]) -> np.ndarray:
        """Rows (sorted) where an expression argument meets a tuple of field values not in ``seen`` (its first row
        per tuple), which it adds to ``seen``: what the caller checks against another printer."""
        rows: list[int] = []
        for i, a in enumerate(self.args):
            if a.expr is None or not a.expr.fields:
                continue
            keys, first, _ = _distinct([_unsigned(cols[f.name]) for f in a.expr.fields])
            for k, r in zip(keys, first.tolist()):
                if (i, k) not in seen:
                    seen.add((i, k))
                    rows.append(r)
        return np.unique(np.asarray(rows, dtype=np.int64))

    def format_arrow(self, cols: dict[str, Any], n: int) -> Any:
        """The payload text of ``n`` events from their decoded fields, trailing blanks removed, as a pyarrow string
        array made in whole columns: each conversion as Python's ``%`` makes it (C's printf for the accepted
        subset), then ``str.rstrip``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        pieces: list[Piece] = []
        args = iter(self.args)
        pos = 0
        for m in _SPEC.finditer(self.template):
            if m.start() > pos:
                pieces.append(Piece(LIT, self.template[pos:m.start()]))
            pos = m.end()
            if m["conv"] == "%":
                pieces.append(Piece(LIT, "%"))
                continue
            a = next(args)
            width = int(m["width"] or 0)
            prec = None if m["prec"] is None else int(m["prec"])
            if a.expr is not None:
                pieces.append(_expr_piece(a.expr, cols))
                continue
            assert a.field is not None
            col = cols[a.field.name]
            if a.ternary:
                v = _unsigned(col)
                cond = _OPS[a.op](v, np.uint64(a.num % (1 << 64))) if a.op else v != 0
                if width or prec is not None:
                    text = pc.if_else(pa.array(cond), pa.scalar(a.then), pa.scalar(a.other))
                    pieces.append(Piece(COL, _pad_text(text, m["flags"], width, prec)))
                else:  # (code 0: then, 1: other)
                    pieces.append(Piece(VOCAB, [a.then, a.other], (~np.asarray(cond, dtype=bool)).astype(np.int64)))
            elif a.conv == "s":
                text = col if isinstance(col, pa.Array) else pa.array(list(col), pa.string())
                pieces.append(Piece(COL, _pad_text(text, m["flags"], width, prec)))
            else:
                v = _c_int(np.asarray(col), a.conv, a.bits)
                if width or prec or set(m["flags"]) & {"+", " "}:
                    pieces.append(Piece(COL, _int_text(v, m["flags"], width, prec, m["conv"])))
                else:  # sign and digits only: written by the compiled join
                    neg, mag = _sign_mag(v)
                    pieces.append(Piece(HEX if m["conv"] == "x" else HEXU if m["conv"] == "X" else DEC, None, mag, neg))
        if pos < len(self.template):
            pieces.append(Piece(LIT, self.template[pos:]))
        if not pieces:
            return pa.array([""] * n, pa.string())
        if all(p.kind == LIT for p in pieces):  # no conversions: one text
            return pa.array(["".join(p.texts for p in pieces).rstrip()] * n, pa.string())
        joined = join_pieces(pieces, n)  # (one compiled pass where every text is ASCII)
        if joined is not None:
            return joined
        text = pc.binary_join_element_wise(*[_arrow_part(p) for p in pieces], pa.scalar(""))
        if self.template.isascii() and all((a.then + a.other).isascii() if a.ternary else a.conv != "s"
                                           and a.expr is None for a in self.args):  # ASCII text only (no string field): ASCII kernel
            return pc.ascii_rtrim(text, characters=_ASCII_SPACE)
        return pc.utf8_rtrim(text, characters=_PY_SPACE)


def _arrow_part(p: Piece) -> Any:
    """A piece of :meth:`ColumnPrinter.format_arrow` as a pyarrow scalar or string array (its text per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if p.kind == LIT:
        return pa.scalar(p.texts)
    if p.kind == VOCAB:
        assert p.values is not None
        return pa.array(p.texts, pa.string()).take(pa.array(np.asarray(p.values, dtype=np.int32)))
    if p.kind == COL:
        return p.texts
    assert p.values is not None and p.neg is not None
    digits = _hex_text(p.values, "x" if p.kind == HEX else "X") if p.kind in (HEX, HEXU) else decimal_text(p.values)
    if not p.neg.any():
        return digits
    return pc.binary_join_element_wise(pc.if_else(pa.array(p.neg), pa.scalar("-"), pa.scalar("")), digits,
                                       pa.scalar(""))


#: the characters Python's ``str.rstrip()`` removes (``str.isspace``), and those of them in ASCII
_PY_SPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
_ASCII_SPACE = "".join(c for c in _PY_SPACE if c.isascii())
#: two hex digits of each byte value, per conversion
_HEX2 = {c: np.frombuffer("".join(f"{i:02{c}}" for i in range(256)).encode(), dtype=np.uint8).reshape(256, 2)
         for c in "xX"}
_NIBBLES = np.asarray([1 << (4 * i) for i in range(1, 16)], dtype=np.uint64)


def _hex_text(v: np.ndarray, conv: str) -> Any:
    """Unsigned values as Python's ``%x``/``%X`` prints them (no leading zeros; 0 is "0"), in whole columns: one
    compiled pass (numba) where it is installed, else numpy passes."""
    import pyarrow as pa

    v = np.ascontiguousarray(v, dtype=np.uint64)
    n = len(v)
    if _hex_compiled is not None:
        offsets = np.empty(n + 1, dtype=np.int32)
        data = np.empty(16 * n, dtype=np.uint8)
        used = _hex_compiled(v, _HEX1[conv], offsets, data)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data[:used]))
    chars = _HEX2[conv][v.astype(">u8").view(np.uint8)].reshape(n, 16)  # 16 digits a value, most significant first
    digits = np.ones(n, dtype=np.int32)
    for step in _NIBBLES:
        digits += v >= step
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(digits, out=offsets[1:])
    data = chars[np.arange(16, dtype=np.int32) >= (16 - digits)[:, None]]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))


#: the hex digit of each nibble, per conversion
_HEX1 = {c: np.frombuffer(("0123456789abcdef" if c == "x" else "0123456789ABCDEF").encode(), dtype=np.uint8)
         for c in "xX"}


def hex_text_py(v: np.ndarray, digits: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> int:
    """Each value's hex digits (``digits``: the 16 characters) one after the other into ``out``, the string offsets
    into ``offsets``; returns the bytes written (compiled by numba; see :func:`tsalign.traces.digits.put_hex_py`)."""
    pos = 0
    offsets[0] = 0
    for i in range(v.size):
        pos = put_hex(out, pos, v[i], digits)
        offsets[i + 1] = pos
    return pos


def decimal_text_py(mag: np.ndarray, neg: np.ndarray, pow10: np.ndarray, pairs: np.ndarray, offsets: np.ndarray,
                    out: np.ndarray) -> int:
    """Each value's decimal digits (``mag``: magnitudes, uint64; ``neg``: a ``-`` first) one after the other into
    ``out``, the string offsets into ``offsets``; returns the bytes written (compiled by numba; see
    :func:`tsalign.traces.digits.put_decimal_py`)."""
    pos = 0
    offsets[0] = 0
    for i in range(mag.size):
        pos = put_decimal(out, pos, mag[i], neg[i], pow10, pairs)
        offsets[i + 1] = pos
    return pos


_hex_compiled = compiled(hex_text_py)
_decimal_compiled = compiled(decimal_text_py)


def decimal_text(v: np.ndarray) -> Any:
    """Integers (any numpy integer dtype) as ``str`` prints them, as a pyarrow string array: one compiled pass
    (numba) where it is installed, else pyarrow's cast."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v = np.asarray(v)
    n = len(v)
    if _decimal_compiled is None or 21 * n >= 1 << 31:
        return pc.cast(pa.array(v), pa.string())
    if v.dtype.kind == "i":
        neg = v < 0
        mag = np.where(neg, ~v.astype(np.int64).view(np.uint64) + np.uint64(1), v.astype(np.int64).view(np.uint64))
    else:
        neg, mag = np.zeros(n, dtype=bool), v.astype(np.uint64)
    offsets = np.empty(n + 1, dtype=np.int32)
    data = np.empty(21 * n, dtype=np.uint8)
    used = _decimal_compiled(np.ascontiguousarray(mag), neg, POW10, PAIRS, offsets, data)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data[:used]))


def _int_text(v: np.ndarray, flags: str, width: int, prec: int | None, conv: str) -> Any:
    """Integers as Python's ``%`` with ``flags``, ``width``, ``prec`` and ``conv`` (d, i, u, x, X) prints them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    neg, mag = _sign_mag(v)
    digits = _hex_text(mag, conv) if conv in "xX" else decimal_text(mag)
    if prec:
        digits = pc.utf8_lpad(digits, width=prec, padding="0")
    plus = "+" if "+" in flags else " " if " " in flags else ""
    sign = pc.if_else(pa.array(neg), pa.scalar("-"), pa.scalar(plus)) if neg.any() else pa.scalar(plus)
    if "-" in flags or not width:
        text = pc.binary_join_element_wise(sign, digits, pa.scalar(""))
        return pc.utf8_rpad(text, width=width, padding=" ") if width else text
    if "0" in flags:  # the sign, then the digits zero-padded to the width it leaves
        if plus or not neg.any():
            padded = pc.utf8_lpad(digits, width=max(0, width - len(plus)), padding="0")
        else:
            padded = pc.if_else(pa.array(neg), pc.utf8_lpad(digits, width=max(0, width - 1), padding="0"),
                                pc.utf8_lpad(digits, width=width, padding="0"))
        return pc.binary_join_element_wise(sign, padded, pa.scalar(""))
    return pc.utf8_lpad(pc.binary_join_element_wise(sign, digits, pa.scalar("")), width=width, padding=" ")


def _sign_mag(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(negative (bool), magnitude (uint64)) of integers of any numpy integer dtype."""
    neg = v < 0 if v.dtype.kind == "i" else np.zeros(len(v), dtype=bool)
    mag = np.where(neg, ~v.astype(np.int64).view(np.uint64) + np.uint64(1), v.astype(np.uint64)) if neg.any() \
        else v.astype(np.uint64)
    return neg, mag


def _pad_text(text: Any, flags: str, width: int, prec: int | None) -> Any:
    """Strings as Python's ``%s`` with ``flags`` (``-``), ``width`` and ``prec`` prints them."""
    import pyarrow.compute as pc

    if prec is not None:
        text = pc.utf8_slice_codeunits(text, 0, prec)
    if not width:
        return text
    return pc.utf8_rpad(text, width=width, padding=" ") if "-" in flags else pc.utf8_lpad(text, width=width, padding=" ")


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
                   else 32, not (m["flags"] or m["width"] or m["prec"] is not None))
        if arg is None:
            return None
        args.append(arg)
        template.append("%" + m["flags"] + m["width"] + (f".{m['prec']}" if m["prec"] is not None else "")
                        + ("d" if m["conv"] in "iu" else m["conv"]))
    template.append(text[pos:].replace("%", "%%"))
    if len(args) != len(raw_args):
        return None
    return ColumnPrinter(fmt, "".join(template), tuple(args))


def _arg(fmt: EventFormat, text: str, conv: str, bits: int, plain: bool) -> _Arg | None:
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
    if conv == "s" and plain:  # (a width or precision applies to each piece of __print_flags: not evaluated here)
        expr = compile_string_arg(fmt, text)
        if expr is not None:
            return _Arg(None, "s", 0, expr=expr)
    return None


def _distinct(cols: list[np.ndarray]) -> tuple[list[tuple[int, ...]], np.ndarray, np.ndarray]:
    """The distinct tuples of values of ``cols`` (uint64, one per field), the first row of each, and per row its
    tuple's index."""
    if len(cols) == 1:
        u, first, inv = np.unique(cols[0], return_index=True, return_inverse=True)
        return [(x,) for x in u.tolist()], first, inv.reshape(-1)
    ranks = [np.unique(c, return_inverse=True) for c in cols]
    if np.prod([float(len(u)) for u, _ in ranks]) >= 2.0**63:
        _, first, inv = np.unique(np.stack(cols, axis=1), axis=0, return_index=True, return_inverse=True)
    else:  # mixed radix: a tuple of per-column ranks in one int64
        key = np.zeros(len(cols[0]), dtype=np.int64)
        for u, r in ranks:
            key = key * len(u) + r.reshape(-1)
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    return [tuple(int(c[r]) for c in cols) for r in first.tolist()], first, inv.reshape(-1)


def _expr_piece(expr: StringArg, cols: dict[str, Any]) -> Piece:
    """A compiled string argument's texts: one per distinct tuple of field values, and each row's (a constant
    argument: one literal)."""
    if not expr.fields:
        t = expr.text(())
        if t is None:
            raise NotColumnar("a constant argument without a text")
        return Piece(LIT, t)
    keys, _, inv = _distinct([_unsigned(cols[f.name]) for f in expr.fields])
    texts = [expr.text(k) for k in keys]
    if any(t is None for t in texts):
        raise NotColumnar("an argument without a text for some values")
    return Piece(VOCAB, texts, inv.astype(np.int64))
