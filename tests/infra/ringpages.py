"""Build ftrace ring-buffer pages and trace-cmd v7 files byte by byte, for tests with known answers.

The layout follows the kernel's ring_buffer.c and trace-cmd.dat.v7(5); real files recorded on this
machine are tested elsewhere (tests/integration/test_traces_real.py) — these synthetic ones reach
the cases a real capture cannot produce on demand (time extends, absolute stamps, discarded events,
zlib sections, corruption at a chosen byte).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

PAGE = 4096


@dataclass
class PageWriter:
    """Events appended to pages; ``pages()`` returns the bytes. Each event: (delta, payload bytes)."""

    start_ts: int
    page: int = PAGE
    missed_first: bool = False
    _pages: list[bytearray] = field(default_factory=list)
    _cur: bytearray = field(default_factory=bytearray)
    _ts: int = 0

    def __post_init__(self) -> None:
        self._ts = self.start_ts
        self._new_page(self.start_ts)

    def _new_page(self, ts: int) -> None:
        if self._pages or self._cur:
            self._flush()
        self._cur = bytearray()
        self._page_ts = ts

    def _flush(self) -> None:
        body = bytes(self._cur)
        commit = len(body) | ((1 << 31) if (self.missed_first and not self._pages) else 0)
        pg = struct.pack("<Qq", self._page_ts, commit) + body
        self._pages.append(bytearray(pg.ljust(self.page, b"\0")))

    def _room(self, n: int) -> bool:
        return 16 + len(self._cur) + n <= self.page

    def raw(self, header: int, extra: bytes = b"") -> None:
        self._cur += struct.pack("<I", header) + extra

    def event(self, delta: int, payload: bytes, force_len_word: bool = False) -> int:
        """Append one data event ``delta`` after the previous one; returns its absolute timestamp."""
        payload = payload.ljust((len(payload) + 3) // 4 * 4, b"\0")
        size = 4 + (4 if (force_len_word or len(payload) > 28 * 4) else 0) + len(payload)
        ext = 8 if delta >= (1 << 27) else 0
        if not self._room(size + ext):
            self._new_page(self._ts)
        self._ts += delta
        if ext:
            self.raw(30 | ((delta & ((1 << 27) - 1)) << 5), struct.pack("<I", delta >> 27))
            delta = 0
        if size == 4 + len(payload):
            self.raw((len(payload) // 4) | (delta << 5))
            self._cur += payload
        else:
            self.raw(0 | (delta << 5), struct.pack("<I", len(payload) + 4))
            self._cur += payload
        return self._ts

    def discarded(self, delta: int, length: int) -> None:
        """A discarded event (padding type with a non-zero delta): skipped, but its delta counts."""
        self._ts += delta
        self.raw(29 | (delta << 5), struct.pack("<I", length + 4))  # the length counts its own word
        self._cur += b"\0" * length

    def absolute(self, ts: int) -> None:
        self._ts = ts
        self.raw(31 | ((ts & ((1 << 27) - 1)) << 5), struct.pack("<I", (ts >> 27) & 0xFFFFFFFF))

    def pages(self) -> bytes:
        self._flush()
        out = b"".join(bytes(p) for p in self._pages)
        self._pages = []
        self._cur = bytearray()
        return out


def payload(type_id: int, pid: int, *ints: int) -> bytes:
    """common_type, flags, preempt, pid, then u32 fields."""
    return struct.pack("<HBBi", type_id, 0, 0, pid) + b"".join(struct.pack("<I", v) for v in ints)


HEADER_PAGE = ("\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
               "\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
               "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
               "\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;\n")

def event_format(name: str, fields: str, print_fmt: str, event_id: int | str = "{id}") -> str:
    """A format file: the common fields, then ``fields`` (field lines), then the print fmt."""
    return (f"name: {name}\nID: {event_id}\nformat:\n"
            "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
            "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
            "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
            "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
            f"{fields}\nprint fmt: {print_fmt}\n")


FORMAT_TEST = event_format("tick", "\tfield:unsigned int seq;\toffset:8;\tsize:4;\tsigned:0;\n", '"seq=%u", REC->seq')


def write_v7(path: str, buffers: dict[str, dict[int, bytes]], clock: str = "x86-tsc", compression: str = "zlib",
             type_id: int = 7, chunk_pages: int = 2, cmdlines: str = "100 worker\n",
             formats: tuple[str, list[str]] | None = None, options: list[tuple[int, bytes]] = ()) -> None:
    """A trace-cmd v7 file: one 'test:tick' format (or ``formats``: a system and its format texts),
    ``buffers`` name -> {cpu: pages}, sections compressed with zlib (or 'none'); ``options``: more
    (id, bytes) options in the first options section."""
    comp = compression != "none"

    def compress(b: bytes) -> bytes:
        return zlib.compress(b)

    out = bytearray(b"\x17\x08\x44tracing" + b"7\0" + b"\0" + b"\x08" + struct.pack("<I", PAGE))
    out += (b"zlib\x001\0" if comp else b"none\0\0")
    first_opt_at = len(out)
    out += b"\0" * 8

    def section(sid: int, data: bytes, buffer: bool = False) -> int:
        at = len(out)
        flags = 1 if comp else 0
        if comp and not buffer:
            c = compress(data)
            body = struct.pack("<II", len(c), len(data)) + c
        else:
            body = data
        out.extend(struct.pack("<HHIQ", sid, flags, 0, len(body)) + body)
        return at

    hdr = b"header_page\0" + struct.pack("<Q", len(HEADER_PAGE)) + HEADER_PAGE.encode()
    hdr += b"header_event\0" + struct.pack("<Q", 0)
    opts = []
    opts.append((16, struct.pack("<Q", section(16, hdr))))
    system, texts = formats or ("test", [FORMAT_TEST.format(id=type_id)])
    ev = struct.pack("<I", 1) + system.encode() + b"\0" + struct.pack("<I", len(texts))
    for text in texts:
        ev += struct.pack("<Q", len(text.encode())) + text.encode()
    opts.append((18, struct.pack("<Q", section(18, ev))))
    cl = cmdlines.encode()
    opts.append((21, struct.pack("<Q", section(21, struct.pack("<Q", len(cl)) + cl))))
    for name, cpus in buffers.items():
        at = len(out)
        out.extend(struct.pack("<HHIQ", 3, 1 if comp else 0, 0, 0))  # size patched below
        while len(out) % PAGE:
            out.append(0)
        table = []
        for cpu, data in cpus.items():
            start = len(out)
            if comp:
                step = chunk_pages * PAGE
                chunks = [data[i:i + step] for i in range(0, len(data), step)]
                out.extend(struct.pack("<I", len(chunks)))
                for ch in chunks:
                    c = compress(ch)
                    out.extend(struct.pack("<II", len(c), len(ch)) + c)
                size = len(out) - start - 4
            else:
                out.extend(data)
                size = len(data)
            table.append((cpu, start, size))
            while len(out) % PAGE:
                out.append(0)
        struct.pack_into("<Q", out, at + 8, len(out) - at - 16)
        body = struct.pack("<Q", at) + name.encode() + b"\0" + clock.encode() + b"\0" + struct.pack("<II", PAGE, len(table))
        body += b"".join(struct.pack("<IQQ", c, o, s) for c, o, s in table)
        opts.append((3, body))
    opts += list(options)
    opts_blob = b"".join(struct.pack("<HI", i, len(b)) + b for i, b in opts) + struct.pack("<HIQ", 0, 8, 0)
    struct.pack_into("<Q", out, first_opt_at, len(out))
    section(0, opts_blob)
    with open(path, "wb") as f:
        f.write(out)


def append_options(path: str, options: list[tuple[int, bytes]]) -> None:
    """Add ``options`` (id, bytes) to an uncompressed little-endian v7 file (``trace-cmd convert
    --compression none``): a new options section at the end of the file, linked from the DONE option
    of the last section of the chain (trace-cmd.dat.v7(5): DONE carries the next section's offset)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    assert data[:10] == b"\x17\x08\x44tracing" and data[10:12] == b"7\0" and data[12] == 0
    pos = 18
    for _ in range(2):  # compression algorithm and version strings
        pos = data.index(b"\0", pos) + 1
    link = pos  # where the offset of the next options section is written
    nxt = struct.unpack_from("<Q", data, link)[0]
    while nxt:
        sid, flags, _, size = struct.unpack_from("<HHIQ", data, nxt)
        assert sid == 0 and not flags & 1, "options sections must be uncompressed"
        p, end = nxt + 16, nxt + 16 + size
        link = 0
        while p < end:
            oid, osize = struct.unpack_from("<HI", data, p)
            if oid == 0:
                link = p + 6
                break
            p += 6 + osize
        assert link, "an options section without DONE"
        nxt = struct.unpack_from("<Q", data, link)[0]
    blob = b"".join(struct.pack("<HI", i, len(b)) + b for i, b in options) + struct.pack("<HIQ", 0, 8, 0)
    struct.pack_into("<Q", data, link, len(data))
    data += struct.pack("<HHIQ", 0, 0, 0, len(blob)) + blob
    with open(path, "wb") as f:
        f.write(bytes(data))


def guest_option(name: str, trace_id: int, vcpus: list[tuple[int, int]]) -> tuple[int, bytes]:
    """GUEST (13): name, guest trace id, CPU count, (vcpu, host pid) per CPU."""
    return 13, name.encode() + b"\0" + struct.pack("<QI", trace_id, len(vcpus)) + b"".join(
        struct.pack("<II", v, p) for v, p in vcpus)


def time_shift_option(peer: int, flags: int, cpus: list[list[tuple[int, int, int]]],
                      frac: list[list[int]] | None = None) -> tuple[int, bytes]:
    """TIME_SHIFT (12): peer trace id, flags, CPU count; per CPU the sample count, then every ts, every
    offset, every scaling; then, when given, every CPU's fraction bits."""
    b = struct.pack("<QII", peer, flags, len(cpus))
    for samples in cpus:
        b += struct.pack("<I", len(samples))
        for col in range(3):
            b += b"".join(struct.pack("<q", s[col]) for s in samples)
    for fr in frac or []:
        b += b"".join(struct.pack("<q", x) for x in fr)
    return 12, b


def traceid_option(trace_id: int) -> tuple[int, bytes]:
    return 11, struct.pack("<Q", trace_id)
