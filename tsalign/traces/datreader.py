"""trace-cmd ``.dat`` -> time-ordered event chunks (per-CPU ring buffers walked, then merged)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import InvalidParameter
from . import clockcheck
from .fields import decode
from .ringbuf import ERRORS, walk_pages
from .table import Chunk, distinct, merge_sorted
from .trace import Trace, TraceInfo
from .tracedat import BufferInfo, CpuData, TraceDat

__all__ = ["DatTrace"]

#: pids below this are looked up in a table (the kernel's pid_max is at most 2^22)
PID_LIMIT = 1 << 22
#: bytes of ring-buffer pages decoded at a time per CPU (memory is a few times this per CPU)
DEFAULT_BLOCK = 8 << 20


class DatTrace(Trace):
    """A trace-cmd data file, one buffer (instance) of it."""

    def __init__(self, path: str, buffer: str | None = None, clock: str | None = None,
                 block_bytes: int = DEFAULT_BLOCK, strict: bool = True) -> None:
        self.strict = strict
        self.dat = TraceDat(path)
        try:
            self.buf: BufferInfo = self.dat.buffer(buffer)
        except Exception:
            self.dat.close()
            raise
        self.block_bytes = block_bytes
        super().__init__()
        labelled = self.buf.clock
        verdict = clockcheck.check_dat_buffer(labelled, self.buf.cpustat)
        self.info = TraceInfo(path, f"trace-cmd-dat-v{self.dat.version}", labelled, "", self.buf.name,
                              meta={"compression": self.dat.compression[0], "uname": self.dat.options.get("uname", ""),
                                    "buffers": [b.name for b in self.dat.buffers], "page_size": self.buf.page_size,
                                    "cpus": [c.cpu for c in self.buf.cpus if c.size]})
        self.info.set_clock(clock or verdict.clock, verdict.warnings if clock is None else [])
        self._lut = np.full(max(self.dat.formats, default=0) + 1, -1, dtype=np.int32)
        for fid in self.dat.formats:
            self._lut[fid] = self.events.code(self.dat.formats.name_of(fid))
        self._comm_of = dict(self.dat.cmdlines)
        self._comm_of.setdefault(0, "<idle>")
        self._pid_comm = np.full(1, -1, dtype=np.int32)  # pid -> comm code (-1: not seen yet), see _comm_codes

    def close(self) -> None:
        self.dat.close()

    def _joined_blocks(self, cpu: CpuData) -> Iterator[bytes | memoryview]:
        """The CPU's pages in blocks of about ``block_bytes`` (small compressed chunks are joined)."""
        parts: list[bytes | memoryview] = []
        have = 0
        for block in self.dat.cpu_blocks(self.buf, cpu, self.block_bytes):
            parts.append(block)
            have += len(block)
            if have >= self.block_bytes:
                yield parts[0] if len(parts) == 1 else b"".join(parts)
                parts, have = [], 0
        if parts:
            yield parts[0] if len(parts) == 1 else b"".join(parts)

    def _comm_codes(self, pid: np.ndarray) -> np.ndarray:
        """Each row's comm code (int32) by its pid: from a table of the pids seen (kept across chunks; a pid is a
        comm of the file's saved cmdlines for the whole trace), the others by their distinct values."""
        if pid.size and 0 <= int(pid.min()) and int(pid.max()) < PID_LIMIT:
            top = int(pid.max())
            if top >= self._pid_comm.shape[0]:
                grown = np.full(max(top + 1, 2 * self._pid_comm.shape[0]), -1, dtype=np.int32)
                grown[:self._pid_comm.shape[0]] = self._pid_comm
                self._pid_comm = grown
            codes = self._pid_comm[pid]
            new = distinct(pid[codes < 0]) if bool((codes < 0).any()) else pid[:0]
            if new.size:
                self._pid_comm[new] = self._named(new)
                codes = self._pid_comm[pid]
            out: np.ndarray = codes
            return out
        uniq, inv = np.unique(pid, return_inverse=True)
        named: np.ndarray = self._named(uniq)[inv]
        return named

    def _named(self, pids: np.ndarray) -> np.ndarray:
        """The comm codes of distinct ``pids`` (int32): their saved cmdlines, ``<...>`` where none."""
        return np.array([self.comms.code(self._comm_of.get(p, "<...>")) for p in pids.tolist()], dtype=np.int32)

    def _cpu_chunks(self, cpu: CpuData) -> Iterator[Chunk]:
        page = self.buf.page_size
        hp = self.dat.header_page
        pos = 0  # uncompressed byte position within this CPU's data
        last_ts = 0
        for block in self._joined_blocks(cpu):
            raw = np.frombuffer(block, dtype=np.uint8)
            where = f"{self.info.path}: buffer {self.buf.name!r} CPU {cpu.cpu}"
            if raw.shape[0] % page:
                raise InvalidParameter("trace.dat", f"{where} byte {pos + raw.shape[0]}",
                                       f"whole {page}-byte pages; the data is truncated")
            npages = raw.shape[0] // page
            cap = raw.shape[0] // 8 + 1
            ts = np.empty(cap, dtype=np.uint64)
            off = np.empty(cap, dtype=np.int64)
            ln = np.empty(cap, dtype=np.int32)
            info = np.zeros((npages, 4), dtype=np.int64)
            n = int(walk_pages(raw, page, hp.data_offset, hp.commit_size, ts, off, ln, info))
            bad = np.nonzero(info[:, 2])[0]
            if bad.size:
                p = int(bad[0])
                raise InvalidParameter("trace.dat", f"{where} page at data byte {pos + p * page} (offset {int(info[p, 3]) - p * page} in the page)",
                                       f"a valid ring-buffer page: {ERRORS.get(int(info[p, 2]), 'corrupt')}")
            self.lost_pages += int(info[:, 1].sum())
            self._empty_pages_with_data(raw, info, page, hp.data_offset, f"{where} data byte {pos}")
            ts, off, ln = ts[:n], off[:n], ln[:n]
            if n:
                if int(ts[0]) < last_ts or (n > 1 and bool(np.any(ts[1:] < ts[:-1]))):
                    self.warn(f"{where}: timestamps go backwards within the CPU's buffer; events were sorted")
                    order = np.argsort(ts, kind="stable")
                    ts, off, ln = ts[order], off[order], ln[order]
                last_ts = int(ts[-1])
            pos += raw.shape[0]
            if not n:
                continue
            typ = raw[off].astype(np.int32) | (raw[off + 1].astype(np.int32) << 8)
            pid = (raw[off + 4].astype(np.uint32) | (raw[off + 5].astype(np.uint32) << 8)
                   | (raw[off + 6].astype(np.uint32) << 16) | (raw[off + 7].astype(np.uint32) << 24)).view(np.int32)
            ev = np.where(typ < self._lut.shape[0], self._lut[np.minimum(typ, self._lut.shape[0] - 1)], -1)
            if bool(np.any(ev < 0)):
                for t in np.unique(typ[ev < 0]).tolist():
                    code = self.events.code(f"unknown:{t}")
                    ev[typ == t] = code
                    self.warn(f"{where}: event type {t} has no format in the file; kept as 'unknown:{t}' with its raw payload")
            yield Chunk(ts, np.full(n, cpu.cpu, dtype=np.int32), pid, ev.astype(np.int32), self._comm_codes(pid),
                        raws=[raw], src=np.zeros(n, dtype=np.int32), off=off, size=ln, type_id=typ)

    def _empty_pages_with_data(self, raw: np.ndarray, info: np.ndarray, page: int, data_off: int, where: str) -> None:
        """A page whose commit says 0 bytes while its data area holds some: events there would vanish unread
        (a corrupt commit word). An error, or with --lenient a warning with the numbers."""
        empty = np.nonzero((info[:, 0] == 0) & (info[:, 2] == 0))[0]
        if not empty.size:
            return
        pages = raw.reshape(-1, page)[empty, data_off:]
        bad = empty[pages.any(axis=1)]
        if not bad.size:
            return
        what = (f"{bad.size} page(s) commit 0 bytes but hold data (first at page {int(bad[0])}); "
                "their events, if any, are not read")
        if self.strict:
            raise InvalidParameter("trace.dat", where, f"pages whose commit covers their data; {what} (--lenient reads the rest)")
        self.warn(f"{where}: {what}")

    def raw_chunks(self) -> Iterator[Chunk]:
        streams = [self._cpu_chunks(c) for c in self.buf.cpus if c.size]
        yield from merge_sorted(streams)

    def fields(self, chunk: Chunk, event: str, names: list[str] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        code = self.events.index.get(event)
        rows = np.nonzero(chunk.event == code)[0] if code is not None else np.zeros(0, dtype=np.int64)
        fmt = self.dat.formats.by_full_name(event)
        if fmt is None:
            return rows, {}
        assert chunk.src is not None and chunk.off is not None and chunk.size is not None
        return rows, decode(chunk.raws, chunk.src[rows], chunk.off[rows], chunk.size[rows], fmt, names, self.dat.endian)
