"""The fast paths of the readers against their reference: print fmts evaluated in columns
(tsalign.traces.fastprint) against libtraceevent, which trace-cmd prints with; the block reader of text traces
against the line reader, on the same files and on files the block reader must hand back."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsalign.errors import InvalidParameter
from tsalign.traces.eventformat import EventFormat
from tsalign.traces.fastprint import ColumnPrinter, compile_print_fmt, split_args
from tsalign.traces.table import Chunk
from tsalign.traces.text import TextTrace
from tsalign.traces.tracedat import TraceDat

EX = Path(__file__).resolve().parents[2] / "examples"


def _records(fmt: EventFormat, n: int, rng: random.Random) -> Chunk:
    """``n`` records of ``fmt`` with random field values (strings: short NUL-terminated ASCII)."""
    size = max(f.offset + f.size for f in fmt.fields)
    raw = bytearray()
    offs = []
    for _ in range(n):
        rec = bytearray(rng.getrandbits(8) for _ in range(size))
        rec[0:2] = fmt.id.to_bytes(2, "little")
        for f in fmt.fields:
            if f.kind == "string":
                text = bytes(rng.choice(b"abcxyz-/ 0123") for _ in range(rng.randrange(0, f.size)))
                rec[f.offset:f.offset + f.size] = (text + b"\0" * f.size)[:f.size]
        # edge values: all-zero and all-ones integers now and then
        if rng.random() < 0.2:
            for f in fmt.fields:
                if f.kind == "int" and not f.name.startswith("common_"):
                    rec[f.offset:f.offset + f.size] = (b"\xff" if rng.random() < 0.5 else b"\0") * f.size
        offs.append(len(raw))
        raw += rec
    z = np.zeros(n, dtype=np.int32)
    return Chunk(np.arange(n, dtype=np.uint64), z, z, z, z, raws=[np.frombuffer(bytes(raw), dtype=np.uint8)],
                 src=z.copy(), off=np.asarray(offs, dtype=np.int64), size=np.full(n, size, dtype=np.int32),
                 type_id=np.full(n, fmt.id, dtype=np.int32))


def test_column_printers_print_as_libtraceevent_does() -> None:
    """Every print fmt of a real trace-cmd file (2 323 formats of kernel 6.x) that compiles prints random records
    exactly as libtraceevent prints them; the KVM and scheduler events align reads are among them."""
    pytest.importorskip("ctypes")
    from tsalign.traces.printfmt import EventPrinter

    dat = TraceDat(str(EX / "foreign" / "host.dat"))
    try:
        compiled = {f.id: cp for f in dat.formats.values() if (cp := compile_print_fmt(f, dat.long_size))}
        names = {dat.formats[i].name for i in compiled}
        assert {"kvm_pio", "kvm_msr", "kvm_write_tsc_offset", "sched_waking", "kvm_entry"} <= names
        assert {"sched_switch", "kvm_exit", "kvm_inj_virq"} <= names  # __print_flags / __print_symbolic / ?:
        rng = random.Random(10)
        with EventPrinter(dat.formats.values(), dat.long_size, dat.endian == ">", "test") as pr:
            for i, cp in compiled.items():
                if pr.formats[i].get("__data_loc") is not None:
                    continue
                c = _records(pr.formats[i], 40, rng)
                pr._parse([i])
                if i not in pr.known:
                    continue
                from tsalign.traces.fields import decode

                cols = decode(c.raws, c.src, c.off, c.size, cp.fmt, cp.fields)
                fast = cp.format_arrow(cols, len(c)).to_pylist()
                assert fast == pr._print_rows(c, np.arange(len(c))), pr.formats[i].full_name
    finally:
        dat.close()


def test_a_wrong_column_printer_is_caught_and_not_used() -> None:
    """The printer checks each type's first events against libtraceevent: a column printer that prints something
    else (here: its template changed) is switched off for that type, and every payload is still libtraceevent's."""
    from tsalign.traces.printfmt import EventPrinter

    dat = TraceDat(str(EX / "foreign" / "host.dat"))
    try:
        fmt = next(f for f in dat.formats.values() if f.name == "kvm_pio")
        c = _records(fmt, 100, random.Random(3))
        with EventPrinter(dat.formats.values(), dat.long_size, False, "t") as right, \
                EventPrinter(dat.formats.values(), dat.long_size, False, "t") as wrong:
            good = right.payloads(c).to_pylist()
            assert right.checked[fmt.id] is True
            cp = compile_print_fmt(fmt)
            assert cp is not None
            wrong.compiled[fmt.id] = ColumnPrinter(fmt, cp.template.replace("val", "VAL"), cp.args)
            assert wrong.payloads(c).to_pylist() == good and wrong.checked[fmt.id] is False
            assert all(p.startswith("pio_") and " val 0x" in p for p in good)
    finally:
        dat.close()


