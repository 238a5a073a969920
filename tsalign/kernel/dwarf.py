"""Struct member offsets from DWARF debug info, for kernels without BTF (pyelftools reads the DWARF).

Distributions ship the debug info in separate packages (Debian ``linux-image-REL-dbg``:
``/usr/lib/debug/lib/modules/REL/kernel/arch/x86/kvm/kvm.ko``, ``/usr/lib/debug/boot/vmlinux-REL``;
Fedora/RHEL ``kernel-debuginfo``), found by build id under ``/usr/lib/debug/.build-id/``. A module's
debug file is relocatable (``ET_REL``): its ``.debug_info`` names strings and abbreviations through
relocations, which must be applied before the names mean anything. pyelftools applies them one by
one in Python (about 40 s for the 294 k relocations of Debian 6.1's kvm.ko); here x86-64 RELA
relocations of the DWARF sections are applied with numpy in well under a second, and any other
machine or relocation type falls back to pyelftools.

The answers have the shape of :class:`tsalign.kernel.btf.MemberOffset` (``type_id`` is the DIE offset).
"""

from __future__ import annotations

import os
from io import BytesIO
from typing import Any

import numpy as np

from ..errors import InvalidParameter, TsalignError
from .btf import MAX_DEPTH, MemberOffset

__all__ = ["Dwarf", "DwarfError", "build_id", "load", "malformed"]

_STRUCTS = ("DW_TAG_structure_type", "DW_TAG_union_type")
_QUALIFIERS = ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_atomic_type",
               "DW_TAG_restrict_type")
# x86-64 relocation types found in DWARF sections (psABI): value width in bytes, PC-relative
_X64 = {1: (8, False), 10: (4, False), 11: (4, False), 2: (4, True)}  # R_X86_64_64, _32, _32S, _PC32
#: largest DWARF section read (kvm.ko's .debug_info is ~10 MiB, vmlinux's a few hundred)
MAX_SECTION = 1 << 30
_RELA = np.dtype([("off", "<u8"), ("info", "<u8"), ("addend", "<i8")])
_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"), ("size", "<u8")])


class DwarfError(TsalignError):
    """The debug info does not hold what was asked, or is malformed; the message names the file."""


def build_id(path: str) -> str | None:
    """The GNU build id of an ELF file (hex), or None (no note, or not an ELF file)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import NoteSection

    try:
        with open(path, "rb") as f:
            for sec in ELFFile(f).iter_sections():
                if isinstance(sec, NoteSection):
                    for note in sec.iter_notes():
                        if note["n_type"] == "NT_GNU_BUILD_ID":
                            return str(note["n_desc"])
    except (OSError, ELFError, Exception, MemoryError, RecursionError):  # noqa: BLE001 - load() names what is wrong
        return None
    return None


def _relocate_x64(elf: Any, section: Any, data: bytes) -> bytes | None:
    """``data`` of ``section`` with its RELA relocations applied (x86-64 ``ET_REL``), or None when a
    relocation is of a type not handled here (the caller falls back to pyelftools)."""
    from elftools.elf.relocation import RelocationHandler

    reloc = RelocationHandler(elf).find_relocations_for_section(section)
    if reloc is None:
        return data
    if not reloc.is_RELA() or reloc["sh_entsize"] != _RELA.itemsize:
        return None
    rel = np.frombuffer(reloc.data(), dtype=_RELA)
    symtab = elf.get_section(reloc["sh_link"])
    syms = np.frombuffer(symtab.data(), dtype=_SYM)
    idx, kind = (rel["info"] >> np.uint64(32)).astype(np.int64), (rel["info"] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    if idx.size and (idx.max() >= len(syms) or not np.isin(kind, list(_X64)).all()):
        return None
    out = np.frombuffer(bytearray(data), dtype=np.uint8).copy()
    offs = rel["off"].astype(np.int64)
    values = syms["value"][idx].astype(np.int64) + rel["addend"]
    for k, (width, pcrel) in _X64.items():
        m = kind == k
        if not m.any():
            continue
        o, v = offs[m], values[m] - (offs[m] if pcrel else 0)
        if o.min() < 0 or o.max() + width > len(out):
            raise DwarfError(f"{elf.stream.name}: a relocation of {section.name} points outside it")
        u = v.astype(np.uint64) if width == 8 else (v & 0xFFFFFFFF).astype(np.uint64)
        for b in range(width):
            out[o + b] = ((u >> np.uint64(8 * b)) & np.uint64(0xFF)).astype(np.uint8)
    return out.tobytes()


def _elffile(stream: Any) -> Any:
    """pyelftools' ELFFile, relocating DWARF sections of x86-64 relocatable files with numpy."""
    from elftools.dwarf.dwarfinfo import DebugSectionDescriptor
    from elftools.elf.elffile import ELFFile

    class _Fast(ELFFile):
        def _read_dwarf_section(self, section: Any, relocate_dwarf_sections: bool) -> Any:
            if relocate_dwarf_sections and self["e_type"] == "ET_REL" and self.get_machine_arch() == "x64":
                data = _relocate_x64(self, section, section.data())
                if data is not None:
                    return DebugSectionDescriptor(stream=BytesIO(data), name=section.name,
                                                  global_offset=section["sh_offset"], size=len(data),
                                                  address=section["sh_addr"])
            return super()._read_dwarf_section(section, relocate_dwarf_sections)

    return _Fast(stream)


