"""A pure-Python BTF reader: types, members (bit offsets, anonymous members, typedef/const chains),
function prototypes, and split BTF (a module's BTF whose type ids and strings continue after
vmlinux's). Format: Documentation/bpf/btf.rst, include/uapi/linux/btf.h.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import TsalignError

__all__ = [
    "KIND_NAMES",
    "Btf",
    "BtfError",
    "BtfMember",
    "BtfType",
    "MemberOffset",
    "load",
]

BTF_MAGIC = 0xEB9F
KIND_NAMES = {
    0: "UNKN", 1: "INT", 2: "PTR", 3: "ARRAY", 4: "STRUCT", 5: "UNION", 6: "ENUM", 7: "FWD",
    8: "TYPEDEF", 9: "VOLATILE", 10: "CONST", 11: "RESTRICT", 12: "FUNC", 13: "FUNC_PROTO",
    14: "VAR", 15: "DATASEC", 16: "FLOAT", 17: "DECL_TAG", 18: "TYPE_TAG", 19: "ENUM64",
}
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)
# bytes that follow the 12-byte struct btf_type: (fixed, per vlen item)
_EXTRA = {
    INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8), FUNC_PROTO: (0, 8),
    VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12),
}


#: limits no real kernel's BTF comes near: file size, one type's size, nesting of arrays/pointers/anonymous members
MAX_BTF_BYTES = 256 << 20
MAX_TYPE_BYTES = 1 << 30
MAX_DEPTH = 64


class BtfError(TsalignError):
    """The BTF data is missing, truncated, foreign or does not hold what was asked."""


@dataclass(frozen=True)
class BtfMember:
    """A struct/union member or function parameter; bit_offset in bits from the parent start."""

    name: str
    type_id: int
    bit_offset: int = 0
    bitfield_size: int = 0


@dataclass(frozen=True)
class BtfType:
    """One BTF type. size_or_type is the byte size (INT/STRUCT/UNION/ENUM) or the referenced id."""

    id: int
    kind: int
    name: str
    size_or_type: int
    vlen: int
    kflag: bool
    members: tuple[BtfMember, ...] = ()
    array: tuple[int, int, int] | None = None  # (elem type, index type, nelems)

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, str(self.kind))


@dataclass(frozen=True)
class MemberOffset:
    """Where a member path lives in a struct: byte offset (and bits for bitfields), its type."""

    struct: str
    path: str
    bit_offset: int
    type_id: int
    type_name: str
    size: int

    @property
    def offset(self) -> int:
        """Byte offset from the start of the struct."""
        return self.bit_offset // 8


_VOID = BtfType(0, 0, "void", 0, 0, False)


class Btf:
    """Parsed BTF. For split BTF pass the parsed base; ids and strings then continue after it."""

    def __init__(self, data: bytes, base: Btf | None = None, source: str = "<bytes>") -> None:
        self.source = source
        self.base = base
        if len(data) < 24:
            raise BtfError(f"{source}: {len(data)} bytes is too short for a BTF header (24 bytes)")
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            if magic == 0x9FEB:
                raise BtfError(f"{source}: big-endian BTF (magic 0x9feb) is not supported")
            raise BtfError(f"{source}: not BTF (magic {magic:#06x}, want 0xeb9f); give /sys/kernel/btf/vmlinux "
                           "or a raw .BTF section (objcopy --dump-section .BTF=out.btf FILE)")
        if version != 1:
            raise BtfError(f"{source}: BTF version {version} (only 1 is known)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        t0, s0 = hdr_len + type_off, hdr_len + str_off
        if t0 + type_len > len(data) or s0 + str_len > len(data):
            raise BtfError(f"{source}: truncated: header promises {max(t0 + type_len, s0 + str_len)} bytes, "
                           f"file has {len(data)}")
        self._strings = data[s0:s0 + str_len]
        self._base_str_len: int = base._str_total if base else 0
        self._str_total: int = self._base_str_len + str_len
        self.first_id: int = (base.last_id + 1) if base else 1
        self._buf = data[t0:t0 + type_len]
        # One cheap pass records where each type starts; BtfType objects are built on demand.
        self._recs: list[tuple[int, int, int, int]] = []  # (pos, name_off, info, size_or_type)
        self._index()
        self.last_id: int = self.first_id + len(self._recs) - 1
        self._cache: dict[int, BtfType] = {}
        self._kinds: dict[int, list[int]] | None = None

    # -- parsing ---------------------------------------------------------------------------

    def string(self, off: int) -> str:
        """The string at offset ``off`` of the (combined base + split) string section."""
        if off < self._base_str_len:
            assert self.base is not None
            return self.base.string(off)
        off -= self._base_str_len
        if off >= len(self._strings):
            raise BtfError(f"{self.source}: string offset {off} beyond the string section")
        end = self._strings.find(b"\0", off)
        return self._strings[off:end if end >= 0 else None].decode("utf-8", "replace")

    def _string_offsets(self, name: str) -> set[int]:
        """Offsets (combined numbering) at which the string ``name`` starts, here and in bases."""
        out = self.base._string_offsets(name) if self.base else set()
        needle = name.encode() + b"\0"
        if self._strings.startswith(needle):
            out.add(self._base_str_len)
        i = self._strings.find(b"\0" + needle)
        while i >= 0:
            out.add(self._base_str_len + i + 1)
            i = self._strings.find(b"\0" + needle, i + 1)
        return out

    def _index(self) -> None:
        buf, n, pos = self._buf, len(self._buf), 0
        recs = self._recs
        unpack = struct.Struct("<III").unpack_from
        extra_of = _EXTRA
        while pos < n:
            tid = self.first_id + len(recs)
            if pos + 12 > n:
                raise BtfError(f"{self.source}: type {tid} truncated at type-section byte {pos}")
            name_off, info, sot = unpack(buf, pos)
            kind = (info >> 24) & 0x1F
            if kind == 0 or kind not in KIND_NAMES:
                raise BtfError(f"{self.source}: type {tid} has unknown kind {kind} at type-section byte {pos}")
            fixed, per = extra_of.get(kind, (0, 0))
            recs.append((pos, name_off, info, sot))
            pos += 12 + fixed + per * (info & 0xFFFF)
            if pos > n:
                raise BtfError(f"{self.source}: type {tid} ({KIND_NAMES[kind]}) truncated")

    def _build(self, tid: int) -> BtfType:
        pos, name_off, info, sot = self._recs[tid - self.first_id]
        buf = self._buf
        pos += 12
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
        members: tuple[BtfMember, ...] = ()
        array = None
        if kind in (STRUCT, UNION):
            ms = []
            for i in range(vlen):
                m_name, m_type, m_off = struct.unpack_from("<III", buf, pos + 12 * i)
                bits, bsize = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
                ms.append(BtfMember(self.string(m_name), m_type, bits, bsize))
            members = tuple(ms)
        elif kind == FUNC_PROTO:
            members = tuple(
                BtfMember(self.string(p_name), p_type)
                for p_name, p_type in (struct.unpack_from("<II", buf, pos + 8 * i) for i in range(vlen))
            )
        elif kind == ARRAY:
            array = struct.unpack_from("<III", buf, pos)
        return BtfType(tid, kind, self.string(name_off), sot, vlen, kflag, members, array)

    # -- lookups ---------------------------------------------------------------------------

    def type(self, tid: int) -> BtfType:
        """The type with id ``tid`` (looked up in the base for split BTF); 0 is void."""
        if tid == 0:
            return _VOID
        if tid < self.first_id:
            if self.base is None:
                raise BtfError(f"{self.source}: type id {tid} is not here (split BTF needs its base: --btf-base)")
            return self.base.type(tid)
        if tid > self.last_id:
            raise BtfError(f"{self.source}: type id {tid} out of range (last {self.last_id})")
        t = self._cache.get(tid)
        if t is None:
            t = self._cache[tid] = self._build(tid)
        return t

    @property
    def type_count(self) -> int:
        """Number of types in this BTF (without its base)."""
        return len(self._recs)

    def _ids_named(self, name: str) -> Iterator[int]:
        if self.base:
            yield from self.base._ids_named(name)
        offs = self._string_offsets(name)
        first = self.first_id
        for i, rec in enumerate(self._recs):
            if rec[1] in offs:
                yield first + i

    def _looks_split(self) -> bool:
        """True when references point past the last type: split BTF loaded without its base."""
        refs = (PTR,) + _MODIFIERS
        return any((info >> 24) & 0x1F in refs and sot > self.last_id for _p, _n, info, sot in self._recs)

    def _raw(self, tid: int) -> tuple[int, int, int, int]:
        """(pos, name_off, info, size_or_type) of ``tid`` without building a BtfType."""
        owner = self
        while tid < owner.first_id:
            assert owner.base is not None
            owner = owner.base
        return owner._recs[tid - owner.first_id]

    def int_encoding(self, tid: int) -> int:
        """The BTF_INT_ENCODING bits of INT type ``tid`` (1 signed, 2 char, 4 bool)."""
        owner = self
        while tid < owner.first_id:
            assert owner.base is not None
            owner = owner.base
        pos, _name, info, _size = owner._recs[tid - owner.first_id]
        if (info >> 24) & 0x1F != INT:
            raise BtfError(f"{self.source}: type {tid} is not an INT")
        return (int.from_bytes(owner._buf[pos + 12:pos + 16], "little") >> 24) & 0xF

    def _ids_of_kind(self, kind: int) -> list[int]:
        if self._kinds is None:
            kinds: dict[int, list[int]] = {}
            first = self.first_id
            for i, rec in enumerate(self._recs):
                kinds.setdefault((rec[2] >> 24) & 0x1F, []).append(first + i)
            self._kinds = kinds
        own = self._kinds.get(kind, [])
        return (self.base._ids_of_kind(kind) + own) if self.base else own

    def find(self, name: str, kinds: tuple[int, ...] = (STRUCT,)) -> BtfType:
        """The first type named ``name`` of one of ``kinds`` (a complete struct before a FWD)."""
        for tid in self._ids_named(name):
            t = self.type(tid)
            if t.kind in kinds:
                return t
        kinds_s = "/".join(KIND_NAMES[k] for k in kinds)
        if self.base is None and self._looks_split():
            hint = (f"; this is split BTF (it references type ids beyond its own {self.last_id}): "
                    "give its base with --btf-base (the vmlinux BTF it was built against)")
        else:
            hint = "; it may live in a module's split BTF (e.g. /sys/kernel/btf/kvm with --btf-base vmlinux)"
        raise BtfError(f"{self.source}: no {kinds_s} named {name!r}{hint}")

    def resolve(self, tid: int) -> BtfType:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type."""
        t = self.type(tid)
        for _ in range(64):
            if t.kind not in _MODIFIERS:
                return t
            t = self.type(t.size_or_type)
        raise BtfError(f"{self.source}: modifier chain too long at type {tid}")

    def sizeof(self, tid: int, depth: int = 0) -> int:
        """Size in bytes of type ``tid``; a size no kernel type has (INT not 1/2/4/8/16 bytes, anything over
        MAX_TYPE_BYTES) or a cycle of arrays is a BtfError."""
        if tid == 0:
            return 0
        if depth > MAX_DEPTH:
            raise BtfError(f"{self.source}: type {tid}: arrays nested over {MAX_DEPTH} deep (a cycle?)")
        t = self.resolve(tid)
        size = 0
        if t.kind == INT and t.size_or_type not in (1, 2, 4, 8, 16):
            raise BtfError(f"{self.source}: type {t.id} ({t.name or 'int'}) is an INT of {t.size_or_type} bytes "
                           "(1, 2, 4, 8 or 16 expected); the BTF is corrupt")
        if t.kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT):
            size = t.size_or_type
        elif t.kind == PTR:
            size = 8
        elif t.kind == ARRAY and t.array:
            size = self.sizeof(t.array[0], depth + 1) * t.array[2]
        if size > MAX_TYPE_BYTES:
            raise BtfError(f"{self.source}: type {t.id} is {size} bytes (at most {MAX_TYPE_BYTES} expected); the BTF is corrupt")
        return size

    def type_name(self, tid: int, depth: int = 0) -> str:
        """A C-like spelling of type ``tid`` (for messages and reports)."""
        if tid == 0:
            return "void"
        if depth > MAX_DEPTH:
            return "..."  # a cycle of pointers or arrays: a corrupt BTF (errors say so elsewhere)
        t = self.type(tid)
        if t.kind == PTR:
            return self.type_name(t.size_or_type, depth + 1) + " *"
        if t.kind == CONST:
            return "const " + self.type_name(t.size_or_type, depth + 1)
        if t.kind == VOLATILE:
            return "volatile " + self.type_name(t.size_or_type, depth + 1)
        if t.kind in (STRUCT, UNION):
            return f"{'struct' if t.kind == STRUCT else 'union'} {t.name or '(anon)'}"
        if t.kind == ARRAY and t.array:
            return f"{self.type_name(t.array[0], depth + 1)}[{t.array[2]}]"
        return t.name or t.kind_name.lower()

    def _member(self, parent: BtfType, name: str, depth: int = 0) -> tuple[int, BtfMember] | None:
        """Find ``name`` in ``parent``, descending into anonymous struct/union members."""
        if depth > MAX_DEPTH:
            raise BtfError(f"{self.source}: anonymous members of type {parent.id} nest over {MAX_DEPTH} deep (a cycle?)")
        for m in parent.members:
            if m.name == name:
                return m.bit_offset, m
        for m in parent.members:
            if not m.name:
                inner = self.resolve(m.type_id)
                if inner.kind in (STRUCT, UNION):
                    found = self._member(inner, name, depth + 1)
                    if found:
                        return m.bit_offset + found[0], found[1]
        return None

    def offsetof(self, struct_name: str, path: str) -> MemberOffset:
        """offsetof(struct ``struct_name``, ``path``) with ``path`` like ``arch.tsc_offset``."""
        from .memberpath import TypeOps, walk

        ops = TypeOps(self.source, BtfError, lambda t: t.kind in (STRUCT, UNION), self._member,
                      lambda m: self.resolve(m.type_id), lambda m: m.bitfield_size or 8 * self.sizeof(m.type_id),
                      lambda t: t.size_or_type, lambda t: self.type_name(t.id))
        bits, member = walk(struct_name, path, self.find(struct_name, (STRUCT, UNION)), ops)
        return MemberOffset(struct_name, path, bits, member.type_id, self.type_name(member.type_id),
                            self.sizeof(member.type_id))

    def func_proto(self, func_name: str) -> BtfType:
        """The FUNC_PROTO of function ``func_name`` (its params are ``.members``)."""
        f = self.find(func_name, (FUNC,))
        return self.type(f.size_or_type)

    def functions_with_first_arg(self, struct_name: str) -> list[str]:
        """Names of functions whose first parameter is ``struct struct_name *`` (through any
        typedef/const chain). Works on the raw records: no type objects for the whole BTF."""
        targets = {t for t in self._ids_named(struct_name) if self.type(t).kind == STRUCT}
        modifiers = [t for k in _MODIFIERS for t in self._ids_of_kind(k)]

        def close_over(ids: set[int]) -> set[int]:
            # add every modifier whose referenced type is already in the set, to a fixpoint
            while True:
                more = {t for t in modifiers if t not in ids and self._raw(t)[3] in ids}
                if not more:
                    return ids
                ids |= more

        aliases = close_over(set(targets))
        ptrs = close_over({t for t in self._ids_of_kind(PTR) if self._raw(t)[3] in aliases})
        protos = set()
        for tid in self._ids_of_kind(FUNC_PROTO):
            owner = self
            while tid < owner.first_id:
                assert owner.base is not None
                owner = owner.base
            pos, _n, info, _s = owner._recs[tid - owner.first_id]
            if info & 0xFFFF and struct.unpack_from("<I", owner._buf, pos + 16)[0] in ptrs:
                protos.add(tid)
        return [self.type(t).name for t in self._ids_of_kind(FUNC) if self._raw(t)[3] in protos]


def load(path: str, base_path: str | None = None) -> Btf:
    """Load BTF from ``path`` (e.g. /sys/kernel/btf/vmlinux), with an optional split base.

    A module's BTF under /sys/kernel/btf/ other than vmlinux gets /sys/kernel/btf/vmlinux as its
    base automatically when ``base_path`` is not given.
    """
    import os

    if base_path is None and path.startswith("/sys/kernel/btf/") and os.path.basename(path) != "vmlinux":
        base_path = "/sys/kernel/btf/vmlinux"
    base = load(base_path) if base_path else None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BTF_BYTES + 1)
    except OSError as e:
        raise BtfError(f"cannot read BTF {path}: {e.strerror}; needs CONFIG_DEBUG_INFO_BTF=y "
                       "(a kernel with /sys/kernel/btf/vmlinux) and read permission") from None
    if len(data) > MAX_BTF_BYTES:
        raise BtfError(f"{path}: more than {MAX_BTF_BYTES >> 20} MiB: not a kernel's BTF (vmlinux's is a few MiB)")
    return Btf(data, base, path)