def _small_records(fmt: EventFormat, n: int, rng: random.Random) -> Chunk:
    """Records of ``fmt`` whose integer fields hold the values flags and symbols are made of (single bits, small
    numbers, VMX's failed-entry bit): what an expression argument (__print_flags, __print_symbolic, ?:) meets."""
    c = _records(fmt, n, rng)
    raw = bytearray(c.raws[0].tobytes())
    values = [0, 1, 2, 3, 4, 7, 12, 0x30, 0x7F, 0x80, 0x81, 0x100, 0x101, 0x7B, 0x400, 0xFFFF, 0x10000,
              0x80000021, 0x8000000C, 0xFFFFFFFF]
    for off in c.off.tolist():
        for f in fmt.fields:
            if f.kind == "int" and not f.name.startswith("common_") and f.size in (1, 2, 4, 8):
                v = rng.choice(values) % (1 << (8 * f.size))
                raw[off + f.offset:off + f.offset + f.size] = v.to_bytes(f.size, "little")
    c.raws[0] = np.frombuffer(bytes(raw), dtype=np.uint8)
    return c


def test_expression_arguments_print_as_libtraceevent_does() -> None:
    """The print fmts with __print_flags / __print_symbolic / general ternaries (sched_switch's prev_state,
    kvm_exit's exit reason by ISA, kvm_pic_set_irq's shifts, ...) print records holding the values such flags are
    made of exactly as libtraceevent prints them, through EventPrinter (each value tuple checked as it first
    occurs) and by the column printer alone."""
    from tsalign.traces.fields import decode
    from tsalign.traces.printfmt import EventPrinter

    with TraceDat(str(EX / "foreign" / "host.dat")) as dat:
        rng = random.Random(11)
        with EventPrinter(dat.formats.values(), dat.long_size, dat.endian == ">", "test") as pr:
            exprs = [i for i, f in dat.formats.items() if (cp := compile_print_fmt(f, dat.long_size)) is not None
                     and any(a.expr is not None for a in cp.args)]
            names = {dat.formats[i].name for i in exprs}
            assert {"sched_switch", "kvm_exit", "kvm_pic_set_irq", "kvm_apic_accept_irq"} <= names, names
            assert len(exprs) >= 30
            for i in exprs:
                if pr.formats[i].get("__data_loc") is not None:
                    continue
                pr._parse([i])
                if i not in pr.known:
                    continue
                c = _small_records(pr.formats[i], 60, rng)
                ref = pr._print_rows(c, np.arange(len(c)))
                cp = pr._column_printer(i)
                assert cp is not None
                alone = cp.format_arrow(decode(c.raws, c.src, c.off, c.size, cp.fmt, cp.fields), len(c)).to_pylist()
                assert alone == ref, pr.formats[i].full_name
                assert pr.payloads(c).to_pylist() == ref and pr.checked[i], pr.formats[i].full_name
        switch = dat.formats.by_full_name("sched:sched_switch")
        assert switch is not None
        cp = compile_print_fmt(switch, dat.long_size)
        assert cp is not None
        c = _small_records(switch, 40, rng)
        states = decode(c.raws, c.src, c.off, c.size, switch, ["prev_state"])["prev_state"]
        texts = cp.format_arrow(decode(c.raws, c.src, c.off, c.size, switch, cp.fields), len(c)).to_pylist()
        by_hand = {0: "R", 1: "S", 2: "D", 3: "S|D", 4: "T", 7: "S|D|T", 0x80: "I", 0x81: "S|I", 0x100: "R+",
                   0x101: "S+", 0x7F: "S|D|T|t|X|Z|P"}  # (the kernel's TASK_REPORT letters; 0x100: preempted)
        for st, t in zip(np.asarray(states).tolist(), texts):
            if st in by_hand:
                assert f"prev_state={by_hand[st]} ==>" in t, (st, t)


def test_an_expression_value_printed_otherwise_is_caught_when_it_first_occurs() -> None:
    """A column printer whose expression argument is right for the values of the first events but wrong for one that
    comes later (here: sched_switch's prev_state 2 printed "X") is caught in the chunk where that value first occurs:
    the type goes back to libtraceevent and every payload is still libtraceevent's."""
    from dataclasses import replace

    from tsalign.traces.cexpr import StringArg
    from tsalign.traces.printfmt import EventPrinter

    with TraceDat(str(EX / "foreign" / "host.dat")) as dat:
        switch = dat.formats.by_full_name("sched:sched_switch")
        assert switch is not None
        cp = compile_print_fmt(switch, dat.long_size)
        assert cp is not None
        k = next(j for j, a in enumerate(cp.args) if a.expr is not None and "__print_flags" not in repr(a))
        arg = cp.args[k]
        assert arg.expr is not None
        right = arg.expr.fn
        wrong = StringArg(arg.expr.fields, lambda v: "X" if v[0] == 2 else right(v))
        bad = ColumnPrinter(switch, cp.template, (*cp.args[:k], replace(arg, expr=wrong), *cp.args[k + 1:]))
        st = switch.get("prev_state")
        assert st is not None

        def chunk(states: list[int]) -> Chunk:
            c = _small_records(switch, len(states), random.Random(len(states)))
            raw = bytearray(c.raws[0].tobytes())
            for off, v in zip(c.off.tolist(), states):
                raw[off + st.offset:off + st.offset + st.size] = v.to_bytes(st.size, "little")
            c.raws[0] = np.frombuffer(bytes(raw), dtype=np.uint8)
            return c

        first, later = chunk([0, 1] * 50), chunk([1, 0, 1, 2, 0] * 20)
        with EventPrinter([switch], dat.long_size, False, "t") as ref, EventPrinter([switch], dat.long_size, False,
                                                                                  "t") as pr:
            pr._parse([switch.id])
            pr.compiled[switch.id] = bad
            assert pr.payloads(first).to_pylist() == ref.payloads(first).to_pylist()
            assert pr.checked[switch.id] is True
            assert pr.payloads(later).to_pylist() == ref.payloads(later).to_pylist()
            assert pr.checked[switch.id] is False


