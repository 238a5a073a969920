"""``tsalign convert``: convert timestamps between time domains."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import exitcodes
from ..clock.kvm import FRAC_BITS_VMX, TscParams
from ..clock.perf import PerfTimeConv
from ..clock.pvclock import Pvclock
from ..convert import CHAIN, DOMAINS, DURATIONS, ConvParams, convert, plan
from ..errors import InvalidParameter, MissingParameter
from ..numbers import check_u64, parse_int, parse_offset, parse_u64

__all__ = ["register"]

_EPILOG = f"""\
domains: {' <-> '.join(CHAIN)} (timestamps), {' <-> '.join(DURATIONS)} (durations, with --tsc-khz);
with --calibration FILE (tsalign calibrate, in a guest): guest-tsc <-> guest-sched or guest-perf directly.
Numbers are decimal or 0x-hex. Example (the perf-prof note's offset, negative as signed):
  tsalign convert --from tsc --to guest-tsc --tsc-offset 0xffee6aba03eccaac 5096000000000000
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "convert", help="convert timestamps between time domains",
        description="Convert timestamps between time domains; one output value per input value.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="src", required=True, metavar="DOMAIN", help=f"one of {', '.join(DOMAINS)}")
    p.add_argument("--to", dest="dst", required=True, metavar="DOMAIN", help=f"one of {', '.join(DOMAINS)}")
    g = p.add_argument_group("perf user page (perf <-> tsc)")
    g.add_argument("--time-zero", help="ns")
    g.add_argument("--time-mult", help="fixed-point ns per cycle multiplier")
    g.add_argument("--time-shift", help="fraction bits of time_mult")
    g.add_argument("--time-cycles", help="cycles; with --time-mask for cap_user_time_short")
    g.add_argument("--time-mask", help="mask of a short counter (cap_user_time_short)")
    g = p.add_argument_group("KVM (tsc <-> guest-tsc)")
    g.add_argument("--tsc-offset", help="cycles; unsigned (0xffee...) or signed (-5093...)")
    g.add_argument("--tsc-ratio", help="scaling ratio (default 1 << frac bits: none)")
    g.add_argument("--tsc-frac-bits", help=f"fraction bits of the ratio (default {FRAC_BITS_VMX}; AMD: 32)")
    g = p.add_argument_group("pvclock (guest-tsc <-> kvmclock)")
    g.add_argument("--pvclock-system-time", help="ns")
    g.add_argument("--pvclock-tsc-timestamp", help="guest TSC cycles")
    g.add_argument("--pvclock-mul", help="tsc_to_system_mul (u32)")
    g.add_argument("--pvclock-shift", help="tsc_shift (signed)")
    g = p.add_argument_group("guest sched clock (kvmclock <-> guest-sched)")
    g.add_argument("--kvm-sched-clock-offset", help="ns: the guest's kvm_sched_clock_offset")
    g.add_argument("--sched-clock-offset", help="ns: the guest's __sched_clock_offset (default 0)")
    g = p.add_argument_group("guest calibration (guest-tsc <-> guest-sched / guest-perf, no host needed)")
    g.add_argument("--calibration", metavar="FILE", help="a file `tsalign calibrate -o FILE` wrote in the guest")
    p.add_argument("--tsc-khz", help="TSC frequency in kHz (cycles <-> ns)")
    p.add_argument("--json", action="store_true", help="write one JSON document to stdout")
    p.add_argument("values", nargs="*", metavar="VALUE", help="values to convert (default: stdin, one per line)")
    p.set_defaults(handler=run)


def _flag(name: str) -> str:
    """A parameter name as its command-line option: ``time_zero`` -> ``--time-zero``; ``--tsc-offset`` stays."""
    return name if name.startswith("--") else "--" + name.replace("_", "-").replace(" ", "-")


def _opt(args: argparse.Namespace, attr: str, parse: Any = parse_u64) -> int | None:
    text = getattr(args, attr)
    if text is None:
        return None
    value: int = parse(text, "--" + attr.replace("_", "-"))
    return value


def tsc_params_of(args: argparse.Namespace) -> TscParams:
    """The vCPU's TSC parameters of ``args.tsc_offset``, ``tsc_ratio``, ``tsc_frac_bits`` (texts; ``tsalign convert``
    and ``tsalign events --parquet``), errors naming the options."""
    frac = _opt(args, "tsc_frac_bits", parse_int)
    ratio = _opt(args, "tsc_ratio")
    if ratio == 0:  # (TscParams reads 0 as "none": a 0 given would be taken for no scaling without a word)
        raise InvalidParameter("--tsc-ratio", args.tsc_ratio, "a positive fixed-point ratio (KVM's is never 0; "
                               "1 << --tsc-frac-bits is no scaling, the default)")
    try:
        return TscParams(offset=parse_offset(args.tsc_offset, "--tsc-offset"), ratio=ratio or 0,
                         frac_bits=FRAC_BITS_VMX if frac is None else frac)
    except InvalidParameter as e:
        raise InvalidParameter(_flag(e.name), e.value, e.expected) from None


def _params(args: argparse.Namespace) -> ConvParams:
    p = ConvParams()
    perf_fields = ("time_zero", "time_mult", "time_shift")
    given = [f for f in perf_fields if getattr(args, f) is not None]
    if given:
        missing = [f for f in perf_fields if getattr(args, f) is None]
        if missing:
            raise MissingParameter("--" + missing[0].replace("_", "-"), "perf <-> tsc",
                                   "give --time-zero, --time-mult and --time-shift together")
        short = args.time_mask is not None
        try:
            p.perf = PerfTimeConv(
                time_zero=_opt(args, "time_zero") or 0,
                time_mult=_opt(args, "time_mult") or 0,
                time_shift=_opt(args, "time_shift") or 0,
                time_cycles=_opt(args, "time_cycles") or 0,
                time_mask=_opt(args, "time_mask") or 0,
                cap_user_time_zero=True, cap_user_time_short=short,
            )
        except InvalidParameter as e:
            raise InvalidParameter(_flag(e.name), e.value, e.expected) from None
    if args.tsc_offset is not None or args.tsc_ratio is not None or args.tsc_frac_bits is not None:
        if args.tsc_offset is None:
            raise MissingParameter("--tsc-offset", "tsc <-> guest-tsc", "give the vCPU's TSC offset")
        p.tsc = tsc_params_of(args)
    pv_fields = ("pvclock_system_time", "pvclock_tsc_timestamp", "pvclock_mul", "pvclock_shift")
    if any(getattr(args, f) is not None for f in pv_fields):
        missing = [f for f in pv_fields if getattr(args, f) is None]
        if missing:
            raise MissingParameter("--" + missing[0].replace("_", "-"), "guest-tsc <-> kvmclock",
                                   "give all four --pvclock-* parameters")
        try:
            p.pvclock = Pvclock(
                system_time=_opt(args, "pvclock_system_time") or 0,
                tsc_timestamp=_opt(args, "pvclock_tsc_timestamp") or 0,
                tsc_to_system_mul=_opt(args, "pvclock_mul") or 0,
                tsc_shift=_opt(args, "pvclock_shift", parse_int) or 0,
            )
        except InvalidParameter as e:
            flag = {"pvclock tsc_to_system_mul": "--pvclock-mul", "pvclock tsc_shift": "--pvclock-shift"}
            raise InvalidParameter(flag.get(e.name, e.name), e.value, e.expected) from None
    p.kvm_sched_clock_offset = _opt(args, "kvm_sched_clock_offset")
    p.sched_clock_offset = _opt(args, "sched_clock_offset") or 0
    if args.calibration is not None:
        from ..clock import calib

        p.calibration = calib.load(args.calibration)
    p.tsc_khz = _opt(args, "tsc_khz")
    if p.tsc_khz == 0:
        raise InvalidParameter("--tsc-khz", args.tsc_khz, "a positive frequency in kHz, e.g. 2596000")
    return p


def _read_values(args: argparse.Namespace) -> list[int]:
    signed_ok = args.src in DURATIONS
    parse = parse_int if signed_ok else parse_u64
    if args.values:
        return [parse(v, f"VALUE #{i + 1}") for i, v in enumerate(args.values)]
    out = []
    for lineno, line in enumerate(sys.stdin, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(parse(line, f"stdin line {lineno}"))
    return out


def run(args: argparse.Namespace) -> int:
    params = _params(args)
    path = plan(args.src, args.dst, params.calibration is not None)
    values = _read_values(args)
    result = convert(values, args.src, args.dst, params)
    if args.dst not in DURATIONS:
        for r in result:
            check_u64(r, "result")
    doc = {
        "from": args.src,
        "to": args.dst,
        "path": path,
        "values": [{"in": a, "out": b} for a, b in zip(values, result)],
    }
    emit(args, doc, [str(r) for r in result])
    return exitcodes.OK


from . import emit
