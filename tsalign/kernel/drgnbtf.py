"""drgn types from the kernel's own BTF, for kernels whose DWARF debug info is not installed.

drgn reads a live kernel's memory (/proc/kcore) without debug info, but it finds types only in DWARF
(its BTF support is not released: osandov/drgn#625). :func:`register` gives a drgn program a type
finder backed by :mod:`tsalign.kernel.btf`, so drgn's objects and helpers (``list_for_each_entry``,
``xa_for_each``) work on a kernel that has only ``/sys/kernel/btf``. Types are built on demand from
the BTF ids that are reached; what reading kernel memory does not need is kept simple:

- qualifiers (const, volatile, restrict, type tags) are dropped;
- enums become integers of their size (their enumerators are not read);
- function prototypes become ``void ()`` (only pointers to them occur in data structures).
"""

from __future__ import annotations

from typing import Any

from .btf import (
    ARRAY,
    CONST,
    DECL_TAG,
    ENUM,
    ENUM64,
    FLOAT,
    FUNC,
    FUNC_PROTO,
    FWD,
    INT,
    PTR,
    RESTRICT,
    STRUCT,
    TYPE_TAG,
    TYPEDEF,
    UNION,
    VOLATILE,
    Btf,
    BtfError,
)

__all__ = ["BtfTypes", "register"]

_QUALIFIERS = (CONST, VOLATILE, RESTRICT, TYPE_TAG)
#: BTF INT encoding bits (include/uapi/linux/btf.h)
_INT_SIGNED, _INT_BOOL = 1, 4


class BtfTypes:
    """BTF type ids -> drgn types of one program, built lazily and cached (cycles through pointers
    are closed by drgn's lazy struct members)."""

    def __init__(self, prog: Any, btf: Btf) -> None:
        self.prog = prog
        self.btf = btf
        self._cache: dict[int, Any] = {}

    def type(self, tid: int) -> Any:
        """The drgn type of BTF id ``tid`` (0: void)."""
        t = self._cache.get(tid)
        if t is None:
            t = self._cache[tid] = self._build(tid)
        return t

    def _int(self, tid: int) -> Any:
        t = self.btf.type(tid)
        encoding = self.btf.int_encoding(tid)
        if encoding & _INT_BOOL:
            return self.prog.bool_type(t.name or "_Bool", t.size_or_type)
        return self.prog.int_type(t.name or "int", t.size_or_type, bool(encoding & _INT_SIGNED))

    def _build(self, tid: int) -> Any:
        import drgn

        prog = self.prog
        if tid == 0:
            return prog.void_type()
        t = self.btf.type(tid)
        k = t.kind
        if k == INT:
            return self._int(tid)
        if k in _QUALIFIERS:
            return self.type(t.size_or_type)
        if k == TYPEDEF:
            return prog.typedef_type(t.name, self.type(t.size_or_type))
        if k == PTR:
            return prog.pointer_type(self.type(t.size_or_type), 8)
        if k == ARRAY:
            assert t.array is not None
            elem, _index, n = t.array
            return prog.array_type(self.type(elem), n)
        if k in (STRUCT, UNION):
            def lazy(member_tid: int, bits: int) -> Any:  # a bit field is an object with its width
                if bits:
                    return lambda: drgn.Object(prog, self.type(member_tid), bit_field_size=bits)
                return lambda: self.type(member_tid)
            members = [drgn.TypeMember(lazy(m.type_id, m.bitfield_size), m.name or None, m.bit_offset)
                       for m in t.members]
            make = prog.struct_type if k == STRUCT else prog.union_type
            return make(t.name or None, t.size_or_type, members)
        if k == FWD:  # an incomplete struct or union (kflag: union)
            return (prog.union_type if t.kflag else prog.struct_type)(t.name or None)
        if k in (ENUM, ENUM64):
            return prog.int_type(t.name or "enum", t.size_or_type, bool(t.kflag))
        if k == FLOAT:
            return prog.float_type(t.name, t.size_or_type)
        if k in (FUNC_PROTO, FUNC):
            return prog.function_type(prog.void_type(), ())
        if k == DECL_TAG:
            return self.type(t.size_or_type)
        raise BtfError(f"{self.btf.source}: type {tid} of kind {t.kind_name} has no drgn counterpart")

    def find(self, kinds: Any, name: str) -> Any:
        """The drgn type named ``name`` of one of drgn's ``kinds`` (a TypeKindSet), or None."""
        import drgn

        want: list[int] = []
        for kind, btf_kinds in ((drgn.TypeKind.STRUCT, (STRUCT,)), (drgn.TypeKind.UNION, (UNION,)),
                                (drgn.TypeKind.TYPEDEF, (TYPEDEF,)), (drgn.TypeKind.INT, (INT, ENUM, ENUM64)),
                                (drgn.TypeKind.BOOL, (INT,)), (drgn.TypeKind.ENUM, (ENUM, ENUM64)),
                                (drgn.TypeKind.FLOAT, (FLOAT,))):
            if kind in kinds:
                want.extend(btf_kinds)
        if not want:
            return None
        try:
            t = self.btf.find(name, tuple(want))
        except BtfError:
            return None
        return self.type(t.id)


def register(prog: Any, btf: Btf, name: str = "tsalign-btf") -> BtfTypes:
    """Give ``prog`` a type finder backed by ``btf`` (vmlinux BTF, or a module's split BTF with its base),
    tried after drgn's own (DWARF) finders."""
    types = BtfTypes(prog, btf)

    def finder(_prog: Any, kinds: Any, tname: str, _filename: str | None) -> Any:
        return types.find(kinds, tname)

    prog.register_type_finder(name, finder, enable_index=-1)
    return types