def test_a_print_fmt_reading_common_fields_is_printed_per_record() -> None:
    """libtraceevent's text is memoised by record from the event's own fields on (sched_switch pairs repeat); a
    print fmt that reads a ``common_*`` field (here kvm_pio's made to print common_pid) is keyed on the whole
    record, and is never a column printer (whose decoder reads an event's own fields only): two records equal
    but for their pid print their own pids."""
    import re

    from tsalign.traces.eventformat import parse_format
    from tsalign.traces.printfmt import EventPrinter

    with TraceDat(str(EX / "foreign" / "host.dat")) as dat:
        pio = dat.formats.by_full_name("kvm:kvm_pio")
        assert pio is not None
        fmt = parse_format(re.sub(r"print fmt:.*", 'print fmt: "pid=%d port=%x", REC->common_pid, REC->port', pio.text),
                           pio.system, "test")
        c = _records(fmt, 2, random.Random(5))
        raw = bytearray(c.raws[0].tobytes())
        size = int(c.size[0])
        pid = fmt.get("common_pid")
        assert pid is not None
        raw[size:2 * size] = raw[:size]  # the second record: the first's bytes, another pid
        raw[size + pid.offset:size + pid.offset + 4] = (4242).to_bytes(4, "little")
        raw[pid.offset:pid.offset + 4] = (77).to_bytes(4, "little")
        c.raws[0] = np.frombuffer(bytes(raw), dtype=np.uint8)
        with EventPrinter([fmt], dat.long_size, False, "t") as pr:
            out = pr.payloads(c).to_pylist()
            assert pr.compiled.get(fmt.id) is None
        port = int.from_bytes(raw[fmt.get("port").offset:][:4], "little")  # type: ignore[union-attr]
        assert out == [f"pid=77 port={port:x}", f"pid=4242 port={port:x}"], out


def test_print_fmts_outside_the_subset_are_left_to_libtraceevent() -> None:
    def fmt(pf: str) -> EventFormat:
        from tsalign.traces.eventformat import parse_format

        return parse_format("name: t\nID: 7\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
                            "\tfield:int x;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:u64 y;\toffset:16;\tsize:8;\tsigned:0;\n"
                            f"\nprint fmt: {pf}\n", "s")

    assert compile_print_fmt(fmt('"x=%d y=%llx", REC->x, REC->y')) is not None
    assert compile_print_fmt(fmt('"%s", __print_flags(REC->x, "|", {1, "A"})')) is not None
    for pf in ('"%#x", REC->x', '"%p", REC->y', '"%d", REC->x + 1', '"%10s", __print_flags(REC->x, "|", {1, "A"})',
               '"%s", !REC->x ? "a" : "b"', '"%s", __print_hex(REC->x, 2)', '"%s", REC->x ? (u8)REC->y : "b"',
               '"%d %d", REC->x', '"%d", REC->x, REC->y', '"%d", REC->nope', '"%hd", REC->x', '"%s", REC->x',
               '"%d", (u8)REC->x', 'REC->x'):
        assert compile_print_fmt(fmt(pf)) is None, pf
    assert split_args('"a, \\"b\\"", REC->x ? "y, z" : "", f(1, 2)') == ('a, "b"', ['REC->x ? "y, z" : ""', "f(1, 2)"])
    assert split_args('"unterminated') is None


def _both(path: Path, fmt: str = "ftrace") -> tuple[list[tuple], list[tuple], TextTrace, TextTrace]:
    def dump(t: TextTrace, chunks: object) -> list[tuple]:
        out: list[tuple] = []
        for c in chunks:  # type: ignore[attr-defined]
            # (the block reader hands align's EventsBuilder its payloads as pyarrow strings: taken so here)
            payload = c.payload.to_pylist() if hasattr(c.payload, "to_pylist") else c.payload
            out += zip(c.ts.tolist(), c.cpu.tolist(), c.pid.tolist(), t.events.decode(c.event), t.comms.decode(c.comm),
                       payload, c.tgid.tolist() if c.tgid is not None else [None] * len(c))
        return out

    a, b = _Counting(str(path), fmt), TextTrace(str(path), fmt)
    a.arrow_payloads = True
    return dump(a, a.raw_chunks()), dump(b, b._line_chunks(b._lines())), a, b


class _Counting(TextTrace):
    """Counts the blocks the block reader hands to the line reader."""

    handed = 0

    def _line_chunks(self, *args: object, **kw: object):  # type: ignore[no-untyped-def]
        self.handed += 1
        return super()._line_chunks(*args, **kw)  # type: ignore[arg-type]


