"""The walk of a member path (``arch.tsc_offset``) through nested structs, shared by the BTF and
DWARF readers: each gives how to look a member up and how big things are; the walk checks that every
member lies inside its struct (a corrupt file's offsets are never returned)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidParameter

__all__ = ["TypeOps", "walk"]


@dataclass(frozen=True)
class TypeOps:
    """A reader's view of its types (``T``) and members (``M``)."""

    source: str
    error: Callable[[str], Exception]
    is_struct: Callable[[Any], bool]
    member: Callable[[Any, str], tuple[int, Any] | None]  # (bit offset in the struct, member) or None
    member_type: Callable[[Any], Any]  # a member's type, through typedefs and qualifiers
    member_bits: Callable[[Any], int]  # the bits a member occupies
    size: Callable[[Any], int]  # bytes of a struct
    name: Callable[[Any], str]


def walk(struct_name: str, path: str, top: Any, ops: TypeOps) -> tuple[int, Any]:
    """(bit offset of ``path`` in struct ``top``, the member found)."""
    if not path or any(not p for p in path.split(".")):
        raise InvalidParameter("member path", path, "dot-separated member names, e.g. arch.tsc_offset")
    t, bits, member = top, 0, None
    walked: list[str] = []
    for part in path.split("."):
        if member is not None:
            t = ops.member_type(member)
        if not ops.is_struct(t):
            raise ops.error(f"{'.'.join(walked)} is {ops.name(t)}, not a struct: cannot take member {part!r}")
        found = ops.member(t, part)
        if found is None:
            where = f"struct {struct_name}" + (f" member {'.'.join(walked)}" if walked else "")
            raise ops.error(f"{ops.source}: {where} ({ops.name(t)}) has no member {part!r}")
        member = found[1]
        walked.append(part)
        end = found[0] + ops.member_bits(member)
        if end > 8 * ops.size(t):
            raise ops.error(f"{ops.source}: member {'.'.join(walked)} ends at bit {end} of {ops.name(t)}, "
                            f"which is {ops.size(t)} bytes; the file is corrupt")
        bits += found[0]
    return bits, member