class Dwarf:
    """The DWARF of one ELF file (vmlinux or a module's debug file)."""

    def __init__(self, path: str) -> None:
        from elftools.common.exceptions import ELFError

        self.source = path
        try:
            self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise InvalidParameter("--debuginfo", path, f"a readable ELF debug file ({e.strerror})") from None
        try:
            self.elf = _elffile(self._f)
            self._check_sections(os.fstat(self._f.fileno()).st_size)
            if self.elf.get_section_by_name(".debug_info") is None:
                raise DwarfError(f"{path}: no DWARF debug info (.debug_info); the distribution's debug package "
                                 "has it (Debian: linux-image-$(uname -r)-dbg)")
            self.dwarf = self.elf.get_dwarf_info()
        except TsalignError:
            self.close()
            raise
        except ELFError as e:
            self.close()
            raise InvalidParameter("--debuginfo", path, f"an ELF file with DWARF ({e})") from None
        except (Exception, MemoryError, RecursionError) as e:  # noqa: BLE001 - pyelftools on a malformed file
            self.close()
            raise malformed(path, e) from None

    def _check_sections(self, file_size: int) -> None:
        """Every section with contents lies inside the file and decompresses to a bounded size (before
        pyelftools reads one: it allocates what a header claims)."""
        for i in range(self.elf.num_sections()):
            sec = self.elf.get_section(i)
            h = sec.header
            if h["sh_type"] != "SHT_NOBITS" and (h["sh_offset"] + h["sh_size"] > file_size):
                raise InvalidParameter("--debuginfo", self.source,
                                       f"an ELF file whose sections lie inside it (section {i} claims {h['sh_size']} "
                                       f"bytes at {h['sh_offset']}; the file has {file_size})")
            if sec.data_size > MAX_SECTION:
                raise InvalidParameter("--debuginfo", self.source,
                                       f"sections under {MAX_SECTION >> 20} MiB (section {i}: {sec.data_size} bytes)")

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Dwarf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _name(die: Any) -> str:
        a = die.attributes.get("DW_AT_name")
        return a.value.decode("utf-8", "replace") if a is not None and isinstance(a.value, bytes) else ""

    def find(self, name: str) -> Any:
        """The first complete definition of struct/union ``name``."""
        for cu in self.dwarf.iter_CUs():
            for die in cu.get_top_DIE().iter_children():
                if die.tag in _STRUCTS and "DW_AT_declaration" not in die.attributes \
                        and "DW_AT_byte_size" in die.attributes and self._name(die) == name:
                    return die
        raise DwarfError(f"{self.source}: no definition of struct {name} in its DWARF")

    def resolve(self, die: Any, depth: int = 0) -> Any:
        """``die`` through typedefs and qualifiers."""
        while die.tag in _QUALIFIERS and "DW_AT_type" in die.attributes:
            depth += 1
            if depth > MAX_DEPTH:
                raise DwarfError(f"{self.source}: type chain at DIE {die.offset:#x} longer than {MAX_DEPTH} (a cycle?)")
            die = die.get_DIE_from_attribute("DW_AT_type")
        return die

    def sizeof(self, die: Any, depth: int = 0) -> int:
        """Bytes of the type ``die``."""
        if depth > MAX_DEPTH:
            raise DwarfError(f"{self.source}: type at DIE {die.offset:#x} nests over {MAX_DEPTH} deep (a cycle?)")
        die = self.resolve(die)
        if "DW_AT_byte_size" in die.attributes:
            return int(die.attributes["DW_AT_byte_size"].value)
        if die.tag == "DW_TAG_pointer_type":
            return int(die.cu["address_size"])
        if die.tag == "DW_TAG_array_type":
            n = 1
            for sub in die.iter_children():
                if sub.tag == "DW_TAG_subrange_type":
                    if "DW_AT_count" in sub.attributes:
                        n *= int(sub.attributes["DW_AT_count"].value)
                    elif "DW_AT_upper_bound" in sub.attributes:
                        n *= int(sub.attributes["DW_AT_upper_bound"].value) + 1
                    else:
                        n = 0
            return n * self.sizeof(die.get_DIE_from_attribute("DW_AT_type"), depth + 1)
        raise DwarfError(f"{self.source}: the size of {die.tag} at DIE {die.offset:#x} is not stated")

    def type_name(self, die: Any, depth: int = 0) -> str:
        if depth > MAX_DEPTH:
            return "?"
        name = self._name(die)
        if die.tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_enumeration_type"):
            return f"{die.tag[7:].split('_')[0].replace('structure', 'struct')} {name or '(anon)'}"
        if name:
            return name
        inner = die.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in die.attributes else None
        base = self.type_name(inner, depth + 1) if inner is not None else "void"
        return {"DW_TAG_pointer_type": f"{base} *", "DW_TAG_const_type": f"const {base}",
                "DW_TAG_volatile_type": f"volatile {base}", "DW_TAG_array_type": f"{base}[]"}.get(die.tag, base)

    def _location(self, m: Any) -> int:
        """Bit offset of member DIE ``m`` in its parent."""
        if "DW_AT_data_bit_offset" in m.attributes:
            return int(m.attributes["DW_AT_data_bit_offset"].value)
        loc = m.attributes.get("DW_AT_data_member_location")
        if loc is None:
            byte = 0  # union members
        elif isinstance(loc.value, int):
            byte = loc.value
        elif isinstance(loc.value, list) and len(loc.value) >= 2 and loc.value[0] == 0x23:  # DW_OP_plus_uconst ULEB
            byte = shift = 0
            for b in loc.value[1:]:
                byte |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
        else:
            raise DwarfError(f"{self.source}: member location of DIE {m.offset:#x} is an expression tsalign does "
                             "not evaluate")
        if "DW_AT_bit_offset" in m.attributes:  # DWARF 2/3 bitfield: counted from the storage unit's top bit
            unit = int(m.attributes["DW_AT_byte_size"].value) if "DW_AT_byte_size" in m.attributes else \
                self.sizeof(m.get_DIE_from_attribute("DW_AT_type"))
            return 8 * byte + 8 * unit - int(m.attributes["DW_AT_bit_offset"].value) - \
                int(m.attributes["DW_AT_bit_size"].value)
        return 8 * byte

    def _member(self, parent: Any, name: str, depth: int = 0) -> tuple[int, Any] | None:
        if depth > MAX_DEPTH:
            raise DwarfError(f"{self.source}: anonymous members nest over {MAX_DEPTH} deep (a cycle?)")
        members = [m for m in parent.iter_children() if m.tag == "DW_TAG_member"]
        for m in members:
            if self._name(m) == name:
                return self._location(m), m
        for m in members:
            if not self._name(m) and "DW_AT_type" in m.attributes:
                inner = self.resolve(m.get_DIE_from_attribute("DW_AT_type"))
                if inner.tag in _STRUCTS:
                    found = self._member(inner, name, depth + 1)
                    if found:
                        return self._location(m) + found[0], found[1]
        return None

    def offsetof(self, struct_name: str, path: str) -> MemberOffset:
        """offsetof(struct ``struct_name``, ``path``) with ``path`` like ``arch.tsc_offset``."""
        from .memberpath import TypeOps, walk

        def bits_of(m: Any) -> int:
            if "DW_AT_bit_size" in m.attributes:
                return int(m.attributes["DW_AT_bit_size"].value)
            return 8 * self.sizeof(m.get_DIE_from_attribute("DW_AT_type"))

        ops = TypeOps(self.source, DwarfError, lambda t: t.tag in _STRUCTS, self._member,
                      lambda m: self.resolve(m.get_DIE_from_attribute("DW_AT_type")), bits_of, self.sizeof,
                      self.type_name)
        bits, member = walk(struct_name, path, self.find(struct_name), ops)
        typ = member.get_DIE_from_attribute("DW_AT_type")
        return MemberOffset(struct_name, path, bits, typ.offset, self.type_name(typ), self.sizeof(typ))


def malformed(path: str, e: BaseException) -> InvalidParameter:
    """The error for DWARF pyelftools could not parse (any exception it raises on a malformed file)."""
    return InvalidParameter("--debuginfo", path, f"well-formed ELF/DWARF ({type(e).__name__}: {str(e)[:200]})")


def load(path: str) -> Dwarf:
    """Open ``path``'s DWARF; errors name the file and what would provide it."""
    if not os.path.exists(path):
        raise InvalidParameter("--debuginfo", path, "an existing debug file (Debian: apt install "
                               "linux-image-$(uname -r)-dbg; files under /usr/lib/debug)")
    return Dwarf(path)
