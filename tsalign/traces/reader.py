"""Open any supported trace: format detection, then the right reader.

Formats: ``dat`` (trace-cmd .dat v6/v7), ``bundle`` (tsalign capture bundle directory), ``ftrace``
(tracefs text, trace-cmd report), ``perf-script``, ``perf-prof``. ``auto`` looks at the file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import InvalidParameter
from .bundle import Bundle
from .clockcheck import NS_CLOCKS, domain_of
from .manifest import check_data_file
from .table import Chunk, merge_sorted
from .text import TextTrace, detect_text, text_fields
from .trace import Trace, TraceInfo
from .tracedat import MAGIC

__all__ = ["FORMATS", "BundleTrace", "detect", "open_trace"]

FORMATS = ("auto", "dat", "bundle", "ftrace", "perf-script", "perf-prof")
_PERF_DATA = b"PERFILE2"


def detect(path: str) -> str:
    """The format of ``path``; errors say what the file is when it is something tsalign does not read."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "manifest.json")):
            return "bundle"
        raise InvalidParameter("trace", path, "a file, or a tsalign bundle directory holding manifest.json")
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as e:
        raise InvalidParameter("trace file", path, f"a readable file ({e.strerror})") from None
    if head.startswith(MAGIC):
        return "dat"
    if head.startswith(_PERF_DATA):
        raise InvalidParameter("trace file", path, "text from `perf script --ns -i FILE > FILE.txt` (perf.data itself is "
                               "not read: perf script resolves its records)")
    if not head.strip():
        raise InvalidParameter("trace file", path, "events; the file is empty")
    fmt = detect_text(head.decode("utf-8", "replace").splitlines()[:-1] or [head.decode("utf-8", "replace")])
    if fmt is None:
        raise InvalidParameter("trace file", path, "one of: trace-cmd .dat, ftrace text, trace-cmd report, perf script, "
                               "perf-prof trace output, a tsalign bundle (pass --format to say which)")
    return fmt


class BundleTrace(Trace):
    """A tsalign capture bundle: per-CPU ftrace text (merged) or JSON lines."""

    def __init__(self, path: str, clock: str | None = None, strict: bool = True) -> None:
        super().__init__()
        self.bundle = Bundle.open(path)
        c = self.bundle.manifest.get("clock", {})
        domain = str(c.get("domain", ""))
        self.info = TraceInfo(path, "bundle", "", buffer="", meta={"role": self.bundle.role, "bundle_domain": domain,
                                                                  "node": self.bundle.manifest.get("node", {}).get("hostname")})
        self.info.set_clock(clock or str(c.get("trace_clock") or ("perf" if domain == "perf_ns" else "x86-tsc")))
        self.strict = strict

    def raw_chunks(self) -> Iterator[Chunk]:
        data = self.bundle.manifest.get("data", {})
        names = list(data.get("files", []))
        files = [check_data_file(self.bundle.path, n) for n in names]
        if data.get("format") == "jsonl":
            streams = [self._jsonl()]
        elif data.get("format") == "ftrace-text":
            streams = []
            for name, f in zip(names, files):
                t = TextTrace(f, "ftrace", clock=self.info.clock, strict=self.strict)
                t.events, t.comms = self.events, self.comms
                streams.append(self._forward(t, name))
        else:
            raise InvalidParameter("bundle data format", str(data.get("format")), "ftrace-text or jsonl")
        yield from merge_sorted(streams)

    def _forward(self, t: TextTrace, name: str) -> Iterator[Chunk]:
        read = 0
        for c in t.raw_chunks():
            read += len(c)
            yield c
        for w in t.info.warnings:
            self.warn(w)
        short = self.bundle.check_count(name, read, lenient=not self.strict)
        if short:
            self.warn(short)

    def _jsonl(self) -> Iterator[Chunk]:
        """JSON-lines bundles (small: the micro-VM's guest side), parsed by :meth:`Bundle.records`."""
        recs = sorted(self.bundle.records(), key=lambda r: r.ts)
        if recs:
            yield Chunk(np.array([r.ts for r in recs], dtype=np.uint64), np.array([r.cpu for r in recs], dtype=np.int32),
                        np.array([r.pid for r in recs], dtype=np.int32), self.events.codes(r.event for r in recs),
                        self.comms.codes(r.comm for r in recs), [r.payload for r in recs])

    def fields(self, chunk: Chunk, event: str, names: list[str] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        return text_fields(self, chunk, event, names)


def open_trace(path: str, fmt: str = "auto", clock: str | None = None, buffer: str | None = None,
               strict: bool = True, block_bytes: int | None = None) -> Trace:
    """Open ``path`` (``-`` = stdin text) with the reader for ``fmt``."""
    if fmt not in FORMATS:
        raise InvalidParameter("--format", fmt, "one of " + ", ".join(FORMATS))
    if clock is not None and domain_of(clock) == "unknown":
        raise InvalidParameter("--clock", clock, "a trace clock: x86-tsc, counter, uptime or one in ns ("
                               + ", ".join(sorted(NS_CLOCKS)) + ")")
    stream = None
    if path == "-":
        import sys

        text = sys.stdin.read()
        stream = io.StringIO(text)
        if fmt == "auto":
            fmt = detect_text(text.splitlines()[:200]) or ""
            if not fmt:
                raise InvalidParameter("stdin", "-", "text trace lines (ftrace, perf script or perf-prof)")
    elif fmt == "auto":
        fmt = detect(path)
    if fmt == "dat":
        from .datreader import DEFAULT_BLOCK, DatTrace

        return DatTrace(path, buffer, clock, block_bytes or DEFAULT_BLOCK, strict)
    if fmt == "bundle":
        return BundleTrace(path, clock, strict)
    return TextTrace(path, fmt, clock, buffer, strict, stream)