LINES = ["# tracer: nop", "#", "          qemu-1234  [001] d..1. 1000: kvm_pio: pio_write at 0x10 size 4 count 1 val 0x5 ",
         "", ("     CPU 1/KVM-7948  [000] .... 1002: sched_switch: prev_comm=a prev_pid=1 prev_prio=120 prev_state=R ==> "
         "next_comm=b next_pid=2 next_prio=120"), "  <idle>-0 [003] 1001: tsalign_beacon: seq=1 port=0x10"]


def test_block_reader_equals_line_reader(tmp_path: Path) -> None:
    """Same events, clock, resolution, notes and warnings: shipped traces, lines out of order, blank and comment lines,
    a syscall line (no colon after its name: the block goes to the line reader), ns with 6 digits."""
    cases = {"plain": LINES, "syscall": [*LINES, "  qemu-1234 [001] 1003: sys_write(fd: 9, buf: 0, count: 1)"],
             "ns": ["  a-1 [000] 11129.868688: e: x=1", "  a-1 [000] 11129.868690: e: x=2"]}
    for name, lines in cases.items():
        p = tmp_path / f"{name}.txt"
        p.write_text("\n".join(lines) + "\n")
        fast, slow, a, b = _both(p)
        assert fast == slow and fast, name
        assert a.handed == (name == "syscall"), name  # only the block with a syscall line goes line by line
        assert (a.info.clock, a.info.resolution, a.info.notes, a.info.warnings) == \
            (b.info.clock, b.info.resolution, b.info.notes, b.info.warnings), name
    others = {"perf-script": ["  qemu-system-x86  1234/1240 [001] 11129.868688123: kvm:kvm_pio: pio_write at 0x10 size 4",
                              "         swapper     0 [000] 11129.868689001:     100 cycles: ffffffff81000000 x"],
              "perf-prof": ["2024-01-01 10:00:00.123456  qemu 1234 d... [001] 11129.868688: kvm:kvm_pio: pio_write",
                            "2024-01-01 10:00:00.123457  qemu 1234 d... [001] 11129.868690: sched:sched_wakeup: x=1"]}
    for fmt, lines in others.items():
        p = tmp_path / f"{fmt}.txt"
        p.write_text("\n".join(lines) + "\n")
        fast, slow, a, b = _both(p, fmt)
        assert fast == slow and len(fast) == 2 and not a.handed, fmt
        assert (a.info.clock, a.info.resolution, a.info.notes) == (b.info.clock, b.info.resolution, b.info.notes), fmt
    for shipped in (EX / "foreign" / "guest.txt", EX / "selftest" / "host" / "cpu1.txt"):
        fast, slow, a, _ = _both(shipped)
        assert fast == slow and len(fast) > 1000 and not a.handed


def test_block_reader_hands_bad_lines_to_the_line_reader(tmp_path: Path) -> None:
    """A line that is no event, a NUL, a pid out of range: the error names the file and line, as the line reader's."""
    good = [f"  a-1 [000] {1000 + i}: e: x={i}" for i in range(5000)]
    for bad, what in (("garbage here", "event line"), ("  a-1 [000] 2000: e: x\0y", "NUL"),
                      ("  a-4294967296 [000] 2000: e: x=1", "pid below 2^31")):
        p = tmp_path / "t.txt"
        p.write_text("\n".join([*good, bad, *good]) + "\n")
        with pytest.raises(InvalidParameter) as e:
            list(TextTrace(str(p), "ftrace").raw_chunks())
        assert f"{p}:5001" in str(e.value) and what in str(e.value), str(e.value)


def test_block_reader_edge_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block reader (pyarrow's RE2 kernels) against the line reader (Python's re) on lines that differ only in
    their details: CRLF ends, TGID columns with digits and dashes, comms with spaces and UTF-8, empty and padded
    payloads, 9 fraction digits, an instance prefix, perf script's absent tid and pid -1, timestamps at 2^64 - 1,
    blocks of a few lines (so lines out of order across blocks) — equal, and taken by the block path except where
    a value needs the line reader's check."""
    from tsalign.traces import text

    monkeypatch.setattr(text, "BLOCK_CHARS", 300)
    cases = {
        "ftrace": ["  CPU 1/KVM-7948 (   7940) [001] d..1. 5000: kvm_exit: reason EPT_VIOLATION \r",
                   "  kworker/0:1-12 (-------) [000] ..... 5001: e:", "  çà-3 (  3) [000] 4999: e: ü=1   ",
                   "# comment", "", "  a-1 [002] 5002: tsalign_beacon: seq=7", *[f"  b-2 [000] {6000 + i}: e: i={i}"
                                                                                 for i in range(20)],
                   "  inst-x: q-9 [001] 6100: e: in an instance", "  t-1 [000] 18446744073709551615: e: last"],
        "perf-script": ["  qemu  1234/1240 [001] 11129.868688123: kvm:kvm_pio: pio_write at 0x10  ",
                        "  swapper     -1 [000] 11129.868689001: cycles: x", "  a b c 12 [003] 11129.868689002: e:"],
    }
    for fmt, lines in cases.items():
        p = tmp_path / f"{fmt}.txt"
        p.write_bytes(("\n".join(lines) + "\n").encode())
        fast, slow, a, b = _both(p, fmt)
        assert fast == slow and len(fast) == len([x for x in lines if x and not x.startswith("#")]), (fmt, fast, slow)
        assert (a.info.clock, a.info.resolution, a.info.notes, a.info.warnings) == \
            (b.info.clock, b.info.resolution, b.info.notes, b.info.warnings), fmt
        assert a.handed <= 1, (fmt, a.handed)  # the blocks are taken whole (2^64 - 1's block may go line by line)
    assert (fast[0][-1], slow[1][-1]) == (None, None)  # perf script has no TGID column
    one = TextTrace(str(tmp_path / "ftrace.txt"), "ftrace")
    tg = [t for c in one.raw_chunks() for t in c.tgid.tolist()]  # type: ignore[union-attr]
    assert tg[:3] == [3, 7940, -1] and one.info.warnings  # sorted (4999 came after 5000: the order warning)


