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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..clock.kvm import TscParams
from ..errors import InvalidParameter
from ..offsets import OffsetSnapshot
from .ftrace_text import Record, parse_lines

__all__ = ["FORMAT", "VERSION", "Bundle", "snapshot_from_dict", "snapshot_to_dict", "write_manifest"]

FORMAT = "tsalign-bundle"
VERSION = 1


def snapshot_to_dict(s: OffsetSnapshot) -> dict[str, Any]:
    return {"host_tsc": s.host_tsc, "vcpu": s.vcpu, "offset": s.params.offset, "ratio": s.params.ratio,
            "frac_bits": s.params.frac_bits, "source": s.source}


def snapshot_from_dict(d: dict[str, Any]) -> OffsetSnapshot:
    return OffsetSnapshot(int(d["host_tsc"]), int(d["vcpu"]),
                          TscParams(int(d["offset"]), int(d.get("ratio", 0)), int(d.get("frac_bits", 48))),
                          str(d.get("source", "debugfs")))


def write_manifest(path: str, manifest: dict[str, Any]) -> None:
    manifest = {"format": FORMAT, "version": VERSION, **manifest}
    tmp = os.path.join(path, ".manifest.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(path, "manifest.json"))


@dataclass
class Bundle:
    """A capture bundle read back from disk."""

    path: str
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str, what: str = "bundle") -> Bundle:
        """Read ``path``/manifest.json; errors name the bundle and the fix."""
        mpath = os.path.join(path, "manifest.json")
        if not os.path.isdir(path):
            raise InvalidParameter(what, path, "a capture bundle directory (made by tsalign capture or selftest)")
        try:
            with open(mpath, encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise InvalidParameter(what, path, "a directory holding manifest.json (is this a tsalign bundle?)") from None
        except json.JSONDecodeError as e:
            raise InvalidParameter(what, path, f"a valid manifest.json ({mpath}: {e})") from None
        if manifest.get("format") != FORMAT:
            raise InvalidParameter(what, path, f"manifest format {FORMAT!r}, found {manifest.get('format')!r}")
        if manifest.get("version") != VERSION:
            raise InvalidParameter(what, path, f"bundle version {VERSION}, found {manifest.get('version')!r}")
        return cls(path, manifest)

    @property
    def role(self) -> str:
        return str(self.manifest.get("role"))

    @property
    def domain(self) -> str:
        return str(self.manifest.get("clock", {}).get("domain"))

    def snapshots(self) -> list[OffsetSnapshot]:
        return [snapshot_from_dict(d) for d in self.manifest.get("offsets", {}).get("snapshots", [])]

    def records(self) -> Iterator[Record]:
        """Every event record of the bundle (per-CPU files in CPU order; not merged by time)."""
        data = self.manifest.get("data", {})
        fmt = data.get("format")
        files = data.get("files", [])
        for name in files:
            fpath = os.path.join(self.path, name)
            try:
                f = open(fpath, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
            except OSError as e:
                raise InvalidParameter("bundle data", fpath, f"a readable file listed in manifest.json ({e.strerror})") from None
            with f:
                if fmt == "ftrace-text":
                    yield from parse_lines(f, fpath)
                elif fmt == "jsonl":
                    for n, line in enumerate(f, 1):
                        try:
                            d = json.loads(line)
                            yield Record(int(d["ts"]), int(d.get("cpu", 0)), int(d.get("pid", 0)), str(d.get("comm", "")),
                                         str(d["event"]), str(d.get("payload", "")))
                        except (ValueError, KeyError) as e:
                            raise InvalidParameter("bundle event", f"{fpath}:{n}", f"a JSON event with ts and event ({e})") from None
                else:
                    raise InvalidParameter("bundle data format", fmt, "ftrace-text or jsonl")
