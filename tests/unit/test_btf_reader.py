"""The pure-Python BTF reader on hand-built BTF blobs (the expected offsets are written into the
blob by the test, so they are known independently), and on bad input."""

from __future__ import annotations

import struct

import pytest

from tsalign.kernel.btf import Btf, BtfError

INT, PTR, STRUCT, UNION, TYPEDEF, CONST, FUNC, FUNC_PROTO = 1, 2, 4, 5, 8, 10, 12, 13


class Builder:
    """Writes BTF: header + types + strings, little endian (include/uapi/linux/btf.h)."""

    def __init__(self, str_base: int = 0) -> None:
        self.types = b""
        self.strings = b"\0"
        self.str_base = str_base
        self.next_id = 1

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return self.str_base + off

    def add(self, name: str, kind: int, vlen: int, sot: int, extra: bytes = b"", kflag: bool = False) -> int:
        info = (kind << 24) | vlen | (int(kflag) << 31)
        self.types += struct.pack("<III", self.s(name), info, sot) + extra
        tid = self.next_id
        self.next_id += 1
        return tid

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return hdr + self.types + self.strings


def sample() -> tuple[bytes, dict]:
    b = Builder()
    u64 = b.add("unsigned long long", INT, 0, 8, struct.pack("<I", 64))  # 1
    u64t = b.add("u64", TYPEDEF, 0, u64)  # 2
    cu64 = b.add("", CONST, 0, u64t)  # 3: const u64
    # struct inner { u32 pad[..] at 0; const u64 tsc_offset @ 64 bits; }
    inner_members = struct.pack("<III", b.s("a"), u64, 0) + struct.pack("<III", b.s("tsc_offset"), cu64, 64)
    inner = b.add("kvm_vcpu_arch", STRUCT, 2, 16, inner_members)  # 4
    # anonymous union holding "ratio" at bit 0, placed at bit 128 of the outer struct
    anon = b.add("", UNION, 1, 8, struct.pack("<III", b.s("ratio"), u64, 0))  # 5
    # outer with kflag: member offsets are bit offset | bitfield size << 24
    outer_members = (
        struct.pack("<III", b.s("flags"), u64, (3 << 24) | 5)  # 3-bit field at bit 5
        + struct.pack("<III", b.s("arch"), inner, 64)
        + struct.pack("<III", 0, anon, 192)
    )
    outer = b.add("kvm_vcpu", STRUCT, 3, 32, outer_members, kflag=True)  # 6
    ptr = b.add("", PTR, 0, outer)  # 7
    proto = b.add("", FUNC_PROTO, 1, 0, struct.pack("<II", b.s("vcpu"), ptr))  # 8
    b.add("kvm_arch_vcpu_load", FUNC, 0, proto)  # 9
    proto2 = b.add("", FUNC_PROTO, 1, 0, struct.pack("<II", b.s("x"), u64))  # 10
    b.add("unrelated", FUNC, 0, proto2)  # 11
    return b.blob(), {"outer": outer}


def test_offsets_through_typedef_const_and_anonymous_members() -> None:
    data, _ = sample()
    btf = Btf(data, source="sample")
    m = btf.offsetof("kvm_vcpu", "arch.tsc_offset")
    assert (m.offset, m.bit_offset, m.size) == (16, 128, 8)  # 64 (arch) + 64 (member) bits
    assert m.type_name == "const u64"
    assert btf.offsetof("kvm_vcpu", "ratio").offset == 24  # found inside the anonymous union
    flags = btf.offsetof("kvm_vcpu", "flags")
    assert flags.bit_offset == 5  # the bitfield size is not part of the offset


def test_functions_with_first_arg() -> None:
    data, _ = sample()
    assert Btf(data).functions_with_first_arg("kvm_vcpu") == ["kvm_arch_vcpu_load"]


def test_missing_member_and_bad_path() -> None:
    btf = Btf(sample()[0], source="sample")
    with pytest.raises(BtfError, match="has no member 'nope'"):
        btf.offsetof("kvm_vcpu", "arch.nope")
    with pytest.raises(BtfError, match="not a struct"):
        btf.offsetof("kvm_vcpu", "flags.x")
    with pytest.raises(BtfError, match="no STRUCT/UNION named 'kvm'"):
        btf.offsetof("kvm", "x")