_PIECE = st.text(st.sampled_from(list("ab -:()[]0129.é")), max_size=8)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "inst: ", "x-y.z:  "]), _PIECE, st.integers(0, 99999),
                          st.sampled_from(["", "(  12) ", "(-----) "]), st.integers(0, 3),
                          st.sampled_from(["", "d..1. ", "....  ", "1.2 "]), st.integers(10**11, 10**12),
                          st.sampled_from(["e", "kvm:kvm_pio", "a.b-c"]), _PIECE), min_size=1, max_size=12))
def test_block_reader_with_or_without_ftraces_optional_columns_equals_line_reader(
        tmp_path_factory: pytest.TempPathFactory, lines: list[tuple]) -> None:
    """ftrace lines with and without an instance prefix, a TGID column, an irq-flags column, and comms and payloads
    made of the characters those columns are told apart by (``-``, ``:``, ``(``, ``[``, ``]``, digits, spaces): the
    block reader (the bare pattern where no line could hold those columns, the full one elsewhere) reads what the
    line reader (Python's re, the full pattern) reads."""
    text = "".join(f"{b}{c}-{pid} {tg}[{cpu:03d}] {fl}{ts}: {ev}: {pay}\n"
                   for b, c, pid, tg, cpu, fl, ts, ev, pay in lines)
    p = tmp_path_factory.mktemp("bare") / "t.txt"
    p.write_text(text)
    try:
        fast, slow, _, _ = _both(p)
    except InvalidParameter as e:  # (a line neither reads: both readers refuse it the same way)
        with pytest.raises(InvalidParameter) as other:
            list(TextTrace(str(p), "ftrace")._line_chunks(TextTrace(str(p), "ftrace")._lines()))
        assert str(other.value) == str(e)
        return
    assert fast == slow


@settings(max_examples=300, deadline=None)
@given(st.text("-0+ ", max_size=3), st.sampled_from([0, 1, 3, 8, 17, 20]), st.sampled_from([None, 0, 1, 3, 18]),
       st.sampled_from(["d32", "d64", "u64", "x", "X"]),
       st.lists(st.integers(-2**63, 2**64 - 1), min_size=1, max_size=20))
def test_integers_in_whole_columns_print_as_pythons_percent(flags: str, width: int, prec: int | None, kind: str,
                                                           values: list[int]) -> None:
    """The column printer's integers (tsalign.traces.fastprint._int_text, pyarrow kernels and a byte table for hex)
    against Python's ``%``, which the printer's per-event path uses and libtraceevent checks (above): every flag,
    width and precision of the accepted subset, values at the edges of each width."""
    from tsalign.traces.fastprint import _int_text

    conv = kind[0]
    if kind == "d32":
        arr = np.asarray([v % 2**32 - (2**32 if v % 2**32 >= 2**31 else 0) for v in [*values, 0, -1, -2**31]], dtype=np.int32)
    elif kind == "d64":
        arr = np.asarray([v % 2**64 - (2**64 if v % 2**64 >= 2**63 else 0) for v in [*values, 0, -1, -2**63]], dtype=np.int64)
    else:
        arr = np.asarray([v % 2**64 for v in [*values, 0, 1, 15, 16, 2**64 - 1]], dtype=np.uint64)
    spec = "%" + flags + (str(width) if width else "") + ("" if prec is None else f".{prec}") + ("d" if conv == "u" else conv)
    assert _int_text(arr, flags, width, prec, conv).to_pylist() == [spec % int(x) for x in arr.tolist()]


@given(st.sampled_from(["", "-", "0", "-0"]), st.sampled_from([0, 2, 5, 9]), st.sampled_from([None, 0, 2, 4]),
       st.lists(st.text(max_size=6), min_size=1, max_size=8))
def test_strings_in_whole_columns_print_as_pythons_percent(flags: str, width: int, prec: int | None,
                                                          values: list[str]) -> None:
    """The same for ``%s`` (tsalign.traces.fastprint._pad_text): padding and precision count characters."""
    import pyarrow as pa

    from tsalign.traces.fastprint import _pad_text

    spec = "%" + flags + (str(width) if width else "") + ("" if prec is None else f".{prec}") + "s"
    assert _pad_text(pa.array(values, pa.string()), flags, width, prec).to_pylist() == [spec % v for v in values]


