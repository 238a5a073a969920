"""Regression cases for .dat files a hostile user writes (issue 13's crashers): every size and offset is
checked before the page walker sees it, and each error names the file, the place and what was expected.
Files come from the project's own v7 writer (tests/infra/ringpages.py), patched byte by byte."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from tests.infra.ringpages import PageWriter, payload, write_v7
from tsalign.errors import InvalidParameter
from tsalign.traces.reader import open_trace
from tsalign.traces.tracedat import TraceDat


def dat(tmp_path: Path, compression: str = "none", type_id: int = 7, n: int = 300) -> Path:
    w0, w1 = PageWriter(1000), PageWriter(1001)
    for i in range(n):
        w0.event(10, payload(type_id, 100, i))
        w1.event(10, payload(type_id, 100, 1000 + i))
    p = tmp_path / f"t-{compression}.dat"
    write_v7(str(p), {"": {0: w0.pages(), 1: w1.pages()}}, compression=compression, type_id=type_id)
    return p


def read(p: Path) -> int:
    with open_trace(str(p), "dat") as t:
        return sum(len(c) for c in t.chunks())


def patched(p: Path, old: bytes, new: bytes) -> Path:
    data = p.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    p.write_bytes(data.replace(old, new))
    return p


def test_the_unpatched_files_read(tmp_path: Path) -> None:
    assert read(dat(tmp_path)) == 600 and read(dat(tmp_path, "zlib")) == 600


@pytest.mark.parametrize(("old", "new"), [
    (b"commit;\toffset:8;\tsize:8;", b"commit;\toffset:8;\tsize:9;"),     # the walker read 9+ bytes past the header
    (b"commit;\toffset:8;\tsize:8;", b"commit;\toffset:9;\tsize:8;"),
    (b"data;\toffset:16;", b"data;\toffset:99;"),                           # inside, but not after the commit word
    (b"data;\toffset:16;", b"data;\toffset:00;"),
    (b"timestamp;\toffset:0;", b"timestamp;\toffset:8;"),
])
def test_header_page_with_bad_layout(tmp_path: Path, old: bytes, new: bytes) -> None:
    p = patched(dat(tmp_path), old, new)
    with pytest.raises(InvalidParameter, match=r"header_page .*the kernel's page header"):
        read(p)


@pytest.mark.parametrize("size", [0, 1, 4095, 1 << 31, 0xFFFFFFFF])
def test_page_size_out_of_range(tmp_path: Path, size: int) -> None:
    p = dat(tmp_path)
    data = bytearray(p.read_bytes())
    struct.pack_into("<I", data, 14, size)
    p.write_bytes(bytes(data))
    with pytest.raises(InvalidParameter, match=rf"page size {size} \(byte 14\).*power of two"):
        read(p)


def test_event_id_beyond_16_bits(tmp_path: Path) -> None:
    # an ID of 999999 once sized a lookup table of that many entries per byte of the file
    p = patched(dat(tmp_path, type_id=10000), b"ID: 10000", b"ID:999999")
    with pytest.raises(InvalidParameter, match="event ID from 0 to 65535"):
        read(p)


def _cpus(p: Path) -> list:
    with TraceDat(str(p)) as d:
        return d.buffers[0].cpus


def test_compressed_cpu_with_no_chunks_is_an_error(tmp_path: Path) -> None:
    # was: CPU 0 silently dropped, 300 of 600 events, exit 0
    p = dat(tmp_path, "zlib")
    cpu0 = _cpus(p)[0]
    data = bytearray(p.read_bytes())
    struct.pack_into("<I", data, cpu0.offset, 0)
    p.write_bytes(bytes(data))
    with pytest.raises(InvalidParameter, match=r"CPU 0 chunk count 0"):
        read(p)


def test_compressed_chunk_sizes(tmp_path: Path) -> None:
    p = dat(tmp_path, "zlib", n=2000)  # 4 chunks of 2 pages per CPU
    cpu1 = _cpus(p)[1]
    good = p.read_bytes()
    for at, value, match in ((4, 0, "found 0"), (8, 1 << 30, "at most 256 MiB uncompressed"),
                             (0, 1, "1 chunks filling")):
        data = bytearray(good)
        struct.pack_into("<I", data, cpu1.offset + at, value)
        p.write_bytes(bytes(data))
        with pytest.raises(InvalidParameter, match=match):
            read(p)


def test_two_cpus_pointing_at_the_same_data(tmp_path: Path) -> None:
    p = dat(tmp_path)
    c0, c1 = _cpus(p)
    patched(p, struct.pack("<IQQ", 1, c1.offset, c1.size), struct.pack("<IQQ", 1, c0.offset, c1.size))
    with pytest.raises(InvalidParameter, match="overlaps CPU 0's"):
        read(p)


def test_event_header_cut_at_the_end_of_the_page_data(tmp_path: Path) -> None:
    """A time-extend header (8 bytes) whose second word lies past the page's committed data."""
    w = PageWriter(1000)
    w.event(10, payload(7, 100, 1))
    pages = bytearray(w.pages())
    commit = struct.unpack_from("<Q", pages, 8)[0]
    struct.pack_into("<I", pages, 16 + commit, 30)  # type_len 30 (time extend) ...
    struct.pack_into("<Q", pages, 8, commit + 4)    # ... with only its first word committed
    p = tmp_path / "cut.dat"
    write_v7(str(p), {"": {0: bytes(pages)}}, compression="none")
    with pytest.raises(InvalidParameter, match="event runs past the end"):
        read(p)


