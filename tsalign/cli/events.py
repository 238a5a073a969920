"""``tsalign events FILE...``: summary of traces in any supported format, or export to Parquet."""

from __future__ import annotations

import argparse
import itertools
import os
from typing import TYPE_CHECKING, Any

from .. import exitcodes
from ..errors import InvalidParameter
from . import emit

__all__ = ["register"]

if TYPE_CHECKING:
    from ..clock.kvm import TscParams


def register(sub: Any) -> None:
    p = sub.add_parser("events", help="read traces (trace-cmd .dat, ftrace text, perf script, perf-prof, bundles): "
                                      "summary or Parquet export",
                       description="Summarise each trace (event count, per-event counts, clock, first/last "
                                   "timestamp, CPUs, warnings) or export its events to Parquet.")
    p.add_argument("files", nargs="+", metavar="FILE", help="trace file, bundle directory, or - for stdin text")
    p.add_argument("--format", choices=("auto", "dat", "bundle", "ftrace", "perf-script", "perf-prof"), default="auto")
    p.add_argument("--clock", help="override the clock (x86-tsc, local, perf, counter...) when the file is silent or wrong")
    p.add_argument("--buffer", help="trace-cmd .dat: instance buffer name ('' = top); text: the instance prefix")
    p.add_argument("--lenient", action="store_true", help="skip unparsable lines with a warning instead of failing")
    p.add_argument("--parquet", metavar="OUT", help="write the events to this Parquet file (one FILE only)")
    p.add_argument("--tsc-offset", help="with --parquet: add guest_tsc = host TSC converted with this offset "
                                        "(unsigned 0x... or signed, cycles)")
    p.add_argument("--tsc-ratio", help="with --tsc-offset: the TSC scaling ratio (default 1 << frac bits: none)")
    p.add_argument("--tsc-frac-bits", "--frac-bits", dest="tsc_frac_bits",
                   help="fraction bits of --tsc-ratio (default 48, Intel; AMD: 32)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_events)


def run_events(args: argparse.Namespace) -> int:
    from ..traces.reader import (
        open_trace,  # numpy: imported here so guests without it keep the other verbs
    )

    if args.parquet and len(args.files) != 1:
        raise InvalidParameter("--parquet", args.parquet, "exactly one FILE to export")
    if args.tsc_offset and not args.parquet:
        raise InvalidParameter("--tsc-offset", args.tsc_offset, "to be used with --parquet OUT")
    for opt, v in (("--tsc-ratio", args.tsc_ratio), ("--tsc-frac-bits", args.tsc_frac_bits)):
        if v is not None and not args.tsc_offset:
            raise InvalidParameter(opt, v, "to be used with --tsc-offset (the scaling of the offset's conversion)")
    tsc = None
    if args.tsc_offset:  # checked before any file is read
        from .convert import tsc_params_of

        tsc = tsc_params_of(args)
    docs = []
    lines: list[str] = []
    warned = False
    for path, buffer in _inputs(args):
        with open_trace(path, args.format, args.clock, buffer, strict=not args.lenient) as t:
            if args.parquet:
                doc = _export(t, args, tsc)
            else:
                doc = t.summary()
            docs.append(doc)
            warned = warned or bool(t.info.warnings)
            lines += _render(doc, t.info.warnings, t.info.notes)
    emit(args, {"traces": docs}, lines)
    return exitcodes.VERDICT_WARN if warned else exitcodes.OK


def _inputs(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(file, buffer) pairs: a .dat with several buffers holding data is summarised buffer by buffer."""
    from ..traces.reader import detect
    from ..traces.tracedat import TraceDat

    out: list[tuple[str, str | None]] = []
    for path in args.files:
        if args.buffer is None and not args.parquet and path != "-" and args.format in ("auto", "dat") \
                and detect(path) == "dat":
            with TraceDat(path) as d:
                names = [b.name for b in d.buffers if any(c.size for c in b.cpus)]
            if len(names) > 1:
                out += [(path, n) for n in names]
                continue
        out.append((path, args.buffer))
    return out


def _export(t: Any, args: argparse.Namespace, tsc: TscParams | None) -> dict[str, Any]:
    """``t``'s events to ``args.parquet``, with guest_tsc from ``tsc`` (:class:`~tsalign.clock.kvm.TscParams`) where
    --tsc-offset gave one."""
    from ..clock import vec
    from ..traces.export import write_parquet

    guest = None
    chunks = t.chunks()
    first = next(chunks, None)  # a text trace's clock is known once its first line is read
    chunks = itertools.chain([first] if first is not None else [], chunks)
    if args.tsc_offset:
        if t.info.domain != "tsc":
            raise InvalidParameter("--tsc-offset", args.tsc_offset,
                                   f"a trace whose clock is x86-tsc (this one is {t.info.clock!r}; pass --clock x86-tsc if it is)")
        assert tsc is not None, "parsed with --tsc-offset"
        params = tsc
        guest = lambda c: vec.host_to_guest_tsc(c.ts, params)
    parent = os.path.dirname(os.path.abspath(args.parquet))
    if os.path.isdir(args.parquet) or not os.path.isdir(parent):
        raise InvalidParameter("--parquet", args.parquet, "a file path in an existing directory")
    doc = write_parquet(t, args.parquet, chunks, guest)
    return {**doc, "source": t.info.path, "clock": t.info.clock, "domain": t.info.domain, "warnings": t.info.warnings,
            "notes": t.info.notes}


def _render(doc: dict[str, Any], warnings: list[str], notes: list[str]) -> list[str]:
    if "rows" in doc:
        out = [f"{doc['source']}: wrote {doc['rows']} events to {doc['path']} (clock {doc['clock']})"]
    else:
        out = [f"{doc['path']}: {doc['format']}" + (f" buffer {doc['buffer']!r}" if doc["buffer"] else ""),
               f"  events {doc['events']}  clock {doc['clock']} ({doc['domain']})  CPUs {doc['cpus']}",
               f"  first {doc['first_ts']}  last {doc['last_ts']}" + (f"  resolution {doc['resolution']}" if doc["resolution"] > 1 else "")]
        for name, n in list(doc["per_event"].items())[:20]:
            out.append(f"  {n:>10}  {name}")
        if len(doc["per_event"]) > 20:
            out.append(f"  ... {len(doc['per_event']) - 20} more event names (--json lists all)")
    out += [f"  note: {n}" for n in notes]
    out += [f"  warning: {w}" for w in warnings]
    return out
