"""trace-cmd ``.dat`` files (format v6 and v7), read natively: metadata, then per-CPU ring-buffer pages.

Metadata: header_page/header_event, ftrace and event formats, saved cmdlines, options (buffers with
their clocks, CPUSTAT, TRACECLOCK, UNAME, TSC2NSEC...). Data: every buffer's per-CPU pages, which in v7
may be compressed (zstd or zlib) in chunks. Errors name the file and the byte offset. The layout is that
of trace-cmd.dat.v6(5) and trace-cmd.dat.v7(5).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidParameter
from .eventformat import EventFormats, HeaderPage, parse_header_page

__all__ = ["MAGIC", "BufferInfo", "CpuData", "TraceDat"]

MAGIC = b"\x17\x08\x44tracing"
#: largest uncompressed block or section accepted (trace-cmd writes chunks of a few pages)
MAX_BLOCK = 256 << 20
MAX_CPUS = 8192

# option ids (trace-cmd's enum tracecmd_file_options, the same in v6 and v7)
OPT_DONE, OPT_DATE, OPT_CPUSTAT, OPT_BUFFER, OPT_TRACECLOCK, OPT_UNAME = 0, 1, 2, 3, 4, 5
OPT_OFFSET, OPT_CPUCOUNT, OPT_VERSION, OPT_TRACEID, OPT_TIME_SHIFT, OPT_GUEST, OPT_TSC2NSEC = 7, 8, 9, 11, 12, 13, 14
OPT_HEADER_INFO, OPT_FTRACE_EVENTS, OPT_EVENT_FORMATS, OPT_KALLSYMS, OPT_PRINTK, OPT_CMDLINES = 16, 17, 18, 19, 20, 21
OPT_BUFFER_TEXT = 22
SECTION_COMPRESSED = 1


@dataclass(frozen=True)
class CpuData:
    """One CPU's data: file ``offset`` and ``size`` in bytes (compressed size for compressed buffers)."""

    cpu: int
    offset: int
    size: int


@dataclass
class BufferInfo:
    """One trace buffer (the top instance is named ``""``)."""

    name: str
    clock: str
    page_size: int
    cpus: list[CpuData]
    compressed: bool = False
    cpustat: dict[int, str] = field(default_factory=dict)


