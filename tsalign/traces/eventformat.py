"""Kernel trace event format files (``events/<system>/<event>/format``) -> field layouts.

Pure parsing: a format text in, an :class:`EventFormat` out. Offsets and sizes are in bytes from the
start of the event's payload (where ``common_type`` lives).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ..errors import InvalidParameter

__all__ = ["EventFormat", "EventFormats", "Field", "HeaderPage", "parse_format", "parse_header_page"]

_FIELD = re.compile(r"^\s*field:\s*(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);\s*(?:signed:(?P<signed>-?\d+);)?")


@dataclass(frozen=True)
class Field:
    """One field of an event. ``kind``: int, string (char[N]), data_loc (``__data_loc``), rel_loc, array."""

    name: str
    type: str
    offset: int
    size: int
    signed: bool
    kind: str
    count: int = 1  # elements of a fixed array


@dataclass(frozen=True)
class EventFormat:
    """Layout of one event: numeric ``id`` (``common_type``), ``system``, ``name``, fields by name."""

    id: int
    system: str
    name: str
    fields: tuple[Field, ...]
    print_fmt: str = ""
    by_name: dict[str, Field] = field(default_factory=dict, compare=False, repr=False)
    #: the format file's text (for libtraceevent, which prints events from it)
    text: str = field(default="", compare=False, repr=False)

    @property
    def full_name(self) -> str:
        return f"{self.system}:{self.name}"

    def get(self, name: str) -> Field | None:
        if not self.by_name:
            for f in self.fields:
                self.by_name[f.name] = f
        return self.by_name.get(name)


def _field(decl: str, off: int, size: int, signed: bool) -> Field:
    decl = " ".join(decl.split())
    kind = "int"
    count = 1
    if decl.startswith("__data_loc "):
        kind, decl = "data_loc", decl[len("__data_loc "):]
    elif decl.startswith("__rel_loc "):
        kind, decl = "rel_loc", decl[len("__rel_loc "):]
    m = re.match(r"^(?P<type>.*?)\s*(?P<name>\w+)\s*(?:\[(?P<n>[^\]]*)\])?$", decl.replace("[]", "").strip()) \
        if kind == "int" else re.match(r"^(?P<type>.*?)\s*(?P<name>\w+)$", decl.replace("[]", "").strip())
    if m is None:
        raise ValueError(decl)
    name, typ = m.group("name"), m.group("type").strip()
    if kind == "int" and m.groupdict().get("n") is not None:
        is_char = typ in ("char", "unsigned char", "u8", "signed char", "const char")
        kind = "string" if is_char else "array"
        n = m.group("n")
        count = int(n, 0) if n and n.strip().lstrip("-").isdigit() else 0
        if not count and kind == "array":  # size known from the file
            count = max(1, size // 8)
    elif kind in ("data_loc", "rel_loc") and "char" in typ:
        typ = typ + "[]"
    return Field(name, typ, off, size, signed, kind, count)


def parse_format(text: str, system: str = "", source: str = "<format>") -> EventFormat:
    """Parse one format file. ``system`` is used when the text has no ``system:`` line (tracefs files)."""
    name = ""
    ev_id = -1
    fields: list[Field] = []
    print_fmt = ""
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            text_id = line.split(":", 1)[1].strip()
            if not (text_id.isascii() and text_id.isdigit() and len(text_id) <= 5 and int(text_id) <= 0xFFFF):
                raise InvalidParameter("event format", f"{source}:{n}",
                                       f"an event ID from 0 to 65535 (the ring buffer's type is 16 bits), got {line[:80]!r}")
            ev_id = int(text_id)
        elif line.startswith("print fmt:"):
            print_fmt = line.split(":", 1)[1].strip()
        elif line.startswith("system:"):
            system = line.split(":", 1)[1].strip()
        elif "field:" in line:
            m = _FIELD.match(line)
            if m is None:
                raise InvalidParameter("event format field", f"{source}:{n}", f"'field:TYPE NAME; offset:N; size:N;', got {line.strip()!r}")
            try:
                fields.append(_field(m.group("decl"), int(m.group("off")), int(m.group("size")), m.group("signed") == "1"))
            except ValueError:
                raise InvalidParameter("event format field", f"{source}:{n}", f"a C declaration, got {m.group('decl')!r}") from None
    if not name or ev_id < 0:
        raise InvalidParameter("event format", source, "a format with 'name:' and 'ID:' lines")
    return EventFormat(ev_id, system, name, tuple(fields), print_fmt, text=text)


_HEAD = re.compile(r"^(name|ID|system):(.*)$", re.MULTILINE)


class EventFormats(Mapping[int, EventFormat]):
    """A file's event formats by ID, each parsed when first asked for (a trace-cmd .dat of a 6.x kernel carries
    2 000+ of them and a trace uses a few dozen). Only a format's ``name:``, ``ID:`` and ``system:`` lines are read
    when it is added (the ID checked as :func:`parse_format` checks it); a format whose full parse disagrees with
    them, or fails, raises :class:`InvalidParameter` naming its ``source`` when it is first used."""

    def __init__(self) -> None:
        self._raw: dict[int, tuple[str, str, str]] = {}
        self._names: dict[int, str] = {}
        self._parsed: dict[int, EventFormat] = {}

    def add(self, text: str, system: str, source: str) -> int:
        """Add one format file's ``text`` (``system`` when it has no ``system:`` line); returns its ID."""
        head = {k: v.strip() for k, v in _HEAD.findall(text)}
        text_id, name, system = head.get("ID", ""), head.get("name", ""), head.get("system", system)
        if "ID" in head and not (text_id.isascii() and text_id.isdigit() and len(text_id) <= 5 and int(text_id) <= 0xFFFF):
            raise InvalidParameter("event format", source,
                                   f"an event ID from 0 to 65535 (the ring buffer's type is 16 bits), got {text_id[:80]!r}")
        if not name or not text_id:
            raise InvalidParameter("event format", source, "a format with 'name:' and 'ID:' lines")
        ev_id = int(text_id)
        self._raw[ev_id] = (text, system, source)
        self._names[ev_id] = f"{system}:{name}"
        self._parsed.pop(ev_id, None)
        return ev_id

    def name_of(self, ev_id: int) -> str:
        """``system:name`` of an ID (without parsing its format); KeyError when absent."""
        return self._names[ev_id]

    def by_full_name(self, full_name: str) -> EventFormat | None:
        """The format named ``system:name``, or None."""
        return next((self[i] for i, n in self._names.items() if n == full_name), None)

    def __getitem__(self, ev_id: int) -> EventFormat:
        f = self._parsed.get(ev_id)
        if f is None:
            text, system, source = self._raw[ev_id]
            f = parse_format(text, system, source)
            if f.id != ev_id or f.full_name != self._names[ev_id]:
                raise InvalidParameter("event format", source, f"one 'name:' and one 'ID:' line (read as "
                                       f"{self._names[ev_id]} ID {ev_id}, parsed as {f.full_name} ID {f.id})")
            self._parsed[ev_id] = f
        return f

    def __iter__(self) -> Iterator[int]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, ev_id: object) -> bool:
        return ev_id in self._raw


@dataclass(frozen=True)
class HeaderPage:
    """Ring-buffer page header layout (``events/header_page``): where the timestamp, commit and data are."""

    timestamp_offset: int = 0
    commit_offset: int = 8
    commit_size: int = 8
    data_offset: int = 16


def parse_header_page(text: str, source: str = "<header_page>") -> HeaderPage:
    """Read the page header layout; a kernel ring buffer page must have timestamp, commit and data."""
    offs: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        m = _FIELD.match(line)
        if m:
            nm = m.group("decl").split()[-1]
            offs.setdefault(nm, (int(m.group("off")), int(m.group("size"))))
    try:
        return HeaderPage(offs["timestamp"][0], offs["commit"][0], offs["commit"][1], offs["data"][0])
    except KeyError as e:
        raise InvalidParameter("header_page", source, f"fields timestamp, commit and data (missing {e})") from None