# ------------------------------------------------------------------ text traces and CLI values

LINE = "          python-19188   (  19188) [000] ..... 1862006141564: sys_exit: NR 13 = 0"


def cli(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    from tsalign.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(list(argv))
    assert "Traceback" not in err.getvalue()
    return code, err.getvalue()


@pytest.mark.parametrize(("bad", "match"), [
    (LINE.replace("[000]", "[99999999999]"), "a ftrace event line"),                # cpu overflowed int32
    (LINE.replace("python-19188", "python-" + "9" * 30), "a ftrace event line"),   # pid overflowed int32
    (LINE.replace("python-19188", "python-4294967295"), "a pid below 2"),
    (LINE.replace("(  19188)", "(4294967296)"), "a TGID below 2"),
    (LINE.replace("1862006141564", "9" * 5000), "a ftrace event line"),            # int() digit limit
    (LINE.replace("1862006141564", "99999999999999999999"), "below 2\\^64"),
    (LINE.replace("000", "\u0660\u0660\u0660"), "a ftrace event line"),           # Unicode digits are not digits
    (LINE.replace("sys_exit", "sys\0exit"), "without NUL bytes"),
    (LINE + "x" * (2 << 20), "a line of at most 1024 KiB"),
])
def test_hostile_text_lines(tmp_path: Path, bad: str, match: str) -> None:
    p = tmp_path / "t.txt"
    p.write_text(LINE + "\n" + bad + "\n")
    code, err = cli("events", str(p))
    assert code == 3 and re.search(match, err) and "t.txt:2" in err, err
    assert len(err) < 2000  # a 2 MiB line is never echoed whole


def test_text_buffer_and_clock_must_exist(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text(LINE + "\n")
    code, err = cli("events", str(p), "--buffer", "nope")  # was: 0 events, exit 0
    assert code == 3 and "--buffer" in err and "''" in err
    code, err = cli("events", str(p), "--clock", "nope")   # was: accepted
    assert code == 3 and "--clock" in err and "x86-tsc" in err


def test_events_parquet_paths_and_inferred_clock(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text(LINE + "\n")
    code, err = cli("events", str(p), "--parquet", str(tmp_path / "no" / "x.parquet"))
    assert code == 3 and "existing directory" in err
    # the clock of a text trace is inferred from its lines: x86-tsc here, so --tsc-offset is accepted
    code, err = cli("events", str(p), "--parquet", str(tmp_path / "x.parquet"), "--tsc-offset", "5")
    assert code == 0, err
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "x.parquet")
    assert t.column("guest_tsc").to_pylist() == [1862006141564 + 5]


def test_events_parquet_scaling_options(tmp_path: Path) -> None:
    """--tsc-ratio/--tsc-frac-bits: the scaled conversion (by hand: 1862006141564 * 2 + 2^63, ratio 2.0 in 48
    fraction bits); refused where they would be ignored (no --tsc-offset: was exit 0) or misread (ratio 0: was taken
    for no scaling), named as the options (was "tsc frac bits")."""
    import pyarrow.parquet as pq

    p, out = tmp_path / "t.txt", str(tmp_path / "x.parquet")
    p.write_text(LINE + "\n")
    code, err = cli("events", str(p), "--parquet", out, "--tsc-offset", "0x8000000000000000", "--tsc-ratio", hex(2 << 48))
    assert code == 0, err
    assert pq.read_table(out).column("guest_tsc").to_pylist() == [1862006141564 * 2 + 2**63]
    code, err = cli("events", str(p), "--parquet", out, "--tsc-offset", "0", "--tsc-ratio", "3", "--frac-bits", "1")
    assert code == 0 and pq.read_table(out).column("guest_tsc").to_pylist() == [1862006141564 * 3 // 2]
    for argv, said in ((["--tsc-ratio", "7"], "--tsc-ratio: invalid value '7'; expected to be used with --tsc-offset"),
                       (["--tsc-frac-bits", "32"], "--tsc-frac-bits: invalid value '32'; expected to be used with"),
                       (["--tsc-offset", "5", "--tsc-ratio", "0"], "--tsc-ratio: invalid value '0'; expected a positive"),
                       (["--tsc-offset", "5", "--frac-bits", "99"], "--tsc-frac-bits: invalid value 99; expected 0..63")):
        code, err = cli("events", str(p), "--parquet", str(tmp_path / "y.parquet"), *argv)
        assert code == 3 and said in err, err
    assert not (tmp_path / "y.parquet").exists()


def test_align_out_naming_a_file(tmp_path: Path) -> None:
    ex = Path(__file__).resolve().parents[2] / "examples" / "selftest"
    (tmp_path / "f").write_text("")
    code, err = cli("align", "--host", str(ex / "host"), "--guest", str(ex / "guest"), "-o", str(tmp_path / "f"))
    assert code == 3 and "this is a file" in err


@pytest.mark.parametrize("value", ["\u0661\u0662", "0x\u0661\u0662", "1" * 41])
def test_convert_takes_ascii_numbers_only(value: str) -> None:
    code, err = cli("convert", "--from", "tsc", "--to", "guest-tsc", "--tsc-offset", "12", value)
    assert code == 3 and "VALUE #1" in err
    code, err = cli("convert", "--from", "tsc", "--to", "guest-tsc", "--tsc-offset", value, "100")
    assert code == 3 and "tsalign convert: error: --tsc-offset:" in err  # named once, not ----tsc-offset


def test_page_whose_commit_was_zeroed_is_not_silently_empty(tmp_path: Path) -> None:
    # was: commit 0 -> the page's events vanished, exit 0
    w = PageWriter(1000)
    for i in range(400):
        w.event(10, payload(7, 100, i))
    pages = bytearray(w.pages())
    struct.pack_into("<Q", pages, 8, 0)  # the first page's commit word
    p = tmp_path / "z.dat"
    write_v7(str(p), {"": {0: bytes(pages)}}, compression="none")
    with pytest.raises(InvalidParameter, match=r"1 page\(s\) commit 0 bytes but hold data \(first at page 0\)"):
        read(p)
    with open_trace(str(p), "dat", strict=False) as t:
        n = sum(len(c) for c in t.chunks())
        assert 0 < n < 400 and any("commit 0 bytes" in x for x in t.info.warnings)


def test_formats_are_parsed_when_used(tmp_path: Path) -> None:
    """A .dat's formats are read for their name and ID at open and parsed when an event's fields are first read: a
    format no event uses may be broken, one that is used and broken is an error naming the file and the format's
    offset, and one whose lines the two reads see differently (a vertical tab splits a line for the parser) is
    refused when parsed."""
    from tests.infra.ringpages import FORMAT_TEST

    good = FORMAT_TEST.format(id=7)
    broken = good.replace("field:", "field:;", 1)
    unused = broken.replace("ID: 7", "ID: 8").replace("name: tick", "name: unused")
    for formats, match in [([good, unused], None),
                           ([broken], r"f\.dat: offset \d+ \(test format\).*field:TYPE NAME"),
                           ([good + "x\x0bname: other\n"], r"read as test:tick ID 7, parsed as test:other ID 7")]:
        w = PageWriter(1000)
        for i in range(5):
            w.event(10, payload(7, 100, i))
        p = tmp_path / "f.dat"
        write_v7(str(p), {"": {0: w.pages()}}, formats=("test", formats))
        with open_trace(str(p), "dat") as t:
            assert t.dat.formats.name_of(7) == "test:tick"  # type: ignore[attr-defined]
            chunk = next(iter(t.chunks()))
            if match is None:
                _, cols = t.fields(chunk, "test:tick")
                assert list(cols["seq"]) == [0, 1, 2, 3, 4]
                with pytest.raises(InvalidParameter, match=r"f\.dat: offset \d+ \(test format\)"):
                    t.dat.formats[8]  # type: ignore[attr-defined]  # the access parses it
            else:
                with pytest.raises(InvalidParameter, match=match):
                    t.fields(chunk, "test:tick")
