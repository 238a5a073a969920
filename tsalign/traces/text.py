"""Text trace formats -> time-ordered event chunks.

- ``ftrace``: tracefs ``trace``/``trace_pipe`` (any trace_clock; with or without the irq-info flags and
  TGID columns) and ``trace-cmd report`` output (optionally prefixed by the instance name, ``-t`` for ns);
- ``perf-script``: ``perf script`` default output (``comm tid[/pid] [cpu] secs.usecs: event: payload``,
  also with ``--ns``);
- ``perf-prof``: perf-prof ``trace`` output (``YYYY-MM-DD HH:MM:SS.uuuuuu comm pid flags [cpu] ts: event: ...``).

Timestamps are parsed from their digits (never through a float). ``secs.frac`` becomes ``secs*1e9 +
frac`` (ns for ns clocks; for a counter clock printed that way, as trace-cmd report does for x86-tsc,
the same integer is the raw counter). Fewer than 9 fraction digits set the trace's ``resolution``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from ..errors import InvalidParameter
from .ftrace_text import LINE, event_name, split_ts
from .ftracescan import scan
from .stamps import scan_stamps
from .table import Chunk
from .trace import Trace, TraceInfo

__all__ = ["PATTERNS", "TextTrace", "detect_text", "parse_kv", "text_fields"]

PATTERNS: dict[str, re.Pattern[str]] = {
    "ftrace": LINE,
    "perf-script": re.compile(
        r"^\s*(?P<comm>.*?)\s+(?P<pid>-?\d{1,10})(?:/(?P<tid>-?\d{1,10}))?\s+\[(?P<cpu>\d{1,5})\]\s+(?P<ts>\d{1,11}\.\d{1,12}):\s+"
        r"(?:(?P<period>\d+)\s+)?(?P<event>[\w:.-]+):\s?(?P<payload>.*)$", re.ASCII),
    "perf-prof": re.compile(
        r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s+(?P<comm>.*?)\s+(?P<pid>\d{1,10})\s+(?P<flags>\S{4})\s+"
        r"\[(?P<cpu>\d{1,5})\]\s+(?P<ts>\d{1,20}|\d{1,11}\.\d{1,12}):\s+(?P<event>[\w:.-]+):\s?(?P<payload>.*)$", re.ASCII),
}
#: longest text line read (a longer one is an error naming its line, never read whole)
MAX_LINE = 1 << 20
#: lines that are not events and not errors
_SKIP = re.compile(r"^\s*(?:#|$|cpus=\d+|version\s*=|CPU:?\s*\d+\s*\[LOST|CPU \d+ is empty|TSC conversion is not supported|\s*=>)")
#: a value runs to the next `` key=`` (or sched_switch's `` ==> ``): comms hold spaces ("CPU 1/TCG")
_KV = re.compile(r"(\w+)=(.*?)(?=\s+(?:==>\s+)?\w+=|\s*$)")

CHUNK_LINES = 1 << 16
#: characters of text parsed at a time by the block reader
BLOCK_CHARS = 8 << 20


def _re2(p: re.Pattern[str]) -> str:
    """``p`` for pyarrow's RE2 kernels, matching one line of a block with its newline: ftrace's separators that
    need a lookahead (a syscall's ``(`` or ``->`` after its name) left out, so such lines go to the line reader."""
    text = p.pattern.replace(r"(?::\s?|(?=\()|\s(?=->))", r":\s?")
    assert "(?=" not in text and text.endswith("$")
    return text[:-1] + r"\n?$"


#: the line patterns for whole blocks (RE2: one pyarrow kernel call per block)
_BLOCK_PATTERNS = {k: _re2(p) for k, p in PATTERNS.items()}
#: ftrace's pattern without its optional instance prefix, TGID column and irq-flags column (RE2 extracts with it in
#: about half the time), and a probe for text any of those could match: a block where no line holds the probe's
#: text has every one of them empty on every line, so both patterns give the same groups there
_FTRACE_BARE = (r"^\s*(?P<comm>.*?)-(?P<pid>\d{1,10})\s+\[(?P<cpu>\d{1,5})\]\s+(?P<ts>\d{1,20}|\d{1,11}\.\d{1,12}):\s+"
                r"(?P<event>[\w:.-]+):\s?(?P<payload>.*)\n?$")
_FTRACE_OPTIONAL = r"^(?:[\w.-]+):\s|-\d{1,10}\s+\(|\]\s+[^\s\d][^\s]{2,5}\s"
_BLOCK_SKIP = _SKIP.pattern
#: what is trimmed from a comm and a payload (ASCII blanks, in both readers)
_BLANKS = " \t\n\r\f\v"
#: RE2's ``\s`` is narrower than Python's (no vertical tab): a block holding one, or a NUL, goes line by line
_BLOCK_ODD = (b"\0", b"\v")


@dataclass
class _LineState:
    """What reading carries from block to block."""

    resolution: int = 1
    last: int = -1
    decided: bool = False
    other_buffers: set[str] = field(default_factory=set)


def parse_kv(payload: str) -> dict[str, str]:
    """``a=1 b=x`` -> {'a': '1', 'b': 'x'} (the key=value fields most print formats use)."""
    return dict(_KV.findall(payload))


def detect_text(lines: Iterable[str]) -> str | None:
    """Which text format the first event lines are in (perf-prof before ftrace before perf script)."""
    votes = {k: 0 for k in PATTERNS}
    seen = 0
    for line in lines:
        if _SKIP.match(line):
            continue
        seen += 1
        for name in ("perf-prof", "ftrace", "perf-script"):
            if PATTERNS[name].match(line):
                votes[name] += 1
                break
        if seen >= 50:
            break
    best = max(votes, key=lambda k: votes[k])
    return best if votes[best] else None


class TextTrace(Trace):
    """One text trace file in ``fmt``; ``strict`` makes an unparsable line an error naming file:line."""

    def __init__(self, path: str, fmt: str, clock: str | None = None, buffer: str | None = None,
                 strict: bool = True, stream: IO[str] | None = None) -> None:
        super().__init__()
        if fmt not in PATTERNS:
            raise InvalidParameter("--format", fmt, "one of " + ", ".join(PATTERNS))
        self.fmt, self.strict, self.stream = fmt, strict, stream
        self.buffer = buffer
        self.info = TraceInfo(path, fmt, clock or "", buffer=buffer or "")
        self._clock_given = clock
        if clock:
            self.info.set_clock(clock)

    def _lines(self) -> Iterator[str]:
        if self.stream is not None:
            yield from self.stream
            return
        with self._open() as f:
            n = 0
            while line := f.readline(MAX_LINE + 1):
                n += 1
                yield self._checked(n, line)

    def _open(self) -> IO[str]:
        try:
            return open(self.info.path, encoding="utf-8", errors="replace")
        except OSError as e:
            raise InvalidParameter("trace file", self.info.path, f"a readable file ({e.strerror})") from None

    def _decide_clock(self, dotted: bool, first: int) -> None:
        if self._clock_given:
            return
        if self.fmt == "perf-script":
            clock, why = "perf", "perf script prints perf clock ns (pass --clock if perf record used -k)"
        elif dotted:
            clock, why = "local", ("secs.fraction timestamps read as ns; if the trace used x86-tsc (trace-cmd "
                                   "report prints counters that way too) pass --clock x86-tsc")
        elif first > 10**11:
            clock, why = "x86-tsc", "integer timestamps this large are TSC cycles (the x86-tsc trace clock)"
        else:
            clock, why = "counter", "small integer timestamps read as the 'counter' trace clock"
        self.info.set_clock(clock)
        self.info.note(f"{self.info.path}: clock not in the file; {why}")

    def raw_chunks(self) -> Iterator[Chunk]:
        if self.stream is None and self.buffer is None:
            yield from self._block_chunks()
        else:
            yield from self._line_chunks(self._lines())

    def _blocks(self) -> Iterator[tuple[int, bytes]]:
        """(number of the block's first line, bytes of whole lines) of about :data:`BLOCK_CHARS` each."""
        try:
            f = open(self.info.path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise InvalidParameter("trace file", self.info.path, f"a readable file ({e.strerror})") from None
        with f:
            line = 1
            while block := f.read(BLOCK_CHARS):
                if not block.endswith(b"\n"):
                    block += f.readline(MAX_LINE + 1)
                yield line, block
                line += block.count(b"\n")

    def _block_chunks(self) -> Iterator[Chunk]:
        """The whole file read in blocks, each parsed by pyarrow's regex kernel in one call; a block with anything
        unusual (a line that is neither an event nor skippable, a NUL, a long line, a syscall event named without
        a colon, invalid UTF-8, a value out of range) is parsed line by line instead, with that path's errors and
        warnings."""
        state = _LineState()
        for first, block in self._blocks():
            chunk = self._arrow_chunk(block, state)
            if chunk is None:
                yield from self._line_chunks(self._numbered(block.decode("utf-8", "replace"), first), state)
            elif len(chunk):
                yield chunk
        self._finish(state)

    def _numbered(self, block: str, first: int) -> Iterator[tuple[int, str]]:
        for k, line in enumerate(block.splitlines(keepends=True)):
            yield first + k, self._checked(first + k, line)

    def _checked(self, n: int, line: str) -> str:
        """``line`` (number ``n``), unless it is too long or holds a NUL (errors naming it)."""
        if len(line) > MAX_LINE:
            raise InvalidParameter("trace line", f"{self.info.path}:{n}", f"a line of at most {MAX_LINE >> 10} KiB "
                                   f"(this one is longer; it starts {line[:60]!r})")
        if "\0" in line:
            raise InvalidParameter("trace line", f"{self.info.path}:{n}",
                                   "text without NUL bytes (is this a binary file, or a text trace with a hole?)")
        return line

    def _arrow_chunk(self, block: bytes, state: _LineState) -> Chunk | None:
        """The events of ``block`` (whole lines) as one chunk, every column made by pyarrow kernels; None when the
        block needs the line reader (see :meth:`_block_chunks`)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if any(b in block for b in _BLOCK_ODD):  # (memchr: a regex search cost 50 ms per 8 MB)
            return None
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return None
        raw = np.frombuffer(block, dtype=np.uint8)
        starts = np.concatenate([[0], np.flatnonzero(raw == 10) + 1]).astype(np.int64)
        if starts[-1] != len(block):
            starts = np.append(starts, len(block))
        if len(starts) < 2 or int(np.diff(starts).max()) > MAX_LINE:
            return None
        lines = pa.StringArray.from_buffers(len(starts) - 1, pa.py_buffer(starts.astype(np.int32)), pa.py_buffer(block))
        pattern = _BLOCK_PATTERNS[self.fmt]
        if self.fmt == "ftrace" and not pc.any(pc.match_substring_regex(lines, _FTRACE_OPTIONAL)).as_py():
            pattern = _FTRACE_BARE
        rows = scan(block, starts) if pattern == _FTRACE_BARE else None  # (that pattern, compiled)
        if rows is None:
            rows = pc.extract_regex(lines, pattern)
        ok = rows.is_valid()
        if not pc.all(ok).as_py():
            if not pc.all(pc.match_substring_regex(lines.filter(pc.invert(ok)), _BLOCK_SKIP)).as_py():
                return None
            rows = rows.filter(ok)
        if not len(rows):
            z = np.zeros(0, dtype=np.int32)
            return Chunk(np.zeros(0, dtype=np.uint64), z, z, z, z, [])
        col = {f.name: rows.field(i) for i, f in enumerate(rows.type)}
        ts, resolution = self._arrow_stamps(col["ts"])
        if ts is None:
            return None
        pid_text = pc.if_else(pc.equal(col["tid"], ""), col["pid"], col["tid"]) if "tid" in col else col["pid"]
        pid = pc.cast(pid_text, pa.int64()).to_numpy()
        if int(pid.max()) >= 1 << 31:
            return None
        tgid = None
        if "tgid" in col:  # ftrace's TGID column: digits, or dashes where the kernel had none saved
            tgid = pc.cast(pc.if_else(pc.utf8_is_digit(col["tgid"]), col["tgid"], "-1"), pa.int64()).to_numpy()
            if int(tgid.max()) >= 1 << 31:
                return None
            tgid = tgid.astype(np.int32)
        elif pattern == _FTRACE_BARE:  # (the full pattern's TGID group, empty on every line: dashes)
            tgid = np.full(len(rows), -1, dtype=np.int32)
        state.resolution = max(state.resolution, resolution)
        if not state.decided:
            self._decide_clock("." in col["ts"][0].as_py(), int(ts[0]))
            state.decided = True
        cols = [pc.cast(col["cpu"], pa.int32()).to_numpy(), pid.astype(np.int32),
                self._codes(self.events, col["event"]), self._codes(self.comms, pc.utf8_trim(col["comm"], _BLANKS))]
        payload = pc.utf8_trim(col["payload"], _BLANKS)
        if tgid is not None:
            cols.append(tgid)
        if int(ts[0]) < state.last or bool(np.any(ts[1:] < ts[:-1])):
            self.warn(f"{self.info.path}: lines are not in timestamp order; events were sorted by timestamp")
            order = np.argsort(ts, kind="stable")
            ts, cols, payload = ts[order], [c[order] for c in cols], payload.take(pa.array(order))
        state.last = int(ts[-1])
        return Chunk(ts, cols[0], cols[1], cols[2], cols[3], payload if self.arrow_payloads else payload.to_pylist(),
                     tgid=cols[4] if tgid is not None else None)

    @staticmethod
    def _arrow_stamps(text: Any) -> tuple[np.ndarray | None, int]:
        """Timestamps (``secs.frac`` or integers, as :func:`split_ts` reads them, exactly) -> (uint64, resolution);
        (None, 0) when one is out of range (the line reader names it). One compiled pass (tsalign.traces.stamps)
        where numba is installed; the same rules in pyarrow's kernels otherwise."""
        import pyarrow as pa
        import pyarrow.compute as pc

        st = scan_stamps(text)
        if st is not None:
            if not st.dotted.any():
                return (None, 0) if st.max_secs_len > 20 or st.secs_overflow else (st.ns, 1)
            fl = st.frac_len[st.dotted]
            if int(fl.max()) > 9 or st.max_secs_len > 11 or st.ns_overflow:
                return None, 0
            return st.ns, 10 ** (9 - int(fl.min()))
        parts = pc.extract_regex(text, r"^(?P<s>\d+)(?:\.(?P<f>\d*))?$")
        secs, frac = parts.field(0), parts.field(1)
        dotted = pc.match_substring(text, ".").to_numpy(zero_copy_only=False)
        if not dotted.any():
            if int(pc.max(pc.utf8_length(secs)).as_py()) > 20:
                return None, 0
            try:
                return pc.cast(secs, pa.uint64()).to_numpy(), 1
            except pa.ArrowInvalid:  # beyond 2^64
                return None, 0
        flen = pc.utf8_length(frac).to_numpy()
        if int(flen[dotted].max()) > 9 or int(pc.max(pc.utf8_length(secs)).as_py()) > 11:
            return None, 0
        s = pc.cast(secs, pa.uint64()).to_numpy()
        f = pc.cast(pc.if_else(pc.equal(frac, ""), "0", pc.utf8_rpad(frac, 9, "0")), pa.uint64()).to_numpy()
        if bool(np.any(dotted & (s > np.uint64(18446744072)))):  # secs*1e9 + frac might pass 2^64: exact check
            big = np.nonzero(dotted & (s > np.uint64(18446744072)))[0]
            if any(int(s[i]) * 10**9 + int(f[i]) >= 1 << 64 for i in big.tolist()):
                return None, 0
        ts = np.where(dotted, s * np.uint64(10**9) + f, s)
        return ts, 10 ** (9 - int(flen[dotted].min()))

    @staticmethod
    def _codes(vocab: Any, values: Any) -> np.ndarray:
        """Codes into ``vocab`` (a :class:`tsalign.traces.table.Vocab`) of a pyarrow string column."""
        enc = values.dictionary_encode()
        lut = np.asarray(vocab.codes(enc.dictionary.to_pylist()), dtype=np.int32)
        out: np.ndarray = lut[enc.indices.to_numpy(zero_copy_only=False)]
        return out

    def _finish(self, state: _LineState) -> None:
        if not state.decided and state.other_buffers:  # decided: set by the first line kept
            raise InvalidParameter("--buffer", self.buffer, "an instance buffer of this file: "
                                   + ", ".join(repr(b) for b in sorted(state.other_buffers)[:20]) + " ('' = lines with no prefix)")
        self.info.resolution = state.resolution
        if state.resolution > 1:
            self.info.note(f"{self.info.path}: timestamps printed with {9 - len(str(state.resolution)) + 1} fraction "
                           f"digits: resolution {state.resolution} units (perf script --ns / trace-cmd report -t print all 9)")

    def _line_chunks(self, numbered: Iterable[str] | Iterable[tuple[int, str]], state: _LineState | None = None
                     ) -> Iterator[Chunk]:
        """Line by line (``numbered``: lines, or (number, line) pairs); ``state`` carried over blocks (None: the
        whole trace, finished here)."""
        own = state is None
        st = state or _LineState()
        pat = PATTERNS[self.fmt]
        rows: list[tuple[int, int, int, int, int, str, int]] = []
        has_tgid = "tgid" in pat.groupindex
        ecode, ccode = self.events.code, self.comms.code
        for k, item in enumerate(numbered, 1):
            n, line = item if isinstance(item, tuple) else (k, item)
            m = pat.match(line)
            if m is None:
                if _SKIP.match(line) or not line.strip():
                    continue
                where = f"{self.info.path}:{n}"
                if self.strict:
                    raise InvalidParameter("trace line", where, f"a {self.fmt} event line, got {line.strip()[:100]!r} "
                                           "(pass --format if the format was guessed wrong, --lenient to skip such lines)")
                self.warn(f"{where}: skipped a line that is not a {self.fmt} event: {line.strip()[:80]!r}")
                continue
            if self.buffer is not None and (m.groupdict().get("buf") or "") != self.buffer:
                st.other_buffers.add(m.groupdict().get("buf") or "")
                continue
            ts, res = split_ts(m.group("ts"), f"{self.info.path}:{n}")
            if not st.decided:
                self._decide_clock("." in m.group("ts"), ts)
                st.decided = True
            st.resolution = max(st.resolution, res)
            pid = int(m.group("tid") if m.groupdict().get("tid") else m.group("pid"))
            if pid >= 1 << 31:
                raise InvalidParameter("trace line", f"{self.info.path}:{n}", f"a pid below 2^31, got {pid}")
            tgid = m.group("tgid") if has_tgid else None
            tgid_value = int(tgid) if tgid and tgid.isdigit() else -1
            if tgid_value >= 1 << 31:
                raise InvalidParameter("trace line", f"{self.info.path}:{n}", f"a TGID below 2^31, got {tgid_value}")
            rows.append((ts, int(m.group("cpu")), pid, ecode(event_name(m)), ccode(m.group("comm").strip(_BLANKS)),
                         m.group("payload").strip(_BLANKS), tgid_value))  # (trace-cmd report pads after the name)
            if len(rows) >= CHUNK_LINES:
                chunk, st.last = self._chunk(rows, st.last, has_tgid)
                rows = []
                yield chunk
        if rows:
            chunk, st.last = self._chunk(rows, st.last, has_tgid)
            yield chunk
        if own:
            self._finish(st)

    def _chunk(self, rows: list[tuple[int, int, int, int, int, str, int]], last: int, tgid: bool) -> tuple[Chunk, int]:
        ts = np.fromiter((r[0] for r in rows), dtype=np.uint64, count=len(rows))
        cols = np.array([(r[1], r[2], r[3], r[4], r[6]) for r in rows], dtype=np.int64).reshape(-1, 5)
        payload = [r[5] for r in rows]
        if int(ts[0]) < last or bool(np.any(ts[1:] < ts[:-1])):
            self.warn(f"{self.info.path}: lines are not in timestamp order; events were sorted by timestamp")
            order = np.argsort(ts, kind="stable")
            ts, cols, payload = ts[order], cols[order], [payload[i] for i in order.tolist()]
        c = Chunk(ts, cols[:, 0].astype(np.int32), cols[:, 1].astype(np.int32), cols[:, 2].astype(np.int32),
                  cols[:, 3].astype(np.int32), payload, tgid=cols[:, 4].astype(np.int32) if tgid else None)
        return c, int(ts[-1])

    def fields(self, chunk: Chunk, event: str, names: list[str] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        return text_fields(self, chunk, event, names)


def text_fields(trace: Trace, chunk: Chunk, event: str, names: list[str] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Rows of ``event`` (with or without its system prefix) and their ``key=value`` fields, as text."""
    codes = [c for e, c in trace.events.index.items() if e.split(":")[-1] == event.split(":")[-1]]
    rows = np.nonzero(np.isin(chunk.event, codes))[0] if codes else np.zeros(0, dtype=np.int64)
    assert chunk.payload is not None
    parsed = [parse_kv(chunk.payload[i]) for i in rows.tolist()]
    keys = names or sorted({k for p in parsed for k in p})
    return rows, {k: [p.get(k) for p in parsed] for k in keys}
