"""The node prechecks: each returns ``{id, status: ok|warn|fail|skip, value, evidence, fix}``.

Read-only, except that ``mount=True`` mounts tracefs/debugfs when they are absent. A failing read
becomes a check result that says what is missing, never an exception.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import verdicts
from ..catalogue import DEFAULT_HOST_EVENTS
from ..errors import Unavailable
from ..kernel import btf as btfmod
from ..kernel import kprobe
from . import dmesg, kvmvms, mounts, perfpage
from .fs import Root

__all__ = ["CHECKS", "Check", "Context", "Report", "kprobe_plan", "resolve_role", "run_checks"]

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
TSC_MEMBERS = ("arch.tsc_offset", "arch.l1_tsc_offset", "arch.tsc_scaling_ratio")
#: the KVM tracepoints tsalign records by default (tsalign.catalogue), looked for by the kvm_tracepoints check
KVM_EVENTS = tuple(e.split(":")[1] for e in DEFAULT_HOST_EVENTS if e.startswith("kvm:"))


@dataclass
class Check:
    """One check's result. value is JSON-ready; evidence says what was read; fix how to repair."""

    id: str
    status: str
    value: Any = None
    evidence: str = ""
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "value": self.value, "evidence": self.evidence,
                "fix": self.fix}


@dataclass
class Context:
    """What the checks share: the root, the role, and lazily read facts."""

    root: Root
    role: str
    mount: bool = False
    btf_path: str | None = None
    btf_base: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def symbol_lists(self) -> tuple[set[str] | None, set[str] | None]:
        """(functions in available_filter_functions, text symbols in /proc/kallsyms); None where unreadable.
        Read once: the kprobe plan and the kernel-build check both need them (each file is megabytes)."""
        def read() -> tuple[set[str] | None, set[str] | None]:
            d = self.tracefs
            aff = self.root.read(f"{d}/available_filter_functions", limit=1 << 26) if d else None
            ksyms = self.root.read("/proc/kallsyms", limit=1 << 27)
            return (kprobe.parse_symbol_list(aff) if aff else None, kprobe.parse_symbol_list(ksyms) if ksyms else None)
        lists: tuple[set[str] | None, set[str] | None] = self.once("symbol_lists", read)
        return lists

    def once(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            try:
                self._cache[key] = fn()
            except Exception as e:  # noqa: BLE001 - a probe failure becomes a check result
                self._cache[key] = e
        return self._cache[key]

    @property
    def cpuinfo_flags(self) -> list[str]:
        def read() -> list[str]:
            for line in (self.root.read("/proc/cpuinfo") or "").splitlines():
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
            return []
        return list(self.once("flags", read))

    @property
    def cmdline(self) -> str:
        return str(self.once("cmdline", lambda: (self.root.read("/proc/cmdline") or "").strip()))

    @property
    def log(self) -> str | None:
        v = self.once("log", lambda: dmesg.read_kernel_log(self.root))
        return v if isinstance(v, str) else None

    @property
    def tracefs(self) -> str | None:
        return self.once("tracefs", lambda: mounts.tracefs_dir(self.root))  # type: ignore[no-any-return]

    @property
    def debugfs(self) -> str | None:
        return self.once("debugfs", lambda: mounts.debugfs_dir(self.root))  # type: ignore[no-any-return]

    def btf(self) -> Any:
        """The BTF holding struct kvm_vcpu (vmlinux, or a kvm module's split BTF), or an exception."""
        def load() -> btfmod.Btf:
            if self.btf_path:
                return btfmod.load(self.btf_path, self.btf_base)
            vmlinux = self.root.join("/sys/kernel/btf/vmlinux")
            kvm = self.root.join("/sys/kernel/btf/kvm")
            if os.path.exists(kvm):  # KVM as a module: its split BTF sees vmlinux's types too
                return btfmod.load(kvm, vmlinux)
            return btfmod.load(vmlinux)
        return self.once("btf", load)


def resolve_role(root: Root, role: str) -> str:
    """``auto`` -> ``host`` when /dev/kvm exists, else ``guest`` when the CPU says hypervisor."""
    if role in ("host", "guest"):
        return role
    if root.exists("/dev/kvm"):
        return "host"
    flags = (root.read("/proc/cpuinfo") or "")
    return "guest" if " hypervisor" in flags else "host"


# -- the checks ------------------------------------------------------------------------------

def check_clocksource(c: Context) -> Check:
    base = "/sys/devices/system/clocksource/clocksource0"
    cur = (c.root.read(f"{base}/current_clocksource") or "").strip()
    avail = (c.root.read(f"{base}/available_clocksource") or "").split()
    value = {"current": cur or None, "available": avail}
    if not cur:
        return Check("clocksource", FAIL, value, f"{base}/current_clocksource unreadable",
                     "is sysfs mounted? (mount -t sysfs sysfs /sys)")
    if cur == "tsc":
        return Check("clocksource", OK, value, f"current_clocksource={cur}")
    fix = ("boot the guest with no-kvmclock (roles/tsalign_guest) and give the VM an invariant TSC "
           "(roles/tsalign_libvirt: invtsc)" if c.role == "guest" else
           "the kernel rejected the TSC (see dmesg 'TSC unstable'); fix firmware/BIOS or boot with tsc=reliable")
    return Check("clocksource", WARN, value, f"current_clocksource={cur}", fix)


def check_tsc_flags(c: Context) -> Check:
    flags = set(c.cpuinfo_flags)
    names = ("tsc", "constant_tsc", "nonstop_tsc", "tsc_known_freq", "tsc_reliable", "hypervisor")
    value = {n: n in flags for n in names}
    if not flags:
        return Check("tsc_flags", FAIL, value, "/proc/cpuinfo has no flags line", "is /proc mounted?")
    ev = " ".join(n for n in names if n in flags)
    if value["constant_tsc"] and value["nonstop_tsc"]:
        return Check("tsc_flags", OK, value, f"cpu flags: {ev}")
    missing = [n for n in ("constant_tsc", "nonstop_tsc") if not value[n]]
    fix = ("give the VM an invariant TSC: <feature policy='require' name='invtsc'/> (roles/tsalign_libvirt)"
           if value["hypervisor"] else "this CPU has no invariant TSC: TSC timestamps may drift across P/C-states")
    return Check("tsc_flags", WARN, value, f"missing {', '.join(missing)}; cpu flags: {ev}", fix)


def check_kernel_cmdline(c: Context) -> Check:
    words = c.cmdline.split()
    opts = {w.split("=", 1)[0]: (w.split("=", 1)[1] if "=" in w else True) for w in words if "=" in w or w}
    value = {"no_kvmclock": "no-kvmclock" in words, "tsc": opts.get("tsc"), "clocksource": opts.get("clocksource")}
    ev = " ".join(w for w in words if w == "no-kvmclock" or w.startswith(("tsc=", "clocksource=", "no-kvmclock")))
    ev = f"/proc/cmdline: {ev or '(no clock options)'}"
    if c.role != "guest" or value["no_kvmclock"]:
        return Check("kernel_cmdline", OK, value, ev)
    return Check("kernel_cmdline", WARN, value, ev,
                 "add no-kvmclock to the guest kernel command line and reboot (roles/tsalign_guest)")


def check_sched_clock(c: Context) -> Check:
    log = c.log
    on_kvm = dmesg.sched_clock_from_log(log) if log else None
    flags = set(c.cpuinfo_flags)
    if "no-kvmclock" in c.cmdline.split():
        return Check("sched_clock", OK, "tsc", "no-kvmclock on /proc/cmdline: sched_clock is the TSC")
    if on_kvm:
        line = next((ln for ln in (log or "").splitlines() if "kvm-clock: using sched offset" in ln), "")
        off = dmesg.kvm_sched_offset_from_log(log or "")
        routes = ["x86-tsc trace clock", "guest calibration"] + (["host pvclock (local clock)"] if off is not None else [])
        stable = dmesg.sched_clock_stable_from_log(log or "")
        lag = ("; sched_clock never marked stable: perf timestamps (local_clock) lag after a vCPU was away, prefer "
               "the local or x86-tsc trace clock" if stable is False else "")
        return Check("sched_clock", WARN, "kvm-clock", f"kernel log: {line.strip()} (kvm_sched_clock_offset {off} ns); "
                     f"routes without a reboot: {', '.join(routes)}{lag}",
                     "perf/local-clock timestamps of this kernel are kvm-clock ns, not TSC. Without a reboot: record "
                     "with ftrace trace_clock=x86-tsc (tsalign capture does), capture with --clock local and align "
                     "with the host's traced pvclock records (tsalign capture --role host records them), or convert "
                     "perf/local timestamps with a calibration measured here (tsalign calibrate -o FILE; align "
                     "--guest-calibration FILE); or boot with no-kvmclock")
    if "hypervisor" not in flags:
        return Check("sched_clock", OK, "tsc", "no hypervisor flag: native sched_clock runs on the TSC")
    if log is None:
        return Check("sched_clock", WARN, "unknown", "kernel log unreadable (/dev/kmsg needs root)",
                     "run as root so the kernel log can be read")
    return Check("sched_clock", OK, "tsc", "kernel log has no 'kvm-clock: using sched offset' line")


def check_perf_tsc_conversion(c: Context) -> Check:
    if not c.root.is_live:
        return Check("perf_tsc_conversion", SKIP, None, "needs the live machine (perf_event_open)", "")
    if platform.machine() != "x86_64":
        return Check("perf_tsc_conversion", SKIP, None, f"{platform.machine()}: TSC is x86-64 only")
    page = c.once("perf_page", perfpage.read_user_page)
    if isinstance(page, Exception):
        paranoid = (c.root.read("/proc/sys/kernel/perf_event_paranoid") or "?").strip()
        return Check("perf_tsc_conversion", WARN, {"supported": False}, f"{page}; perf_event_paranoid={paranoid}",
                     "run as root or lower /proc/sys/kernel/perf_event_paranoid")
    value = {"supported": False, **page.to_dict()}
    why = perfpage.conversion_verdict(page)
    ev = (f"perf user page: caps={page.capabilities:#x} cap_user_time={int(page.cap_user_time)} "
          f"cap_user_time_zero={int(page.cap_user_time_zero)} time_mult={page.time_mult} time_shift={page.time_shift}")
    if why is None:
        value["supported"] = True
        return Check("perf_tsc_conversion", OK, value, ev)
    value["reason"] = "TSC conversion is not supported: " + why
    return Check("perf_tsc_conversion", WARN, value, ev + "; " + why,
                 "guest: boot with no-kvmclock and give the VM invtsc; meanwhile record with ftrace x86-tsc")


def _mounted(c: Context, fstype: str, target: str) -> tuple[str | None, bool, str]:
    """(directory of ``fstype`` or None, mounted by this run, why not) -- mounting at ``target``
    only with ``--mount`` on the live machine."""
    d = getattr(c, fstype)
    if d is not None:
        return d, False, ""
    err = None
    if c.mount and c.root.is_live:
        err = mounts.mount(fstype, target)
        c._cache.pop(fstype, None)
        d = getattr(c, fstype)
    return d, d is not None, err or f"{fstype} is not mounted"


def check_tracefs(c: Context) -> Check:
    d, mounted_now, why = _mounted(c, "tracefs", mounts.TRACEFS_DEFAULT)
    if d is None:
        return Check("tracefs", FAIL, {"mounted": False}, why,
                     "tsalign precheck --mount, or: mount -t tracefs nodev /sys/kernel/tracing")
    value = {"mounted": True, "path": d, "mounted_by_precheck": mounted_now,
             "instances_writable": c.root.writable(f"{d}/instances")}
    if not c.root.exists(f"{d}/instances"):
        if c.root.is_live and os.geteuid() != 0:  # tracefs is mode 0700: nothing inside is visible
            return Check("tracefs", FAIL, value, f"{d} is not readable by uid {os.geteuid()}", "run as root")
        return Check("tracefs", FAIL, value, f"{d}/instances missing", "a kernel with tracing instances (>= 3.10)")
    if not value["instances_writable"]:
        return Check("tracefs", FAIL, value, f"{d}/instances not writable", "run as root")
    return Check("tracefs", OK, value, f"tracefs at {d}" + (" (mounted now)" if mounted_now else ""))


def check_trace_clock_x86_tsc(c: Context) -> Check:
    d = c.tracefs
    if d is None:
        return Check("trace_clock_x86_tsc", SKIP, None, "tracefs not mounted", "tsalign precheck --mount")
    clocks = (c.root.read(f"{d}/trace_clock") or "").split()
    names = [x.strip("[]") for x in clocks]
    value = {"available": names, "x86_tsc": "x86-tsc" in names}
    if value["x86_tsc"]:
        return Check("trace_clock_x86_tsc", OK, value, f"{d}/trace_clock offers x86-tsc")
    return Check("trace_clock_x86_tsc", FAIL, value, f"{d}/trace_clock: {' '.join(clocks) or 'unreadable'}",
                 "x86-tsc needs an x86 kernel; without it trace timestamps cannot be put on the TSC axis")


def check_debugfs(c: Context) -> Check:
    d, mounted_now, why = _mounted(c, "debugfs", mounts.DEBUGFS_DEFAULT)
    if d is None:
        return Check("debugfs", FAIL if c.role == "host" else WARN, {"mounted": False}, why,
                     "tsalign precheck --mount, or: mount -t debugfs nodev /sys/kernel/debug")
    kvm = c.root.exists(f"{d}/kvm")
    value = {"mounted": True, "path": d, "kvm_dir": kvm, "mounted_by_precheck": mounted_now}
    if c.role == "host" and not kvm:
        return Check("debugfs", WARN, value, f"{d}/kvm missing: KVM not loaded", "modprobe kvm_intel (or kvm_amd)")
    return Check("debugfs", OK, value, f"debugfs at {d}" + (", kvm/ present" if kvm else ""))


def check_kprobe_events(c: Context) -> Check:
    d = c.tracefs
    if d is None:
        return Check("kprobe_events", SKIP, None, "tracefs not mounted", "tsalign precheck --mount")
    present = c.root.exists(f"{d}/kprobe_events")
    pmu = c.root.exists("/sys/bus/event_source/devices/kprobe")
    value: dict[str, Any] = {"kprobe_events": present, "kprobe_pmu": pmu}
    if present:
        ours = [ln.strip() for ln in (c.root.read(f"{d}/kprobe_events") or "").splitlines()
                if ln.startswith("p:tsalign/")]
        value["tsalign_kprobes"] = ours
        return Check("kprobe_events", OK, value, f"{d}/kprobe_events exists"
                     + (f"; tsalign's kprobe registered: {ours[0]}" if ours else ""))
    status = WARN if c.role == "host" else SKIP
    return Check("kprobe_events", status, value,
                 f"{d}/kprobe_events absent and kprobe PMU {'present' if pmu else 'absent'}: "
                 "kprobe route unavailable (CONFIG_KPROBE_EVENTS=n)",
                 "use the debugfs route (tsalign offsets); or a kernel with CONFIG_KPROBE_EVENTS=y")


def check_kvm_tracepoints(c: Context) -> Check:
    if c.role != "host":
        return Check("kvm_tracepoints", SKIP, None, "guest role: host-only check")
    d = c.tracefs
    if d is None:
        return Check("kvm_tracepoints", SKIP, None, "tracefs not mounted", "tsalign precheck --mount")
    have = set(c.root.listdir(f"{d}/events/kvm"))
    value = {e: e in have for e in KVM_EVENTS}
    if not have:
        return Check("kvm_tracepoints", FAIL, value, f"{d}/events/kvm missing", "load KVM (modprobe kvm)")
    missing = [e for e, ok in value.items() if not ok]
    status = OK if value["kvm_write_tsc_offset"] else WARN
    return Check("kvm_tracepoints", status, value,
                 f"{len(have)} kvm events" + (f"; missing {', '.join(missing)}" if missing else ""),
                 "" if status == OK else "kvm_write_tsc_offset is needed to see offset changes during a capture")


def check_evidence_events(c: Context) -> Check:
    """Which evidence kinds (tsalign.catalogue) this node's tracefs can record for its role."""
    from ..catalogue import CATALOGUE

    d = c.tracefs
    if d is None:
        return Check("evidence_events", SKIP, None, "tracefs not mounted", "tsalign precheck --mount")
    side = "host" if c.role == "host" else "guest"

    def exists(ev: str) -> bool:
        system, _, name = ev.partition(":")
        return bool(name) and c.root.exists(f"{d}/events/{system}/{name}")

    value: dict[str, list[str]] = {}
    usable = []
    for k in CATALOGUE:
        events = k.host_events if side == "host" else k.guest_events
        have = [e for e in events if " " in e or exists(e)]  # "any guest event" / tsalign's own markers
        value[k.name] = have
        if [e for e in have if " " not in e] or "any guest event" in have:
            usable.append(k.name)
    if not usable:
        return Check("evidence_events", WARN, value, f"{side}: no tracepoint of any evidence kind exists here",
                     "alignments of this node's captures will be 'unverified'; enable kvm/sched/msr tracepoints")
    return Check("evidence_events", OK, value, f"{side} can record evidence: {', '.join(usable)}")


def check_btf(c: Context) -> Check:
    if c.role != "host":  # BTF computes the host's kvm_vcpu offsets; a guest needs none
        return Check("btf", SKIP, None, "guest role: host-only check (BTF gives the host's kvm_vcpu member offsets)")
    b = c.btf()
    if isinstance(b, Exception):
        return Check("btf", FAIL, {"readable": False}, str(b),
                     "a kernel built with CONFIG_DEBUG_INFO_BTF=y, or --btf FILE [--btf-base vmlinux.btf]")
    value = {"readable": True, "path": b.source, "types": b.type_count,
             "base": b.base.source if b.base else None}
    return Check("btf", OK, value, f"{b.source}: {b.type_count} types" + (f" (split on {b.base.source})" if b.base else ""))


def check_kvm_tsc_offset_member(c: Context) -> Check:
    if c.role != "host":
        return Check("kvm_tsc_offset_member", SKIP, None, "guest role: host-only check")
    b = c.btf()
    if isinstance(b, Exception):
        return Check("kvm_tsc_offset_member", SKIP, None, f"no BTF: {b}", "see the btf check")
    value: dict[str, Any] = {"btf": b.source}
    errors = []
    for path in TSC_MEMBERS:
        try:
            value[path] = b.offsetof("kvm_vcpu", path).offset
        except btfmod.BtfError as e:
            value[path] = None
            errors.append(str(e))
    if value["arch.tsc_offset"] is None:
        return Check("kvm_tsc_offset_member", FAIL, value, "; ".join(errors),
                     "give the BTF that holds struct kvm_vcpu (/sys/kernel/btf/kvm with --btf-base vmlinux)")
    ev = ", ".join(f"offsetof(struct kvm_vcpu, {p})={value[p]:#x}" for p in TSC_MEMBERS if value[p] is not None)
    return Check("kvm_tsc_offset_member", OK, value, ev)


def kprobe_plan(c: Context, function: str | None = None) -> dict[str, Any]:
    """The kprobe to register: chosen function (or ``function``), member offset, rendered line.

    Raises BtfError / Unavailable when BTF or a traceable candidate is missing.
    """
    b = c.btf()
    if isinstance(b, Exception):
        # no BTF: the DWARF of the kernel's debug package, when installed (tsalign.kernel.routes)
        from ..kernel.routes import DEBUG_PACKAGES, debug_file_for_running_kernel, member_offsets

        dbg = debug_file_for_running_kernel(c.root.path) if not c.btf_path else None
        if dbg is None:
            if c.btf_path:
                raise b
            raise Unavailable(f"{b}; without BTF, the DWARF of the kernel's debug package gives the offsets "
                              f"({DEBUG_PACKAGES})")
        doc = member_offsets("kvm_vcpu", ["arch.tsc_offset", "vcpu_id"], debuginfo=dbg)
        member_offset, vcpu_id_offset = (m["offset"] for m in doc["members"])
        # without BTF no prototype is known: the preferred names take struct kvm_vcpu * first on every kernel
        cands, route, source = list(kprobe.PREFERRED), "dwarf", dbg
    else:
        member_offset = b.offsetof("kvm_vcpu", "arch.tsc_offset").offset
        vcpu_id_offset = b.offsetof("kvm_vcpu", "vcpu_id").offset
        cands, route, source = b.functions_with_first_arg("kvm_vcpu"), "split-btf" if b.base else "btf", b.source
    if function is None:
        traceable, ksyms = c.symbol_lists()
        blacklist = c.root.read(f"{c.debugfs}/kprobes/blacklist") if c.debugfs else None
        choice = kprobe.choose_function(cands, traceable, ksyms, kprobe.parse_blacklist(blacklist) if blacklist else set())
        function, verified, why = choice.function, choice.verified_by, choice.why
    else:
        if function not in cands:
            raise kprobe.InvalidParameter("--function", function,
                                          "a function whose first argument is struct kvm_vcpu * "
                                          f"(e.g. {', '.join(n for n in kprobe.PREFERRED if n in cands) or cands[0]})")
        verified, why = "user", "given with --function"
    return {"function": function, "verified_by": verified, "why": why, "candidates": len(cands),
            "member_offset": member_offset, "vcpu_id_offset": vcpu_id_offset, "btf": source,
            "offsets_route": route, "offsets_source": source,
            "seed_function_present": "kvm_vcpu_kick" in cands,
            "kprobe": kprobe.render(function, member_offset, vcpu_id_offset), "event": kprobe.event_name(function)}


def check_kprobe_function(c: Context) -> Check:
    if c.role != "host":
        return Check("kprobe_function", SKIP, None, "guest role: host-only check")
    if isinstance(c.btf(), Exception):
        return Check("kprobe_function", SKIP, None, f"no BTF: {c.btf()}", "see the btf check")
    value = c.once("kprobe_plan", lambda: kprobe_plan(c))
    if isinstance(value, Exception):
        return Check("kprobe_function", FAIL, None, str(value), "")
    note = "" if value["seed_function_present"] else "; kvm_vcpu_kick (the note's choice) is not a function here"
    return Check("kprobe_function", OK, value,
                 f"{value['function']} (first arg struct kvm_vcpu *, in {value['verified_by']}; "
                 f"{value['candidates']} candidates){note}")


def check_kvm_vms(c: Context) -> Check:
    if c.role != "host":
        return Check("kvm_vms", SKIP, None, "guest role: host-only check")
    vms = kvmvms.discover_vms(c.root)
    value = [vm.to_dict() for vm in vms]
    if not vms:
        return Check("kvm_vms", OK, value, "no VMs running")
    disagree = [vm for vm in vms if not vm.offsets_agree]
    ev = "; ".join(
        f"pid {vm.pid} fd {vm.vm_fd} {vm.name or vm.comm}: "
        + ", ".join(f"vcpu{v.id}={v.tsc_offset}" for v in vm.vcpus) for vm in vms)
    if disagree:
        return Check("kvm_vms", WARN, value, ev,
                     "vCPUs of one VM have different TSC offsets: events are converted per vCPU; "
                     "check the guest for TSC writes (kvm:kvm_write_tsc_offset)")
    notes = [n for vm in vms for n in vm.notes]
    return Check("kvm_vms", WARN if notes else OK, value, ev + ("; " + "; ".join(notes) if notes else ""),
                 "tsalign precheck --mount" if notes else "")


def check_kernel_build(c: Context) -> Check:
    """The kernel build (release, build ids) and the offset routes it offers, for a fleet's per-build
    table (``tsalign kernels``): the node's own offsets where it has BTF or debug info, and the preferred
    kprobe functions it can trace (so a controller that resolves the offsets can render its kprobe)."""
    if c.role != "host":
        return Check("kernel_build", SKIP, None, "guest role: host-only check")
    from ..kernel.routes import kernel_identity

    value: dict[str, Any] = kernel_identity(c.root.path)
    traceable, ksyms = c.symbol_lists()
    listed = traceable if traceable is not None else ksyms if ksyms is not None else set()
    value["traceable"] = [f for f in kprobe.PREFERRED if f in listed]
    value["traceable_from"] = ("available_filter_functions" if traceable is not None else
                               "kallsyms" if ksyms is not None else None)
    plan = c.once("kprobe_plan", lambda: kprobe_plan(c))  # no route on the node is this check's finding
    if isinstance(plan, Exception):
        value["offsets"] = None
        value["offsets_error"] = str(plan)
    else:
        value["offsets"] = {"arch.tsc_offset": plan["member_offset"], "vcpu_id": plan["vcpu_id_offset"],
                            "route": plan["offsets_route"], "source": plan["offsets_source"]}
    ident = f"{value['release']} ({value['kvm_file']} build id {value['build_id'] or 'unknown'})"
    if value["offsets"] is not None:
        return Check("kernel_build", OK, value, f"{ident}: struct offsets by {value['offsets']['route']} on the node")
    return Check("kernel_build", WARN, value,
                 f"{ident}: no BTF and no debug info here, so no struct offsets on the node ({value['offsets_error']})",
                 f"the controller resolves them once per build from debug info (tsalign kernels --debuginfo-dir DIR); "
                 f"or install {value['debug_package']}")


def check_kvm_memory_offsets(c: Context) -> Check:
    if c.role != "host":
        return Check("kvm_memory_offsets", SKIP, None, "guest role: host-only check")
    if not c.root.is_live:
        return Check("kvm_memory_offsets", SKIP, None, "needs the live machine")
    if not os.path.exists("/proc/kcore"):
        return Check("kvm_memory_offsets", SKIP, None,
                     "no /proc/kcore (CONFIG_PROC_KCORE=n): kernel memory cannot be read; debugfs is the source")
    try:
        from . import memory
    except ImportError as e:
        return Check("kvm_memory_offsets", SKIP, None, f"drgn not installed ({e})", "pip install drgn")
    try:
        found = memory.read_tsc_offsets()
    except Exception as e:  # noqa: BLE001 - drgn raises many kinds
        return Check("kvm_memory_offsets", SKIP, None, f"drgn cannot read the live kernel: {e}")
    return Check("kvm_memory_offsets", OK, found, f"{len(found)} vCPU offsets read from kernel memory")


CHECKS: list[Callable[[Context], Check]] = [
    check_clocksource, check_tsc_flags, check_kernel_cmdline, check_sched_clock, check_perf_tsc_conversion,
    check_tracefs, check_trace_clock_x86_tsc, check_debugfs, check_kprobe_events, check_kvm_tracepoints,
    check_evidence_events, check_btf, check_kvm_tsc_offset_member, check_kprobe_function, check_kernel_build,
    check_kvm_vms, check_kvm_memory_offsets,
]


@dataclass
class Report:
    role: str
    root: str
    kernel: str | None
    tsc_khz: int | None
    checks: list[Check]
    elapsed_ms: int

    @property
    def verdict(self) -> str:
        """pass / warn / fail (tsalign.verdicts) from the checks' statuses (ok / warn / fail / skip)."""
        statuses = {ch.status for ch in self.checks}
        return verdicts.FAIL if FAIL in statuses else verdicts.WARN if WARN in statuses else verdicts.PASS

    def check(self, cid: str) -> Check:
        return next(ch for ch in self.checks if ch.id == cid)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "role": self.role, "root": self.root, "kernel": self.kernel,
                "tsc_khz": self.tsc_khz, "elapsed_ms": self.elapsed_ms,
                "checks": [ch.to_dict() for ch in self.checks]}


def run_checks(root: Root | None = None, role: str = "auto", mount: bool = False,
               btf_path: str | None = None, btf_base: str | None = None) -> Report:
    """Run every check against ``root`` (default: this machine)."""
    t0 = time.monotonic()
    root = root or Root()
    ctx = Context(root, resolve_role(root, role), mount, btf_path, btf_base)
    results = []
    for fn in CHECKS:
        try:
            results.append(fn(ctx))
        except Exception as e:  # noqa: BLE001 - never a traceback from a probe
            results.append(Check(fn.__name__[6:], FAIL, None, f"probe error: {type(e).__name__}: {e}",
                                 "please report this as a tsalign bug"))
    log = ctx.log
    kernel = (root.read("/proc/sys/kernel/osrelease") or "").strip() or None
    return Report(ctx.role, root.path, kernel, dmesg.tsc_khz_from_log(log) if log else None, results,
                  int((time.monotonic() - t0) * 1000))