def test_split_btf_continues_ids_and_strings() -> None:
    base = Btf(sample()[0], source="base")
    # the split string section continues after the base's: str_len is the header's last field
    base_str_len = struct.unpack_from("<I", sample()[0], 20)[0]
    b = Builder(str_base=base_str_len)
    b.next_id = base.last_id + 1
    ptr = b.add("", PTR, 0, 6)  # pointer to the base's struct kvm_vcpu (id 6)
    proto = b.add("", FUNC_PROTO, 1, 0, struct.pack("<II", b.s("v"), ptr))
    b.add("kvm_vcpu_kick", FUNC, 0, proto)
    split = Btf(b.blob(), base=base, source="split")
    assert split.first_id == base.last_id + 1
    assert split.offsetof("kvm_vcpu", "arch.tsc_offset").offset == 16
    assert split.functions_with_first_arg("kvm_vcpu") == ["kvm_arch_vcpu_load", "kvm_vcpu_kick"]
    with pytest.raises(BtfError, match="split BTF"):
        Btf(b.blob(), source="split-without-base").find("kvm_vcpu")


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d[:10], "too short"),
        (lambda d: b"\x7fELF" + d[4:], "not BTF"),
        (lambda d: d[:2] + b"\x02" + d[3:], "version 2"),
        (lambda d: d[:-40], "truncated"),
        (lambda d: d[:24 + 4] + struct.pack("<I", 31 << 24) + d[24 + 8:], "unknown kind"),
    ],
)
def test_bad_input(mutate, needle: str) -> None:
    with pytest.raises(BtfError, match=needle):
        Btf(mutate(sample()[0]), source="bad")


# ------------------------------------------------------------------ hostile BTF (issue 13's crashers)

def _hostile(types: list[bytes], strings: bytes) -> bytes:
    t = b"".join(types)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(t), len(t), len(strings)) + t + strings


def _info(kind: int, vlen: int = 0) -> int:
    return (kind << 24) | vlen


def test_pointer_and_array_cycles_end_in_an_error() -> None:
    from tsalign.kernel.btf import BtfError

    strs = b"\0s\0m\0"
    # 1: struct s { m: type 2 at bit 0 } size 8;  2: PTR -> 3;  3: PTR -> 2 (a cycle); 4: ARRAY of 4 (a cycle)
    types = [struct.pack("<III", 1, _info(4, 1), 8) + struct.pack("<III", 3, 2, 0),
             struct.pack("<III", 0, _info(2), 3), struct.pack("<III", 0, _info(2), 2),
             struct.pack("<III", 0, _info(3), 0) + struct.pack("<III", 4, 1, 2)]
    b = Btf(_hostile(types, strs), source="cycle")
    assert b.offsetof("s", "m").offset == 0 and "..." in b.type_name(2)  # pointers: 8 bytes, named, no recursion
    with pytest.raises(BtfError, match="nested over 64 deep"):
        b.sizeof(4)


def test_member_beyond_its_struct_and_impossible_int_sizes() -> None:
    from tsalign.kernel.btf import BtfError

    strs = b"\0s\0m\0int\0"
    for m_bits, int_size, match in ((0x20000006, 8, "ends at bit"), (0, 0, "INT of 0 bytes"),
                                    (0, 65535, "INT of 65535 bytes"), (0, 500_000_000, "INT of 500000000 bytes")):
        types = [struct.pack("<III", 1, _info(4, 1), 16) + struct.pack("<III", 3, 2, m_bits),
                 struct.pack("<III", 5, _info(1), int_size) + struct.pack("<I", 64)]
        with pytest.raises(BtfError, match=match):
            Btf(_hostile(types, strs), source="bad").offsetof("s", "m")


def test_btf_from_an_endless_file_is_refused() -> None:
    from tsalign.kernel.btf import BtfError, load

    with pytest.raises(BtfError, match="more than 256 MiB"):
        load("/dev/zero")


def test_kprobe_function_choice_prefers_the_seeds_function_then_its_twin() -> None:
    from tsalign.errors import Unavailable
    from tsalign.kernel.kprobe import choose_function

    cands = ["kvm_arch_vcpu_load", "__kvm_vcpu_kick", "kvm_vcpu_kick", "kvm_vcpu_block"]
    c = choose_function(cands, {"kvm_vcpu_kick", "__kvm_vcpu_kick", "kvm_arch_vcpu_load"}, None)
    assert (c.function, c.verified_by, c.why) == ("kvm_vcpu_kick", "available_filter_functions", "the seed's function")
    c = choose_function(cands, {"__kvm_vcpu_kick", "kvm_arch_vcpu_load"}, None)  # kvm_vcpu_kick inline (6.x)
    assert c.function == "__kvm_vcpu_kick" and "out-of-line twin" in c.why
    c = choose_function(cands, None, {"kvm_arch_vcpu_load", "kvm_vcpu_block"}, blacklist={"__kvm_vcpu_kick"})
    assert (c.function, c.verified_by) == ("kvm_arch_vcpu_load", "kallsyms") and "every vCPU load" in c.why
    c = choose_function(["zz_fn", "aa_fn"], {"zz_fn", "aa_fn"}, None)
    assert c.function == "aa_fn" and "none of the preferred" in c.why
    with pytest.raises(Unavailable, match="inlined or notrace"):
        choose_function(cands, set(), set())