@given(st.lists(st.binary(min_size=8, max_size=8), min_size=1, max_size=40), st.binary(max_size=3))
@settings(max_examples=300, deadline=None)
def test_char_array_fields_in_columns_decode_as_python_does(values: list[bytes], junk: bytes) -> None:
    """``char[N]`` fields decoded in whole columns (up to the first NUL; invalid UTF-8 replaced) equal
    ``bytes.split(b"\\0")[0].decode("utf-8", "replace")`` per record, the text a column printer prints."""
    from tsalign.traces.eventformat import parse_format
    from tsalign.traces.fields import decode

    fmt = parse_format("name: t\nID: 7\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
                       "\tfield:char comm[8];\toffset:4;\tsize:8;\tsigned:0;\n\nprint fmt: \"%s\", REC->comm\n", "s")
    raw = b"".join(junk[:2].ljust(4, b"\0") + v for v in values)
    n = len(values)
    got = decode([np.frombuffer(raw, dtype=np.uint8)], np.zeros(n, dtype=np.int32), np.arange(n, dtype=np.int64) * 12,
                 np.full(n, 12, dtype=np.int32), fmt, ["comm"], arrow_strings=True)["comm"]
    assert got.to_pylist() == [v.split(b"\0", 1)[0].decode("utf-8", "replace") for v in values]


def test_evidence_fields_from_records_equal_those_parsed_from_their_text() -> None:
    """The evidence's host fields taken from binary records (BINARY_FIELDS: kvm_pio port/val, kvm_msr writes,
    sched_switch pids, sched_waking pid) equal what its text parsers (FIELDS) read from the same records printed by
    libtraceevent: on random records (flag-like and random values, MSR reads and #GP writes among them) and on a
    real trace-cmd capture read whole both ways."""
    from tsalign.traces.fields import decode
    from tsalign.traces.printfmt import EventPrinter
    from tsalign.verify.evidence import BINARY_FIELDS, FIELDS

    rng = random.Random(12)
    with TraceDat(str(EX / "foreign" / "host.dat")) as dat, \
            EventPrinter(dat.formats.values(), dat.long_size, dat.endian == ">", "test") as pr:
        for name, (need, fn) in BINARY_FIELDS["host"].items():
            fmt = next(f for f in dat.formats.values() if f.name == name)
            pr._parse([fmt.id])
            for c in (_records(fmt, 200, rng), _small_records(fmt, 200, rng)):
                text = pr._print_rows(c, np.arange(len(c)))
                got = fn(decode(c.raws, c.src, c.off, c.size, fmt, list(need)))
                import pyarrow as pa

                if got is None:  # (a negative pid: left to the text parser)
                    assert name.startswith("sched_wak")
                    continue
                compared = 0
                for i, t in enumerate(text):
                    try:
                        want = FIELDS["host"][name](pa.array([t], pa.string()))
                    except InvalidParameter:  # (kvm_pio printing a count >= 2^31 as negative: the text is refused)
                        continue
                    assert [int(np.asarray(g)[i]) for g in got] == [int(np.asarray(w)[0]) for w in want], (name, t)
                    compared += 1
                assert compared > 40, name

    from tsalign.align.sides import open_side
    from tsalign.verify.judge import payload_policies

    host, _ = payload_policies()
    path = str(EX / "foreign" / "host.dat")
    both = [open_side(path, "host", "--host", tsc_khz=1, payloads=p).events()
            for p in (host, dataclasses.replace(host, binary={}))]
    assert both[0].fields is not None and both[1].fields is not None
    for a, b in zip(both[0].fields, both[1].fields):
        assert np.array_equal(a, b)
    assert int(both[0].fields[2].sum()) > 1000  # (the capture's kvm_pio and kvm_msr writes, its sched events)


@given(st.lists(st.integers(0, (1 << 64) - 1), max_size=40), st.sampled_from("xX"))
@settings(max_examples=200, deadline=None)
def test_compiled_hex_digits_equal_the_numpy_ones_and_python(values: list[int], conv: str) -> None:
    from tsalign.traces import fastprint

    v = np.asarray(values, dtype=np.uint64)
    compiled = fastprint._hex_text(v, conv).to_pylist()
    saved, fastprint._hex_compiled = fastprint._hex_compiled, None
    try:
        plain = fastprint._hex_text(v, conv).to_pylist()
    finally:
        fastprint._hex_compiled = saved
    assert saved is not None
    assert compiled == plain == [format(x, conv) for x in values]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40), st.lists(st.integers(0, 2**64 - 1), max_size=40))
