"""Node verbs: ``tsalign precheck``, ``tsalign offsets``, ``tsalign btf offsetof``, ``tsalign kprobe``, and the
controller's ``tsalign kernels`` (a fleet's per-build offset table from their precheck reports)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import exitcodes
from ..errors import InvalidParameter, Unavailable
from ..kernel import btf as btfmod
from ..kernel import kprobe
from ..node import checks, kvmvms
from ..node.fs import Root
from ..verdicts import exit_code
from . import emit

__all__ = ["register"]

_MARK = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def register(sub: Any) -> None:
    p = sub.add_parser("precheck", help="check this machine (host or guest) for tsalign",
                       description="Run the node prechecks; exit 0 ok, 6 warn, 1 fail.")
    p.add_argument("--role", choices=("host", "guest", "auto"), default="auto")
    p.add_argument("--mount", action="store_true", help="mount tracefs/debugfs when absent")
    p.add_argument("--root", default="/", help="probe a recorded tree of another machine")
    p.add_argument("--btf", help="BTF file (default /sys/kernel/btf/vmlinux, or kvm's split BTF)")
    p.add_argument("--btf-base", help="base BTF of a split --btf (vmlinux's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_precheck)

    p = sub.add_parser("offsets", help="per-vCPU TSC offsets of the VMs on this host")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--vm", help="libvirt/QEMU domain name")
    g.add_argument("--pid", type=int, help="VM process id")
    p.add_argument("--root", default="/", help="probe a recorded tree of another machine")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_offsets)

    p = sub.add_parser("btf", help="struct member offsets from BTF")
    bsub = p.add_subparsers(dest="btf_verb", metavar="SUBVERB")
    bsub.required = True
    q = bsub.add_parser("offsetof", help="offsetof(struct STRUCT, MEMBER.PATH)")
    q.add_argument("struct")
    q.add_argument("member")
    q.add_argument("--btf", default="/sys/kernel/btf/vmlinux")
    q.add_argument("--btf-base", help="base BTF of a split --btf (vmlinux's)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=run_btf_offsetof)

    p = sub.add_parser("offsetof", help="struct member offsets by BTF, split BTF or DWARF (kernels without BTF)",
                       description="offsetof(struct STRUCT, MEMBER.PATH) for each MEMBER. Route: --btf [--btf-base], "
                                   "--debuginfo (DWARF: vmlinux or a module's debug file, e.g. Debian's "
                                   "linux-image-REL-dbg), or with neither the running kernel's BTF, else its debug "
                                   "info found by build id. DWARF answers are cached by build id.")
    p.add_argument("struct")
    p.add_argument("members", nargs="+", metavar="MEMBER")
    p.add_argument("--btf", help="BTF file (e.g. /sys/kernel/btf/kvm)")
    p.add_argument("--btf-base", help="base BTF of a split --btf (vmlinux's)")
    p.add_argument("--debuginfo", help="ELF file with DWARF (vmlinux, or kvm.ko from the kernel's debug package)")
    p.add_argument("--cache", default=None, help="cache directory of DWARF answers (default ~/.cache/tsalign/offsets); "
                                                "'none' to compute every time")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_offsetof)

    p = sub.add_parser("kernels", help="a fleet's per-kernel-build offset table and each host's kprobe, from "
                                       "precheck reports", description=(
        "Group the KVM hosts of precheck.yml's reports by kernel build (build id), take each build's "
        "kvm_vcpu offsets from its nodes (they must agree) or else from a debug file of that build id under "
        "--debuginfo-dir (DWARF, cached by build id), and render each host's kprobe. Exit 0 when every host "
        "has one, 4 when some build is unresolved (the package that resolves it is named), 5 when offsets "
        "of one build disagree."))
    p.add_argument("reports", nargs="+", metavar="REPORT", help="NODE.json files or directories of them "
                                                               "(precheck.yml's tsalign_precheck_dir)")
    p.add_argument("--debuginfo-dir", action="append", default=[], metavar="DIR",
                   help="directory of kernel debug files (kvm.ko / vmlinux of debug packages); repeatable")
    p.add_argument("--cache", default=None, help="cache directory of DWARF answers (default ~/.cache/tsalign/offsets); "
                                                "'none' to compute every time")
    p.add_argument("-o", "--out", default=None, help="also write the table here (JSON)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_kernels)

    p = sub.add_parser("calibrate", help="measure this machine's ns clocks (sched_clock 'local', perf) against its TSC",
                       description=(
        "Record the same tracepoint hits in private tracefs instances with the clocks x86-tsc, local, perf, "
        "x86-tsc, fit each ns clock as pvclock-shaped pieces of TSC (steps found), state the error bound, and "
        "write FILE for `tsalign convert --calibration` and `tsalign align --guest-calibration`. For a guest that "
        "keeps kvm-clock: its perf and ftrace local timestamps convert to TSC without the host. --check measures "
        "fresh pairs afterwards and judges the map by them (exit 1 when a fresh pair lies beyond the bound). "
        "On a node without numpy: --pairs-out FILE measures only (standard library), and `tsalign calibrate "
        "--from-pairs FILE -o OUT` fits them elsewhere (the guest role of setup.yml does both)."))
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-o", "--out", help="calibration file to write (JSON)")
    g.add_argument("--verify", metavar="FILE", help="judge an existing calibration on fresh pairs instead (after a "
                                                   "migration or a long time: exit 1 when it no longer holds)")
    g.add_argument("--pairs-out", metavar="FILE", help="only measure, and write the pairs here (JSON; no numpy "
                                                      "needed): fit them with --from-pairs")
    p.add_argument("--from-pairs", metavar="FILE", help="with -o: fit the pairs --pairs-out wrote (on any machine) "
                                                       "instead of measuring here")
    p.add_argument("--pairs", type=int, default=20_000, help="tracepoint hits to measure (default 20000)")
    p.add_argument("--seconds", type=float, default=2.0, help="spread over this many seconds (default 2)")
    p.add_argument("--check", action="store_true", help="judge the map on fresh pairs measured afterwards")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_calibrate)

    p = sub.add_parser("kprobe", help="the kprobe route to vcpu->arch.tsc_offset")
    p.add_argument("action", choices=("render", "register", "unregister"))
    p.add_argument("--function", help="kprobe this function (default: chosen from BTF and kallsyms)")
    p.add_argument("--btf", help="BTF file holding struct kvm_vcpu")
    p.add_argument("--btf-base", help="base BTF of a split --btf")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_kprobe)


def run_calibrate(args: argparse.Namespace) -> int:
    from ..capture.calibrate import CLOCKS, load_pairs, measure, save_pairs
    from ..node.facts import node_facts

    if args.from_pairs and not args.out:
        raise InvalidParameter("--from-pairs", args.from_pairs, "-o FILE: where to write the calibration it fits")
    if (args.from_pairs or args.pairs_out) and args.check:
        raise InvalidParameter("--check", "with --from-pairs/--pairs-out", "--check where the fit is measured "
                               "(tsalign calibrate -o FILE --check), or --verify FILE on the node afterwards")
    if args.pairs_out:  # standard library only: a node without numpy
        facts = node_facts(Root())
        m = measure(args.pairs, args.seconds)
        save_pairs(args.pairs_out, m, facts, args.seconds)
        emit(args, {"pairs_out": args.pairs_out, "hits": m["hits"], "cpu": m["cpu"], "boot_id": facts.get("boot_id"),
                    "sched_clock": facts.get("sched_clock")},
             [(f"wrote {args.pairs_out}: {m['hits']} hits on CPU {m['cpu']} over {args.seconds} s (fit them: "
               f"tsalign calibrate --from-pairs {args.pairs_out} -o FILE)")])
        return exitcodes.OK
    from ..clock import calib
    from ..clock.display import ns_or_none

    facts = load_pairs(args.from_pairs) if args.from_pairs else node_facts(Root())
    khz = facts.get("tsc_khz")
    if args.verify:
        cals = list(calib.load(args.verify).values())
        if any(c.boot_id and c.boot_id != facts.get("boot_id") for c in cals):
            raise InvalidParameter("--verify", args.verify, f"a calibration of this boot ({facts.get('boot_id')}): "
                                   "it was measured on another boot (or machine)")
        measured: dict[str, Any] = {"verified_file": args.verify}
        lines = [f"verifying {args.verify} on fresh pairs"]
    else:
        m = facts if args.from_pairs else measure(args.pairs, args.seconds)
        measured = m["measured"] | {"from_pairs": args.from_pairs} if args.from_pairs else {
            "hits": m["hits"], "cpu": m["cpu"], "seconds": args.seconds, "bracket_order": m["bracket_order"],
            "clocksource": facts.get("clocksource"), "sched_clock": facts.get("sched_clock"),
            "sched_clock_stable": facts.get("sched_clock_stable")}
        stable = measured.get("sched_clock_stable")
        cals = [calib.fit(m["ns"][c], m["lo"], m["hi"], c, khz, facts.get("boot_id"),
                          stable if isinstance(stable, bool) else None) for c in CLOCKS]
        calib.save(args.out, cals, measured)
        lines = [(f"wrote {args.out}: {m['hits']} hits on CPU {measured.get('cpu')} over {measured.get('seconds')} s "
                  f"(clocksource {measured.get('clocksource')}, sched_clock {measured.get('sched_clock') or 'native'})"
                  + (f", measured elsewhere ({args.from_pairs})" if args.from_pairs else ""))]
    doc: dict[str, Any] = {"out": args.out, "measured": measured,
                           "clocks": {c.clock: {"pieces": len(c.pieces), "bound_cycles": c.bound_cycles,
                                                "bound_ns": ns_or_none(c.bound_cycles, khz), "disturbed": c.disturbed,
                                                "median_bracket_cycles": c.median_bracket_cycles, "notes": c.notes}
                                      for c in cals}}
    lines += [f"  {c.clock}: {len(c.pieces)} piece(s), bound {c.bound_cycles} cycles "
              f"({ns_or_none(c.bound_cycles, khz)} ns); {c.disturbed} disturbed pairs set aside" for c in cals]
    code = exitcodes.OK
    if args.check or args.verify:
        fresh = measure(args.pairs, args.seconds)
        doc["check"] = {}
        for c in cals:
            j = doc["check"][c.clock] = c.judge(fresh["ns"][c.clock], fresh["lo"], fresh["hi"])
            lines.append(f"  check {c.clock}: {j['fresh_pairs']} fresh pairs, {j['beyond_bound']} beyond the bound, "
                         f"worst {j['max_error_cycles']} cycles ({j['max_error_ns']} ns): {j['verdict'].upper()}")
            if j["verdict"] != "pass":
                code = exitcodes.VERDICT_FAIL
    emit(args, doc, lines)
    return code


def run_kernels(args: argparse.Namespace) -> int:
    from ..jsonfile import save_json
    from ..kernel.fleet import kernel_table, load_reports
    from ..kernel.routes import CACHE_DIR

    table = kernel_table(load_reports(args.reports), args.debuginfo_dir,
                         None if args.cache == "none" else (args.cache or CACHE_DIR))
    if args.out:
        save_json(args.out, table, "--out")
    lines = [(f"{len(table['builds'])} kernel build(s), {table['summary']['hosts']} KVM host(s), "
             f"{table['summary']['with_kprobe']} with a kprobe")]
    for b in table["builds"]:
        off = b["offsets"]
        lines.append(f"  {b['release']} {b['kvm_file']} {b['build_id'] or '(no build id)'}: {b['status']}"
                     + (f", tsc_offset {off['arch.tsc_offset']:#x} vcpu_id {off['vcpu_id']:#x} by {b['route']}"
                        if off else f": {b.get('reason', '')}") + f" [{len(b['nodes'])} node(s)]")
        if b.get("fix"):
            lines.append(f"    fix: {b['fix']}")
    for name, n in sorted(table["nodes"].items()):
        lines.append(f"  {name}: {n['kprobe'] or n['status'] + ': ' + n.get('reason', '')}")
    emit(args, table, lines)
    statuses = {b["status"] for b in table["builds"]}
    if "inconsistent" in statuses:
        return exitcodes.INCONSISTENT
    return exitcodes.UNAVAILABLE if table["summary"]["unresolved"] else exitcodes.OK


def run_precheck(args: argparse.Namespace) -> int:
    report = checks.run_checks(Root(args.root), args.role, args.mount, args.btf, args.btf_base)
    lines: list[str] = [f"tsalign precheck: role={report.role} kernel={report.kernel} tsc_khz={report.tsc_khz}"]
    for ch in report.checks:
        lines.append(f"  {_MARK[ch.status]} {ch.id:22s} {ch.evidence}")
        if ch.fix and ch.status in ("warn", "fail"):
            lines.append(f"       {'':22s} fix: {ch.fix}")
    lines.append(f"verdict: {report.verdict} ({report.elapsed_ms} ms)")
    emit(args, report.to_dict(), lines)
    return exit_code(report.verdict)


def run_offsets(args: argparse.Namespace) -> int:
    root = Root(args.root)
    if args.pid is not None and not 0 < args.pid < 1 << 22:
        raise InvalidParameter("--pid", args.pid, "a process id from 1 to 4194303")
    vms = kvmvms.discover_vms(root, args.pid)
    if args.vm is not None:
        named = [vm for vm in vms if vm.name == args.vm]
        if not named:
            known = ", ".join(sorted({vm.name or f"pid {vm.pid}" for vm in vms})) or "none running"
            raise InvalidParameter("--vm", args.vm, f"the name of a running VM (known: {known})")
        vms = named
    if args.pid is not None and not vms:
        raise Unavailable(f"no KVM VM found for pid {args.pid} (is it a VM process? is debugfs mounted?)")
    lines: list[str] = []
    for vm in vms:
        lines.append(f"VM pid {vm.pid} fd {vm.vm_fd} name={vm.name or '-'} uuid={vm.uuid or '-'} "
                     f"debugfs={vm.debugfs_dir or '-'}")
        for v in vm.vcpus:
            hexo = "-" if v.tsc_offset is None else f"{v.tsc_offset & ((1 << 64) - 1):#x}"
            scale = "" if v.tsc_scaling_ratio is None else f" ratio={v.tsc_scaling_ratio}/2^{v.tsc_scaling_ratio_frac_bits}"
            lines.append(f"  vcpu{v.id} tid={v.tid or '-'} tsc_offset={v.tsc_offset} ({hexo}){scale}")
        if not vm.offsets_agree:
            lines.append("  WARNING: vCPUs disagree on the TSC offset")
        lines.extend(f"  note: {n}" for n in vm.notes)
    if not vms:
        lines.append("no KVM VMs found")
    emit(args, {"vms": [vm.to_dict() for vm in vms]}, lines)
    return exitcodes.OK


def run_btf_offsetof(args: argparse.Namespace) -> int:
    b = btfmod.load(args.btf, args.btf_base)
    m = b.offsetof(args.struct, args.member)
    doc = {"struct": m.struct, "member": m.path, "offset": m.offset, "offset_hex": f"{m.offset:#x}",
           "bit_offset": m.bit_offset, "size": m.size, "type": m.type_name, "btf": b.source}
    emit(args, doc, [(f"offsetof(struct {m.struct}, {m.path}) = {m.offset} ({m.offset:#x}); "
                     f"{m.type_name}, {m.size} bytes")])
    return exitcodes.OK


def run_offsetof(args: argparse.Namespace) -> int:
    from ..kernel.routes import CACHE_DIR, member_offsets

    cache = None if args.cache == "none" else (args.cache or CACHE_DIR)
    doc = member_offsets(args.struct, args.members, args.btf, args.btf_base, args.debuginfo, cache)
    lines = [f"offsetof(struct {doc['struct']}, {m['member']}) = {m['offset']} ({m['offset']:#x}); {m['type']}, "
             f"{m['size']} bytes" for m in doc["members"]]
    lines.append(f"route: {doc['route']} ({doc['source']}" + (f", build id {doc['build_id']}" if doc["build_id"] else "")
                 + (", from the cache" if doc["cached"] else "") + ")")
    emit(args, doc, lines)
    return exitcodes.OK


def run_kprobe(args: argparse.Namespace) -> int:
    root = Root(args.root)
    ctx = checks.Context(root, "host", False, args.btf, args.btf_base)
    plan: dict[str, Any] = checks.kprobe_plan(ctx, args.function)
    doc: dict[str, Any] = {"action": args.action, **plan}
    if args.action == "render":
        emit(args, doc, [plan["kprobe"]])
        return exitcodes.OK
    try:
        if args.action == "register":
            doc["changed"] = kprobe.register(ctx.tracefs, plan["kprobe"])
        else:
            doc["changed"] = kprobe.unregister(ctx.tracefs, plan["function"])
        doc["status"] = "registered" if args.action == "register" else "unregistered"
    except Unavailable as e:
        doc.update(status="unavailable", changed=False, reason=str(e))
    except OSError as e:
        raise Unavailable(f"writing kprobe_events failed: {e.strerror}; run as root") from None
    text = doc["status"] + (f": {doc['reason']}" if "reason" in doc else f" {plan['kprobe']}")
    emit(args, doc, [text])
    return exitcodes.OK
