"""The host and guest inputs of ``align`` and ``analyze``: bundles or any trace ``tsalign events`` reads,
and the options that give what a foreign trace lacks."""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import InvalidParameter
from ..traces.bundle import Bundle

__all__ = ["add_input_options", "open_inputs", "parse_tsc_offsets"]


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """--progress/--no-progress: the long steps' lines on stderr (default: where stderr is a terminal)."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="say on stderr what each long step starts (reading, merging, judging, writing) and after how "
                        "many seconds (default: where stderr is a terminal)")


def progress_of(args: argparse.Namespace, command: str) -> Any:
    """The :class:`tsalign.progress.Progress` of ``args`` (its --progress) for ``command``, its first line said:
    what is read."""
    from ..progress import Progress, size_text

    progress = Progress(command, args.progress)
    if progress.enabled:  # (sizes read only for the line)
        progress(f"reading {size_text(args.host)} and {size_text(args.guest)}")
    return progress


def add_input_options(p: argparse.ArgumentParser) -> None:
    """--host/--guest and the options for traces that are not tsalign bundles."""
    p.add_argument("--host", required=True,
                   help="host side: a bundle (tsalign capture --role host) or a trace in TSC cycles (trace-cmd .dat "
                        "recorded with -C x86-tsc, tracefs/trace-cmd report text, perf-prof)")
    p.add_argument("--guest", required=True, help="guest side: a bundle (tsalign capture --role guest) or a trace in "
                                                  "guest TSC cycles, as for --host")
    p.add_argument("--tsc-offset", action="append", metavar="[VCPU=]N", default=[],
                   help="use this guest-minus-host offset (cycles, signed or 0x-hex u64) instead of the host's "
                        "sources, for one vCPU or (without VCPU=) all; repeatable")
    p.add_argument("--vcpu-tid", action="append", metavar="VCPU=TID", default=[],
                   help="host trace that is not a bundle: the host thread that ran vCPU VCPU (default: inferred from "
                        "kvm_entry/kvm_exit/kvm_write_tsc_offset); repeatable")
    p.add_argument("--tsc-khz", type=int, default=None,
                   help="TSC frequency in kHz, for ns in reports, when neither input is a bundle that records it")
    for side in ("host", "guest"):
        p.add_argument(f"--{side}-clock", default=None,
                       help=f"{side} trace that is not a bundle: its trace clock when the file is silent or wrong "
                            "(x86-tsc)")
        p.add_argument(f"--{side}-buffer", default=None,
                       help=f"{side} trace-cmd .dat: the instance buffer to read ('' = top)")
    p.add_argument("--guest-calibration", metavar="FILE", default=None,
                   help="guest trace in ns of its local (sched_clock) or perf clock, e.g. `perf script --ns` of a "
                        "kvm-clock guest: convert it to guest TSC with this calibration (tsalign calibrate in the guest)")
    p.add_argument("--lenient", action="store_true",
                   help="traces that are not bundles: skip unparsable lines with a warning instead of failing")
    p.add_argument("--vm", default=None,
                   help="host bundle of several VMs (tsalign capture --vm A --vm B): the one the guest ran in (default: "
                        "the one whose identity the guest bundle matches; the guest's identity is still checked)")


def parse_tsc_offsets(values: list[str]) -> dict[int | None, Any]:
    """``[VCPU=]N`` strings -> {vcpu or None: TscParams}; errors name the option."""
    from ..clock.kvm import TscParams
    from ..numbers import parse_offset

    return {k: TscParams(parse_offset(v, "--tsc-offset")) for k, v in _pairs(values, "--tsc-offset", True).items()}


def _pairs(values: list[str], opt: str, optional_key: bool) -> dict[int | None, str]:
    """``KEY=VALUE`` (or ``VALUE`` alone when ``optional_key``) strings -> {int key or None: value}."""
    from ..numbers import parse_int

    out: dict[int | None, str] = {}
    for v in values:
        key_s, sep, val = v.partition("=")
        if not sep and not optional_key:
            raise InvalidParameter(opt, v, "VCPU=VALUE")
        key = parse_int(key_s, f"{opt} VCPU") if sep else None
        if key is not None and key < 0:
            raise InvalidParameter(opt, v, "VCPU=VALUE with a vCPU id >= 0")
        if key in out:
            raise InvalidParameter(opt, v, "one value per vCPU" + (" (and at most one without VCPU=)" if optional_key else ""))
        out[key] = val if sep else key_s
    return out


def _warn_memory(host: str, guest: str) -> None:
    """A warning on stderr where the inputs' estimated peak (tsalign.memory, an upper estimate from their sizes)
    exceeds the memory this process may use: said before the read, not found out from the OOM killer minutes in."""
    from ..memory import available_bytes, estimate_alignment

    est, room = estimate_alignment(host, guest), available_bytes()
    if room is not None and est.bytes > room:
        sys.stderr.write(f"warning: these inputs may need up to {est.bytes / 2**30:.1f} GiB at the alignment's peak "
                         f"(~{est.events:,} events, estimated from their sizes), more than the {room / 2**30:.1f} GiB "
                         "this process may use (MemAvailable, its memory cgroup's limit): it may be killed for lack "
                         "of memory. Free memory, raise the limit, or align a shorter capture\n")


def open_inputs(args: argparse.Namespace, payloads: tuple[Any, Any] = (None, None)) -> tuple[Any, Any]:
    """(host, guest) sides of ``args`` (bundles or foreign traces); ``payloads``: their
    :class:`~tsalign.traces.spill.PayloadPolicy` (default: every payload held in memory)."""
    from ..align.sides import open_side
    from ..numbers import parse_int

    tids: dict[int, int] = {}
    for k, v in _pairs(args.vcpu_tid, "--vcpu-tid", False).items():
        tid = parse_int(v, "--vcpu-tid TID")
        if not 0 < tid < 1 << 22:
            raise InvalidParameter("--vcpu-tid", f"{k}={v}", "VCPU=TID with a thread id from 1 to 4194303")
        tids[int(k)] = tid  # type: ignore[arg-type]
    if args.tsc_khz is not None and not 1000 <= args.tsc_khz <= 100_000_000:
        raise InvalidParameter("--tsc-khz", args.tsc_khz, "a TSC frequency from 1000 to 100000000 kHz")
    kw = {"tsc_khz": args.tsc_khz, "lenient": args.lenient}
    cal = None
    if getattr(args, "guest_calibration", None):
        from ..clock import calib

        cal = calib.load(args.guest_calibration)
    _warn_memory(args.host, args.guest)
    with ThreadPoolExecutor(1, thread_name_prefix="tsalign-guest-read") as pool:
        # a trace file is read when opened: both at once (the readers' kernels release the GIL)
        guest_read = pool.submit(open_side, args.guest, "guest", "--guest", args.guest_clock, args.guest_buffer,
                                 calibration=cal, payloads=payloads[1], **kw)
        try:
            host = open_side(args.host, "host", "--host", args.host_clock, args.host_buffer, tids,
                             peer=lambda: guest_read.result().manifest.get("tracecmd"), payloads=payloads[0], **kw)
        finally:  # the guest's error first, as when opened one after the other
            guest = guest_read.result()
    if tids and isinstance(host, Bundle):
        raise InvalidParameter("--vcpu-tid", args.vcpu_tid, "no value with a host bundle (it records its vCPU threads)")
    if getattr(args, "vm", None) is not None:
        if not isinstance(host, Bundle):
            raise InvalidParameter("--vm", args.vm, "no value with a host trace that is not a bundle (one VM: --vcpu-tid)")
        vms = host.manifest.get("vm") or []
        named = [v for v in vms if v.get("name") == args.vm]
        if len(named) != 1:
            raise InvalidParameter("--vm", args.vm, f"the name of one VM in {args.host} (it holds "
                                   f"{sorted(str(v.get('name')) for v in vms)})")
        host.manifest["vm"] = named
    return host, guest