@settings(max_examples=200, deadline=None)
def test_compiled_decimal_digits_are_str_of_each_integer(signed: list[int], unsigned: list[int]) -> None:
    """The compiled decimal printer (JSON lines, %d/%u in column printers) against ``str`` and pyarrow's cast, at
    the extremes too (-2^63, 2^64 - 1) and for narrow dtypes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tsalign.traces.fastprint import decimal_text

    for values, dtype in ((signed + [-(2**63), 0], np.int64), (unsigned + [2**64 - 1], np.uint64),
                          ([x % 256 - 128 for x in unsigned], np.int8), ([x % 65536 for x in unsigned], np.uint16)):
        v = np.asarray(values, dtype=dtype)
        got = decimal_text(v).to_pylist()
        assert got == [str(x) for x in values] == pc.cast(pa.array(v), pa.string()).to_pylist()


_LINE_CHARS = st.text(st.sampled_from(list("ab -:[]()0129.\t\r_é")), max_size=30)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(
    _LINE_CHARS,
    st.builds(lambda lead, comm, pid, cpu, ts, ev, sep, pay: f"{lead}{comm}-{pid} [{cpu}] {ts}: {ev}:{sep}{pay}",
              st.sampled_from(["", "  ", "\t"]), _LINE_CHARS, st.sampled_from(["1", "0123456789", "12345678901", ""]),
              st.sampled_from(["000", "12345", "123456", "x"]),
              st.sampled_from(["1", "12345678901234567890", "123456789012345678901", "11129.868688",
                               "12345678901.123456789012", "123456789012.1", "1.", "1:2"]),
              st.sampled_from(["e", "kvm:kvm_pio", ":x", "a.b-c:", "", "x y"]), st.sampled_from(["", " ", "  ", "\t"]),
              _LINE_CHARS)), min_size=1, max_size=25))
def test_compiled_ftrace_scanner_extracts_what_the_regex_does(lines: list[str]) -> None:
    """The compiled scanner against pyarrow's RE2 kernel with the same (bare ftrace) pattern, on lines built near
    every edge of it: field widths at and past their limits, several ``-`` and ``:``, blanks, UTF-8, no match."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tsalign.traces.ftracescan import scan
    from tsalign.traces.text import _FTRACE_BARE

    block = "".join(x + "\n" for x in lines).encode()
    raw = np.frombuffer(block, dtype=np.uint8)
    starts = np.concatenate([[0], np.flatnonzero(raw == 10) + 1]).astype(np.int64)
    arr = pa.StringArray.from_buffers(len(starts) - 1, pa.py_buffer(starts.astype(np.int32)), pa.py_buffer(block))
    want = pc.extract_regex(arr, _FTRACE_BARE).to_pylist()
    assert scan(block, starts).to_pylist() == want


_STAMP = st.one_of(
    st.from_regex(r"\A[0-9]{1,22}\Z"),
    st.from_regex(r"\A[0-9]{1,13}\.[0-9]{0,12}\Z"),
    st.sampled_from(["18446744073709551615", "18446744073709551616", "00000000000000000000001",
                     "18446744073.709551615", "18446744073.709551616", "18446744074.0", "99999999999.999999999",
                     "0.000000001", "12.", "1.5", "007.0700"]))


def _stamps_by_kernels(text: object, monkeypatch: pytest.MonkeyPatch) -> tuple[object, int]:
    """_arrow_stamps' pyarrow-kernel path (the compiled scan switched off)."""
    from tsalign.traces import text as text_mod

    with monkeypatch.context() as m:
        m.setattr(text_mod, "scan_stamps", lambda _t: None)
        return TextTrace._arrow_stamps(text)


@settings(max_examples=400, deadline=None)
@given(st.lists(_STAMP, min_size=1, max_size=8), st.integers(0, 2))
def test_stamp_scan_equals_the_kernels_and_exact_arithmetic(stamps: list[str], cut: int) -> None:
    """The compiled stamp scan (tsalign.traces.stamps), its interpreted loop and the pyarrow-kernel path read the same
    column alike: the same uint64 values and resolution, or all refuse (None) — on integers and secs.frac at and past
    every limit (20 and 11 secs digits, 9 fraction digits, 2^64) and on a sliced array. Values are checked against
    exact integer arithmetic (Python ints) too."""
    import pyarrow as pa

    from tsalign.traces.stamps import scan_stamps

    mp = pytest.MonkeyPatch()
    arr = pa.array(["0", *stamps], pa.string()).slice(1)  # (an array with an offset, as a block's field may be)
    arr = arr.slice(0, max(1, len(arr) - cut))
    want = _stamps_by_kernels(arr, mp)
    got = TextTrace._arrow_stamps(arr)
    assert (None if got[0] is None else (got[0].tolist(), got[1])) == \
        (None if want[0] is None else (want[0].tolist(), want[1])), arr.to_pylist()
    py, jit = scan_stamps(arr, force_python=True), scan_stamps(arr)
    assert py is not None and jit is not None
    for f in ("ns", "dotted", "frac_len"):
        a, b = getattr(py, f), getattr(jit, f)
        if f == "ns":  # (not exact where it overflowed: compared where it did not)
            ok = ~((a == 0) & py.dotted)
            a, b = a[ok], b[ok]
        assert a.tolist() == b.tolist(), f
    assert (py.max_secs_len, py.secs_overflow, py.ns_overflow) == (jit.max_secs_len, jit.secs_overflow, jit.ns_overflow)
    if got[0] is not None:  # exact: secs * 10^9 + the fraction padded to 9 digits, or the integer as it is
        exact = [int(s) if "." not in s else int(s.split(".")[0]) * 10**9 + int((s.split(".")[1] + "0" * 9)[:9])
                 for s in arr.to_pylist()]
        assert got[0].tolist() == exact


