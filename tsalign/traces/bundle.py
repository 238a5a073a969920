"""The capture bundle: a self-describing directory, ``manifest.json`` + data files.

Layout (version 1)::

    manifest.json        what, where, which clock, offsets, stats (see ``Manifest`` keys below)
    cpuN.txt             ftrace text of CPU N (data.format == "ftrace-text"), or
    events.jsonl         one JSON event per line (data.format == "jsonl"): ts, cpu, pid, comm, event, payload
    formats/SYS.EVENT    the kernel's event format files

Manifest keys: ``format`` ("tsalign-bundle"), ``version``, ``role`` (host|guest), ``node`` (hostname,
kernel, boot_id, product_uuid, tsc_khz, clocksource, cmdline, sched_clock), ``clock`` (trace_clock,
domain: host_tsc|guest_tsc|perf_ns|kvmclock_ns, perf_user_page, pvclock, convertible, reason),
``events``, ``vm`` (host: pid, vm_fd, name, uuid, vcpus [{id, tid}]; guest: what identifies it),
``offsets`` (snapshots [{host_tsc, vcpu, offset, ratio, frac_bits, source}]), ``data``,
``stats`` (per-CPU ring buffer stats), ``lost_events``, ``started_host_tsc``, ``duration_s``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..clock.kvm import TscParams
from ..errors import InvalidParameter
from ..offsets import OffsetSnapshot
from .ftrace_text import Record
from .manifest import check_data_file, validate

if TYPE_CHECKING:
    from .events import Events

__all__ = ["FORMAT", "INCOMPLETE", "LOCK", "VERSION", "Bundle", "snapshot_from_dict", "snapshot_to_dict", "write_manifest"]

MAX_MANIFEST_BYTES = 64 << 20
#: a file in a bundle directory while its capture runs; removed once manifest.json is written
INCOMPLETE = "INCOMPLETE"
#: the lock a capture holds on its --out directory while it writes it
LOCK = ".lock"
FORMAT = "tsalign-bundle"
VERSION = 1


def snapshot_to_dict(s: OffsetSnapshot) -> dict[str, Any]:
    return {"host_tsc": s.host_tsc, "vcpu": s.vcpu, "offset": s.params.offset, "ratio": s.params.ratio,
            "frac_bits": s.params.frac_bits, "source": s.source,
            **({"read_until": s.read_until} if s.read_until is not None else {})}


def snapshot_from_dict(d: dict[str, Any]) -> OffsetSnapshot:
    return OffsetSnapshot(int(d["host_tsc"]), int(d["vcpu"]),
                          TscParams(int(d["offset"]), int(d.get("ratio", 0)), int(d.get("frac_bits", 48))),
                          str(d.get("source", "debugfs")),
                          int(d["read_until"]) if d.get("read_until") is not None else None)


def write_manifest(path: str, manifest: dict[str, Any]) -> None:
    manifest = {"format": FORMAT, "version": VERSION, **manifest}
    tmp = os.path.join(path, ".manifest.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(path, "manifest.json"))
    for name in (INCOMPLETE, LOCK):  # complete now (the lock's holder is this process: flock ends at exit)
        try:
            os.unlink(os.path.join(path, name))
        except FileNotFoundError:
            pass


def _jsonl_record(line: str, where: str, n: int) -> Record:
    """One event of a JSON-lines bundle file (line ``n``), every field type- and range-checked."""
    what = "a JSON object of at most 1 MiB: ts (0..2^64-1), cpu, pid integers in range, event a string"
    try:
        d: Any = json.loads(line) if len(line) <= 1 << 20 else None
    except (ValueError, RecursionError) as e:
        raise InvalidParameter("bundle event", f"{where}:{n}", f"{what} ({str(e)[:200]})") from None
    if not isinstance(d, dict) or not isinstance(d.get("event"), str):
        raise InvalidParameter("bundle event", f"{where}:{n}", what)
    ts, cpu, pid = d.get("ts"), d.get("cpu", 0), d.get("pid", 0)
    if not (type(ts) is int and type(cpu) is int and type(pid) is int) or not 0 <= ts < 1 << 64 \
            or not 0 <= cpu < 1 << 16 or not -1 <= pid < 1 << 31:
        raise InvalidParameter("bundle event", f"{where}:{n}", what)
    return Record(ts, cpu, pid, str(d.get("comm", ""))[:64], d["event"][:256], str(d.get("payload", ""))[:65536])


@dataclass
class Bundle:
    """A capture bundle read back from disk."""

    path: str
    manifest: dict[str, Any]
    #: a guest calibration given for this bundle's ns timestamps (``tsalign align --guest-calibration``): clock ->
    #: :class:`tsalign.clock.calib.Calibration`
    calibration: dict[str, Any] | None = None
    #: which payloads :meth:`events` keeps in memory (:class:`tsalign.traces.spill.PayloadPolicy`; None: all)
    payload_policy: Any = None

    @classmethod
    def open(cls, path: str, what: str = "bundle") -> Bundle:
        """Read ``path``/manifest.json; errors name the bundle and the fix."""
        mpath = os.path.join(path, "manifest.json")
        if not os.path.isdir(path):
            raise InvalidParameter(what, path, "a capture bundle directory (made by tsalign capture or selftest)")
        if os.path.exists(os.path.join(path, INCOMPLETE)):
            raise InvalidParameter(what, path, f"a complete bundle: {INCOMPLETE} says the capture that wrote it did not "
                                   "finish (killed, or still running); re-capture")
        try:
            if os.path.getsize(mpath) > MAX_MANIFEST_BYTES:
                raise InvalidParameter(what, path, f"a manifest.json under {MAX_MANIFEST_BYTES >> 20} MiB ({mpath} is larger)")
            with open(mpath, "rb") as f:
                manifest = json.loads(f.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"))
        except FileNotFoundError:
            raise InvalidParameter(what, path, "a directory holding manifest.json (is this a tsalign bundle? an "
                                   "interrupted capture leaves none)") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise InvalidParameter(what, path, f"a valid UTF-8 JSON manifest.json ({mpath}: {str(e)[:200]})") from None
        except OSError as e:
            raise InvalidParameter(what, path, f"a readable manifest.json ({mpath}: {e.strerror})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise InvalidParameter(what, path, f"manifest format {FORMAT!r}, found {str(found)[:80]!r}")
        if manifest.get("version") != VERSION:
            raise InvalidParameter(what, path, f"bundle version {VERSION}, found {str(manifest.get('version'))[:80]!r}")
        validate(manifest, mpath)
        return cls(path, manifest)

    @property
    def role(self) -> str:
        return str(self.manifest.get("role"))

    @property
    def domain(self) -> str:
        return str(self.manifest.get("clock", {}).get("domain"))

    def snapshots(self) -> list[OffsetSnapshot]:
        return [snapshot_from_dict(d) for d in self.manifest.get("offsets", {}).get("snapshots", [])]

    def declared_entries(self, name: str) -> int | None:
        """How many events the manifest's ring-buffer stats say data file ``name`` (``cpuN.txt``) holds."""
        m = re.fullmatch(r"cpu(\d+)\.txt", name)
        if m is None:
            return None
        for st in self.manifest.get("stats", []):
            if st.get("cpu") == int(m[1]):
                return int(st["entries"])
        return None

    def check_count(self, name: str, read: int, lenient: bool = False) -> str | None:
        """Compare the events read from ``name`` with the count the capture declared: a shortfall or a surplus
        (a file cut at a line end, or edited) is an error, or with ``lenient`` the warning returned."""
        want = self.declared_entries(name)
        if want is None or want == read:
            return None
        msg = (f"{want} events, as the capture's ring-buffer stats declare; {read} were read "
               "(the file was cut or edited after the capture)")
        if lenient:
            return f"{os.path.join(self.path, name)}: {msg}"
        raise InvalidParameter("bundle data", os.path.join(self.path, name), msg)

    def events(self) -> Events:
        """Every event of the bundle as columns (per-CPU files in CPU order, each in time order). ftrace text is read
        by the text trace reader (:class:`tsalign.traces.text.TextTrace`: whole blocks at a time, its TGID column
        kept), and each file's count checked against the capture's ring-buffer stats."""
        # (imported here: `capture` writes bundles on guests with the standard library only)
        from .events import EventsBuilder
        from .text import TextTrace

        data = self.manifest.get("data", {})
        fmt = data.get("format")
        if fmt not in ("ftrace-text", "jsonl"):
            raise InvalidParameter("bundle data format", fmt, "ftrace-text or jsonl")
        out = EventsBuilder(self.payload_policy)
        for name in data.get("files", []):
            fpath = check_data_file(self.path, name)
            try:
                with open(fpath, "rb"):
                    pass
            except OSError as e:
                raise InvalidParameter("bundle data", fpath, f"a readable file listed in manifest.json ({e.strerror})") from None
            if fmt == "jsonl":
                with open(fpath, encoding="utf-8", errors="replace") as f:
                    out.add_records([_jsonl_record(line, fpath, n) for n, line in enumerate(f, 1)])
                continue
            n = 0
            with TextTrace(fpath, "ftrace") as t:
                for c in t.raw_chunks():
                    out.add_codes(c.ts, c.cpu, c.pid, c.tgid, out.recode(c.comm, t.comms.items, "comm"),
                                  out.recode(c.event, t.events.items, "event"), c.payload or [])
                    n += len(c)
            self.check_count(name, n)
        return out.build()

    def records(self) -> Iterator[Record]:
        """Every event record of the bundle, in :meth:`events`' order."""
        return self.events().records()