class _Cursor:
    """Read little/big-endian integers and strings from a bytes-like object, naming offsets in errors."""

    def __init__(self, data: Any, path: str, pos: int = 0, endian: str = "<", base: int = 0, what: str = "") -> None:
        self.data, self.path, self.pos, self.e, self.base, self.what = data, path, pos, endian, base, what

    def _where(self) -> str:
        return f"{self.path}: offset {self.base + self.pos}" + (f" ({self.what})" if self.what else "")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidParameter("trace.dat", self._where(), f"{n} more bytes; the file is truncated or corrupt")
        b = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return b

    def u16(self) -> int:
        return int(struct.unpack(self.e + "H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(self.e + "I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(self.e + "Q", self.take(8))[0])

    def i64(self) -> int:
        return int(struct.unpack(self.e + "q", self.take(8))[0])

    def cstr(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise InvalidParameter("trace.dat", self._where(), "a NUL-terminated string; the file is truncated")
        s = bytes(self.data[self.pos:end]).decode("utf-8", "replace")
        self.pos = end + 1
        return s


class TraceDat:
    """An opened trace-cmd data file (memory-mapped; closed with :meth:`close` or ``with``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._f = open(path, "rb")  # noqa: SIM115 - kept open for the mmap, closed in close()
        except OSError as e:
            raise InvalidParameter("trace file", path, f"a readable file ({e.strerror})") from None
        size = os.fstat(self._f.fileno()).st_size
        if size < 16:
            self._f.close()
            raise InvalidParameter("trace.dat", path, "a trace-cmd data file; it is shorter than its header")
        self.map = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        self.file_size = size
        self.header_page = HeaderPage()
        self.header_event = ""
        self.formats = EventFormats()
        self.cmdlines: dict[int, str] = {}
        self.buffers: list[BufferInfo] = []
        self.options: dict[str, Any] = {"cpustat": {}}
        self.compression = ("none", "")
        try:
            self._parse()
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        try:
            self.map.close()
        finally:
            self._f.close()

    def __enter__(self) -> TraceDat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- header
    def _parse(self) -> None:
        c = _Cursor(self.map, self.path, what="initial format")
        if c.take(10) != MAGIC:
            raise InvalidParameter("trace.dat", self.path, "a trace-cmd data file (magic 17 08 44 'tracing' missing)")
        ver = c.cstr()
        if ver not in ("6", "7"):
            raise InvalidParameter("trace.dat version", f"{self.path}: {ver!r}", "file format 6 or 7")
        self.version = int(ver)
        endian = c.take(1)[0]
        self.endian = ">" if endian else "<"
        self.long_size = c.take(1)[0]
        c.e = self.endian
        self.page_size = c.u32()
        _check_page_size(self.page_size, f"{self.path}: page size {self.page_size} (byte 14)")
        if self.version == 6:
            self._parse_v6(c)
        else:
            name, cver = c.cstr(), c.cstr()
            self.compression = (name, cver)
            if name not in ("none", "zstd", "zlib"):
                raise InvalidParameter("trace.dat compression", f"{self.path}: {name}", "none, zstd or zlib")
            first = c.u64()
            self._parse_v7_options(first)

    def _headers(self, c: _Cursor) -> None:
        c.what = "header_page"
        if c.take(12) != b"header_page\0":
            raise InvalidParameter("trace.dat", c._where(), "the string 'header_page'")
        text = c.take(c.u64()).decode("utf-8", "replace")
        self.header_page = parse_header_page(text, f"{self.path}: header_page")
        hp = self.header_page
        # the page walk reads the timestamp at 0 and the commit word at 8 (ring_buffer.c's buffer_data_page)
        if hp.timestamp_offset != 0 or hp.commit_offset != 8 or hp.commit_size not in (4, 8) \
                or hp.data_offset != 8 + hp.commit_size:
            raise InvalidParameter("trace.dat", f"{self.path}: header_page (timestamp at {hp.timestamp_offset}, commit at "
                                   f"{hp.commit_offset} size {hp.commit_size}, data at {hp.data_offset})",
                                   "the kernel's page header: timestamp at 0, commit at 8 of size 4 or 8, data right after it")
        c.what = "header_event"
        if c.take(13) != b"header_event\0":
            raise InvalidParameter("trace.dat", c._where(), "the string 'header_event'")
        self.header_event = c.take(c.u64()).decode("utf-8", "replace")

    def _ftrace_formats(self, c: _Cursor) -> None:
        c.what = "ftrace event formats"
        for _ in range(c.u32()):
            self._add_format(c.take(c.u64()), "ftrace", c)

    def _event_formats(self, c: _Cursor) -> None:
        c.what = "event formats"
        for _ in range(c.u32()):
            system = c.cstr()
            for _ in range(c.u32()):
                self._add_format(c.take(c.u64()), system, c)

    def _add_format(self, raw: bytes, system: str, c: _Cursor) -> None:
        self.formats.add(raw.decode("utf-8", "replace"), system, f"{self.path}: offset {c.base + c.pos} ({system} format)")

    def _cmdlines(self, c: _Cursor) -> None:
        c.what = "saved cmdlines"
        for line in c.take(c.u64()).decode("utf-8", "replace").splitlines():
            pid, _, comm = line.strip().partition(" ")
            if pid.isdigit():
                self.cmdlines[int(pid)] = comm

    def _parse_v6(self, c: _Cursor) -> None:
        self._headers(c)
        self._ftrace_formats(c)
        self._event_formats(c)
        c.what = "kallsyms"
        c.take(c.u32())
        c.what = "printk formats"
        c.take(c.u32())
        self._cmdlines(c)
        c.what = "cpu count"
        ncpus = c.u32()
        top_clock = "local"
        buffers: list[tuple[str, int]] = []
        while True:
            c.what = "section marker"
            tag = c.take(10)
            if tag == b"options  \0":
                while True:
                    c.what = "option"
                    oid = c.u16()
                    if oid == OPT_DONE:
                        break
                    data = c.take(c.u32())
                    if oid == OPT_BUFFER:  # u64 offset of the buffer's flyrecord table, name
                        off = struct.unpack(self.endian + "Q", data[:8])[0]
                        buffers.append((data[8:].split(b"\0")[0].decode("utf-8", "replace"), off))
                    else:
                        self._option(oid, data)
                continue
            if tag == b"latency  \0":
                raise InvalidParameter("trace.dat", self.path, "flyrecord data (latency-tracer text files are not read)")
            if tag != b"flyrecord\0":
                raise InvalidParameter("trace.dat", c._where(), f"'options', 'latency' or 'flyrecord', got {tag!r}")
            break
        top_clock = _selected_clock(self.options.get("traceclock", "")) or top_clock
        self.buffers.append(BufferInfo("", top_clock, self.page_size, self._cpu_table(c, ncpus)))
        for name, off in buffers:
            bc = _Cursor(self.map, self.path, off, self.endian, what=f"buffer {name!r}")
            if bc.take(10) != b"flyrecord\0":
                raise InvalidParameter("trace.dat", bc._where(), "the string 'flyrecord' starting the buffer's CPU table")
            self.buffers.append(BufferInfo(name, top_clock, self.page_size, self._cpu_table(bc, ncpus)))
        self._attach_cpustat()

    def _cpu_table(self, c: _Cursor, ncpus: int) -> list[CpuData]:
        self._check_cpu_count(ncpus, "")
        return self._checked_cpus([CpuData(cpu, c.u64(), c.u64()) for cpu in range(ncpus)])

    def _check_cpu_count(self, n: int, buffer: str) -> None:
        if n > MAX_CPUS:  # before the table is read: a count from a corrupt file must not drive the loop
            raise InvalidParameter("trace.dat", f"{self.path}: buffer {buffer[:64]!r} cpu count {n}", f"at most {MAX_CPUS} CPUs")

    def _checked_cpus(self, cpus: list[CpuData]) -> list[CpuData]:
        """Each CPU once, its data inside the file, no two CPUs sharing bytes (else one CPU's events are read twice)."""
        seen: set[int] = set()
        for c in cpus:
            if c.offset + c.size > self.file_size:
                raise InvalidParameter("trace.dat", f"{self.path}: CPU {c.cpu} data at {c.offset}+{c.size}",
                                       f"data inside the file ({self.file_size} bytes); the file is truncated")
            if c.cpu in seen:
                raise InvalidParameter("trace.dat", f"{self.path}: CPU {c.cpu}", "each CPU listed once in a buffer")
            seen.add(c.cpu)
        spans = sorted((c.offset, c.offset + c.size, c.cpu) for c in cpus if c.size)
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise InvalidParameter("trace.dat", f"{self.path}: CPU {b} data at {start}",
                                       f"data of its own; it overlaps CPU {a}'s, which ends at {end}")
        return cpus

    # ---------------------------------------------------------------- v7
    def _section(self, off: int, what: str) -> tuple[int, int, bytes | None, int]:
        """Section at ``off`` -> (id, flags, data (uncompressed) or None for a buffer, data offset)."""
        c = _Cursor(self.map, self.path, off, self.endian, what=f"{what} section header")
        sid, flags, _sdesc, size = c.u16(), c.u16(), c.u32(), c.u64()
        start = c.pos
        if start + size > self.file_size:
            raise InvalidParameter("trace.dat", f"{self.path}: offset {off} ({what})",
                                   f"a section of {size} bytes inside the file; the file is truncated")
        if flags & SECTION_COMPRESSED and what != "buffer":
            csize, usize = c.u32(), c.u32()
            return sid, flags, self.decompress(c.take(csize), usize, f"{what} section at offset {off}"), start
        return sid, flags, (None if what == "buffer" else bytes(self.map[start:start + size])), start

    def decompress(self, data: bytes, usize: int, where: str) -> bytes:
        """Uncompress one block with the file's algorithm; the size must match what the file says."""
        algo = self.compression[0]
        if usize > MAX_BLOCK:
            raise InvalidParameter("trace.dat", f"{self.path}: {where}",
                                   f"a compressed block of at most {MAX_BLOCK >> 20} MiB uncompressed (the file says {usize})")
        try:
            if algo == "zstd":
                import zstandard

                out = zstandard.ZstdDecompressor().decompress(data, max_output_size=usize)
            elif algo == "zlib":  # never more than the file says (a small block must not inflate to gigabytes)
                out = zlib.decompressobj().decompress(data, usize + 1)
            else:
                raise InvalidParameter("trace.dat", f"{self.path}: {where}", "no compressed sections (file says compression none)")
        except InvalidParameter:
            raise
        except Exception as e:  # noqa: BLE001 - zstandard.ZstdError, zlib.error: any decoder failure is corruption
            raise InvalidParameter("trace.dat", f"{self.path}: {where}", f"valid {algo} data ({e}); the file is corrupt") from None
        if len(out) != usize:
            raise InvalidParameter("trace.dat", f"{self.path}: {where}",
                                   f"{usize} bytes after {algo} decompression, got {len(out)}; the file is corrupt")
        return out

    def _parse_v7_options(self, first: int) -> None:
        off = first
        seen: set[int] = set()
        ncpus = 0
        while off:
            if off in seen:
                raise InvalidParameter("trace.dat", f"{self.path}: offset {off}", "options sections without a loop")
            seen.add(off)
            sid, _flags, data, _ = self._section(off, "options")
            if sid != 0 or data is None:
                raise InvalidParameter("trace.dat", f"{self.path}: offset {off}", f"an options section (id 0), got id {sid}")
            c = _Cursor(data, self.path, 0, self.endian, base=off, what="options")
            off = 0
            while c.pos < len(data):
                oid, size = c.u16(), c.u32()
                body = c.take(size)
                b = _Cursor(body, self.path, 0, self.endian, what=f"option {oid}")
                if oid == OPT_DONE:
                    off = b.u64() if size >= 8 else 0
                    break
                if oid == OPT_HEADER_INFO:
                    self._sub(b.u64(), "header info", self._headers)
                elif oid == OPT_FTRACE_EVENTS:
                    self._sub(b.u64(), "ftrace events", self._ftrace_formats)
                elif oid == OPT_EVENT_FORMATS:
                    self._sub(b.u64(), "event formats", self._event_formats)
                elif oid == OPT_CMDLINES:
                    self._sub(b.u64(), "cmdlines", self._cmdlines)
                elif oid == OPT_BUFFER:
                    boff, name, clock, psize, n = b.u64(), b.cstr(), b.cstr(), b.u32(), b.u32()
                    _check_page_size(psize, f"{self.path}: buffer {name[:64]!r} page size {psize}")
                    self._check_cpu_count(n, name)
                    cpus = self._checked_cpus([CpuData(b.u32(), b.u64(), b.u64()) for _ in range(n)])
                    sid, flags, _, _ = self._section(boff, "buffer")
                    self.buffers.append(BufferInfo(name, clock, psize, cpus, bool(flags & SECTION_COMPRESSED)))
                elif oid == OPT_CPUCOUNT:
                    ncpus = b.u32()
                elif oid == OPT_BUFFER_TEXT:
                    raise InvalidParameter("trace.dat", self.path, "flyrecord data (latency-tracer text files are not read)")
                else:
                    self._option(oid, body)
        self.options["cpu_count"] = ncpus
        if not self.formats:
            raise InvalidParameter("trace.dat", self.path, "event formats (no EVENT_FORMATS section was found)")
        self._attach_cpustat()

    def _sub(self, off: int, what: str, fn: Any) -> None:
        _sid, _flags, data, start = self._section(off, what)
        fn(_Cursor(data, self.path, 0, self.endian, base=start, what=what))

    # ---------------------------------------------------------------- options
    def _option(self, oid: int, data: bytes) -> None:
        text = data.split(b"\0")[0].decode("utf-8", "replace")
        if oid == OPT_CPUSTAT:
            self.options.setdefault("cpustat_raw", []).append(text)
        elif oid == OPT_TRACECLOCK:
            self.options["traceclock"] = text.strip()
        elif oid == OPT_UNAME:
            self.options["uname"] = text
        elif oid == OPT_VERSION:
            self.options["version"] = text
        elif oid == OPT_DATE:
            self.options["date"] = text
        elif oid == OPT_OFFSET:
            self.options["offset"] = text
        elif oid == OPT_TRACEID and len(data) >= 8:
            self.options["trace_id"] = struct.unpack(self.endian + "Q", data[:8])[0]
        elif oid == OPT_TSC2NSEC and len(data) >= 16:
            mult, shift, offset = struct.unpack(self.endian + "IIQ", data[:16])
            self.options["tsc2nsec"] = {"mult": mult, "shift": shift, "offset": offset}
        elif oid == OPT_CPUCOUNT and len(data) >= 4:
            self.options["cpu_count"] = struct.unpack(self.endian + "I", data[:4])[0]
        elif oid == OPT_GUEST:
            self.options.setdefault("guests", []).append(self._guest_option(data))
        elif oid == OPT_TIME_SHIFT:
            self.options["time_shift"] = self._time_shift_option(data)

    def _guest_option(self, data: bytes) -> dict[str, Any]:
        """GUEST (a host file of ``trace-cmd record -A``): name, the guest's trace id, and per guest CPU
        the vCPU and the host thread that ran it."""
        c = _Cursor(data, self.path, 0, self.endian, what="GUEST option")
        name = c.cstr()
        trace_id, ncpu = c.u64(), c.u32()
        if ncpu > min(MAX_CPUS, (len(data) - c.pos) // 8):
            raise InvalidParameter("trace.dat", c._where(), f"a GUEST option whose CPU count fits it (got {ncpu})")
        return {"name": name, "trace_id": trace_id, "vcpus": [(c.u32(), c.u32()) for _ in range(ncpu)]}

    def _time_shift_option(self, data: bytes) -> dict[str, Any]:
        """TIME_SHIFT (a guest file of ``trace-cmd record -A``): the host's trace id, flags, and per
        guest CPU the samples (guest ts, offset, scaling) and, from newer writers, fraction bits;
        host ts = ((guest ts * scaling) >> frac) + offset."""
        c = _Cursor(data, self.path, 0, self.endian, what="TIME_SHIFT option")
        peer, flags, ncpu = c.u64(), c.u32(), c.u32()
        if ncpu > min(MAX_CPUS, (len(data) - c.pos) // 4):
            raise InvalidParameter("trace.dat", c._where(), f"a TIME_SHIFT option whose CPU count fits it (got {ncpu})")
        cpus = []
        for _ in range(ncpu):
            n = c.u32()
            if n > (len(data) - c.pos) // 24:
                raise InvalidParameter("trace.dat", c._where(), f"a TIME_SHIFT sample count that fits the option (got {n})")
            cols = [[c.i64() for _ in range(n)] for _ in range(3)]
            cpus.append({"ts": cols[0], "offset": cols[1], "scaling": cols[2], "frac": [0] * n})
        if c.pos < len(data):  # fraction bits, per CPU, as many as its samples
            for cpu in cpus:
                if (len(data) - c.pos) < 8 * len(cpu["ts"]):
                    raise InvalidParameter("trace.dat", c._where(), "TIME_SHIFT fraction bits for every sample")
                cpu["frac"] = [c.i64() for _ in cpu["ts"]]
        return {"peer": peer, "flags": flags, "cpus": cpus}

    def _attach_cpustat(self) -> None:
        """CPUSTAT options come in file order: the top buffer's, then 'Buffer: NAME' and that buffer's."""
        current = ""
        by_name = {b.name: b for b in self.buffers}
        for text in self.options.pop("cpustat_raw", []):
            if text.strip().startswith("Buffer:"):
                current = text.strip().split(":", 1)[1].strip()
                continue
            first = text.splitlines()[0] if text else ""
            if first.startswith("CPU:") and current in by_name:
                try:
                    by_name[current].cpustat[int(first.split(":")[1])] = text
                except ValueError:
                    pass

    # ---------------------------------------------------------------- data
    def buffer(self, name: str | None) -> BufferInfo:
        """The buffer called ``name``; ``None`` picks the only buffer with data."""
        if name is None:
            with_data = [b for b in self.buffers if any(c.size for c in b.cpus)]
            if len(with_data) == 1:
                return with_data[0]
            if not with_data:
                raise InvalidParameter("trace.dat", self.path, "at least one buffer with event data (all are empty)")
            names = ", ".join(repr(b.name) for b in with_data)
            raise InvalidParameter("--buffer", "(none)", f"one of the buffers with data: {names}")
        for b in self.buffers:
            if b.name == name:
                return b
        raise InvalidParameter("--buffer", name, "one of " + ", ".join(repr(b.name) for b in self.buffers))

    def cpu_blocks(self, buf: BufferInfo, cpu: CpuData, max_bytes: int) -> Iterator[bytes | memoryview]:
        """Yield the CPU's raw pages in blocks of whole pages (at most ``max_bytes`` unless one chunk is larger)."""
        if cpu.size == 0:
            return
        if not buf.compressed:
            step = max(buf.page_size, max_bytes // buf.page_size * buf.page_size)
            for start in range(cpu.offset, cpu.offset + cpu.size, step):
                yield self.map[start:min(start + step, cpu.offset + cpu.size)]  # a copy: the map can close
            return
        c = _Cursor(self.map, self.path, cpu.offset, self.endian, what=f"buffer {buf.name!r} CPU {cpu.cpu} chunks")
        count = c.u32()
        end = cpu.offset + 4 + cpu.size  # the size trace-cmd records excludes the count
        if count == 0 or count > cpu.size // 9:
            raise InvalidParameter("trace.dat", f"{self.path}: offset {cpu.offset} (CPU {cpu.cpu} chunk count {count})",
                                   f"1 to {cpu.size // 9} compressed chunks for the CPU's {cpu.size} bytes")
        for k in range(count):
            at = c.pos
            csize, usize = c.u32(), c.u32()
            if csize == 0 or c.pos + csize > end:
                raise InvalidParameter("trace.dat", f"{self.path}: offset {at} (CPU {cpu.cpu} chunk {k})",
                                       f"a compressed chunk of 1 to {end - c.pos} bytes inside the CPU's data, found {csize}; "
                                       "the file is truncated or corrupt")
            yield self.decompress(c.take(csize), usize, f"CPU {cpu.cpu} chunk {k} at offset {at}")
        if c.pos != end:  # trace-cmd's size covers the chunks exactly (checked on its v7 zstd files)
            raise InvalidParameter("trace.dat", f"{self.path}: offset {c.pos} (CPU {cpu.cpu} after chunk {count - 1})",
                                   f"{count} chunks filling the CPU's {cpu.size} bytes; {end - c.pos} bytes follow them")


def _check_page_size(size: int, where: str) -> None:
    if not 1024 <= size <= 1 << 20 or size & (size - 1):
        raise InvalidParameter("trace.dat", where, "a ring-buffer page size that is a power of two from 1 KiB to 1 MiB")


def _selected_clock(traceclock: str) -> str:
    """'[local] global x86-tsc' -> 'local'."""
    for word in traceclock.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return ""