def test_stamp_scan_refuses_what_is_no_stamp() -> None:
    """Not digits[.digits] (a sign, a blank, two dots, a null, an empty string): the scan refuses, so the caller
    takes the kernels' path, which names the line."""
    import pyarrow as pa

    from tsalign.traces.stamps import scan_stamps

    for bad in (["-1"], ["1 "], ["1.2.3"], ["1", None], [""], [".5"]):
        assert scan_stamps(pa.array(bad, pa.string())) is None, bad
        assert scan_stamps(pa.array(bad, pa.string()), force_python=True) is None, bad
    assert scan_stamps(pa.chunked_array([["1"]])) is None


_ASCII_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=6)


@st.composite
def _pieces(draw: st.DrawFn) -> tuple[list, int]:
    from tsalign.traces.printjoin import COL, DEC, HEX, HEXU, LIT, VOCAB, Piece

    n = draw(st.integers(0, 6))
    out = []
    for kind in draw(st.lists(st.sampled_from([LIT, VOCAB, DEC, HEX, HEXU, COL]), min_size=1, max_size=6)):
        if kind == LIT:
            out.append(Piece(LIT, draw(_ASCII_TEXT)))
        elif kind == VOCAB:
            voc = draw(st.lists(_ASCII_TEXT, min_size=1, max_size=4))
            out.append(Piece(VOCAB, voc, np.asarray(draw(st.lists(st.integers(0, len(voc) - 1), min_size=n,
                                                                  max_size=n)), dtype=np.int64)))
        elif kind == COL:
            import pyarrow as pa

            texts = draw(st.lists(_ASCII_TEXT, min_size=n + 1, max_size=n + 1))
            out.append(Piece(COL, pa.array(texts, pa.string()).slice(1)))  # (a sliced array)
        else:
            mag = np.asarray(draw(st.lists(st.integers(0, (1 << 64) - 1), min_size=n, max_size=n)), dtype=np.uint64)
            neg = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
            out.append(Piece(kind, None, mag, neg))
    return out, n


@settings(max_examples=300, deadline=None)
@given(_pieces())
def test_compiled_join_equals_python_formatting(case: tuple[list, int]) -> None:
    """The compiled join of a print fmt's pieces (tsalign.traces.printjoin), its loop interpreted and the pieces made
    text by pyarrow's kernels (the fallback) give each row as Python builds it: the pieces' texts joined (digits as
    ``%d``/``%x``/``%X`` print them, a ``-`` before a negative number) and ``str.rstrip()``-ed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tsalign.traces.fastprint import _PY_SPACE, _arrow_part
    from tsalign.traces.printjoin import COL, DEC, HEX, LIT, VOCAB, Piece, join_pieces

    pieces, n = case

    def text(p: Piece, i: int) -> str:
        if p.kind == LIT:
            return str(p.texts)
        if p.kind == VOCAB:
            assert p.values is not None
            return str(p.texts[int(p.values[i])])
        if p.kind == COL:
            return str(p.texts[i].as_py())
        assert p.values is not None and p.neg is not None
        v = int(p.values[i])
        digits = f"{v:d}" if p.kind == DEC else f"{v:x}" if p.kind == HEX else f"{v:X}"
        return ("-" if p.neg[i] else "") + digits

    want = ["".join(text(p, i) for p in pieces).rstrip() for i in range(n)]
    for force in (False, True):
        got = join_pieces(pieces, n, force_python=force)
        assert got is not None and got.to_pylist() == want, force
    parts = [_arrow_part(p) for p in pieces]
    if any(isinstance(p, pa.Array) for p in parts):
        kern = pc.utf8_rtrim(pc.binary_join_element_wise(*parts, pa.scalar("")), characters=_PY_SPACE)
        assert kern.to_pylist() == want


def test_compiled_join_leaves_non_ascii_text_to_the_kernels() -> None:
    """A non-ASCII literal, vocabulary text or column (str.rstrip() trims Unicode blanks too): None, the caller's
    pyarrow kernels print it."""
    import pyarrow as pa

    from tsalign.traces.printjoin import COL, DEC, LIT, VOCAB, Piece, join_pieces

    dec = Piece(DEC, None, np.asarray([5], dtype=np.uint64), np.asarray([False]))
    for odd in (Piece(LIT, "é"), Piece(VOCAB, ["a", "\u3000"], np.asarray([0])), Piece(COL, pa.array(["ü"]))):
        assert join_pieces([dec, odd], 1) is None
    assert join_pieces([dec, Piece(LIT, " \x1c\t")], 1).to_pylist() == ["5"]  # (ASCII blanks isspace() names)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.lists(st.integers(0, 70), max_size=20), st.integers(0, 9))
def test_field_gather_compiled_equals_numpy(raw: bytes, offs: list[int], size: int) -> None:
    """tsalign.traces.fields' compiled gather of each record's bytes gives numpy's fancy-index gather; a row that
    would read past the page raises IndexError on both paths (a corrupt record is never read out of bounds)."""
    from tsalign.traces import fields

    buf = np.frombuffer(raw, dtype=np.uint8)
    o = np.asarray(offs, dtype=np.int64)
    idx = o[:, None] + np.arange(size, dtype=np.int64)[None, :]
    if o.size and size and int(o.max()) + size > buf.size:
        with pytest.raises(IndexError):
            fields._gather(buf, o, size)
        return
    assert fields._gather(buf, o, size).tolist() == buf[idx].tolist()
