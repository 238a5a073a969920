"""Node probes against the real kernel of this machine (root, tracefs, debugfs, BTF, /dev/kvm).

Expected values come from independent sources read in the test (sysfs directly, the `dmesg`
command, `pahole`), not from tsalign itself.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tsalign.node.checks import run_checks
from tsalign.node.fs import Root

IS_ROOT = os.geteuid() == 0


def tsalign(*args: str, check_rc: bool = False) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tsalign", *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def precheck_json(*args: str) -> dict:
    r = tsalign("precheck", "--json", *args)
    assert r.returncode in (0, 1, 6), r.stderr
    doc = json.loads(r.stdout)
    assert r.returncode == {"pass": 0, "warn": 6, "fail": 1}[doc["verdict"]]
    return {c["id"]: c for c in doc["checks"]} | {"_doc": doc}


def test_precheck_matches_independent_sources() -> None:
    need(IS_ROOT, "needs root (kernel log, debugfs)")
    need(os.path.exists("/sys/kernel/btf/vmlinux"), "needs BTF (/sys/kernel/btf/vmlinux)")
    checks = precheck_json("--mount")
    base = "/sys/devices/system/clocksource/clocksource0"
    assert checks["clocksource"]["value"]["current"] == Path(f"{base}/current_clocksource").read_text().strip()
    flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    assert checks["tsc_flags"]["value"]["nonstop_tsc"] == ("nonstop_tsc" in flags)
    kmsg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    on_kvmclock = "kvm-clock: using sched offset" in kmsg and "no-kvmclock" not in Path("/proc/cmdline").read_text()
    assert (checks["sched_clock"]["value"] == "kvm-clock") == on_kvmclock
    perf = checks["perf_tsc_conversion"]
    if on_kvmclock:
        # a kvm-clock sched_clock publishes no TSC conversion: perf-prof's "TSC conversion is not supported"
        assert perf["value"]["supported"] is False and perf["status"] == "warn"
        assert "TSC conversion is not supported" in perf["value"]["reason"]
        assert perf["value"]["cap_user_time_zero"] is False
    m = re.search(r"tsc: (?:Refined TSC clocksource calibration|Detected): (\d+)\.(\d+) MHz", kmsg)
    if m:
        assert checks["_doc"]["tsc_khz"] is not None and abs(checks["_doc"]["tsc_khz"] - int(m.group(1)) * 1000) < 1000
    for cid in ("tracefs", "debugfs", "trace_clock_x86_tsc", "btf", "kvm_tsc_offset_member"):
        assert checks[cid]["status"] == "ok", checks[cid]
    has_kprobe_events = os.path.exists(os.path.join(checks["tracefs"]["value"]["path"], "kprobe_events"))
    assert checks["kprobe_events"]["value"]["kprobe_events"] == has_kprobe_events
    assert checks["kprobe_events"]["status"] == ("ok" if has_kprobe_events else "warn")


def test_this_machine_facts() -> None:
    """The facts ../shared/ENVIRONMENT.md promises for this kind of machine (PVM nested KVM)."""
    need(IS_ROOT and os.path.exists("/sys/module/kvm_pvm"), "not a PVM machine of the project's kind")
    report = run_checks(Root(), "auto", mount=True)
    assert report.role == "host"
    assert report.check("clocksource").value["current"] == "tsc"
    assert report.check("sched_clock").value == "kvm-clock"
    assert report.check("perf_tsc_conversion").value["supported"] is False
    assert report.check("kprobe_events").value == {"kprobe_events": False, "kprobe_pmu": False}
    assert report.check("kvm_memory_offsets").status == "skip"
    assert "kcore" in report.check("kvm_memory_offsets").evidence


_UNMOUNT_ALL = ("for m in $(awk '$3==\"tracefs\"||$3==\"debugfs\"{print $2}' /proc/mounts | sort -r); "
                "do umount -l \"$m\"; done; ")


def _in_private_mount_ns(script: str) -> None:
    """Run ``script`` (sh) in a private mount namespace: its mounts and unmounts stay in there."""
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=180, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr[-2000:]


def _checks(path: Path) -> dict[str, Any]:
    return {c["id"]: c for c in json.loads(path.read_text())["checks"]}


def test_precheck_mounts_in_a_private_mount_namespace(tmp_path: Path) -> None:
    """--mount really mounts: in a private mount namespace (so this machine's mounts stay as they
    are) unmount every tracefs and debugfs (bind mounts into chroots included), then run the precheck
    with and without --mount."""
    need(IS_ROOT and shutil.which("unshare"), "needs root and unshare(1)")
    pc = f"{sys.executable} -m tsalign precheck --json"
    _in_private_mount_ns(_UNMOUNT_ALL + f"{pc} > {tmp_path}/before.json || true; "
                         f"{pc} --mount > {tmp_path}/after.json || true")
    before, after = _checks(tmp_path / "before.json"), _checks(tmp_path / "after.json")
    assert before["tracefs"]["status"] == "fail" and "--mount" in before["tracefs"]["fix"]
    assert before["debugfs"]["status"] == "fail"
    assert after["tracefs"]["status"] == "ok" and after["tracefs"]["value"]["mounted_by_precheck"]
    assert after["debugfs"]["status"] == "ok" and after["debugfs"]["value"]["mounted_by_precheck"]
    # and this machine's own mounts are untouched
    assert os.path.exists("/sys/kernel/tracing/trace_clock")


def test_precheck_prefers_the_usual_tracefs_mount(tmp_path: Path) -> None:
    """With tracefs mounted elsewhere first (a chroot's bind mount, as an SSH test target has), the precheck
    uses /sys/kernel/tracing when it is mounted too, and the other mount when it is the only one."""
    need(IS_ROOT and shutil.which("unshare"), "needs root and unshare(1)")
    other = tmp_path / "elsewhere"
    other.mkdir()
    pc = f"{sys.executable} -m tsalign precheck --json"
    _in_private_mount_ns(_UNMOUNT_ALL + f"mount -t tracefs nodev {other}; {pc} > {tmp_path}/only.json || true; "
                         f"mount -t tracefs nodev /sys/kernel/tracing; {pc} > {tmp_path}/both.json || true")
    only, both = _checks(tmp_path / "only.json"), _checks(tmp_path / "both.json")
    assert only["tracefs"]["status"] == "ok" and only["tracefs"]["value"]["path"] == str(other)
    assert both["tracefs"]["status"] == "ok" and both["tracefs"]["value"]["path"] == "/sys/kernel/tracing"
    assert not os.path.ismount(other)  # the namespace's mounts stayed in it


def _pahole_offset(struct_name: str, member: str, *btf: str) -> int:
    args = ["pahole", "-C", struct_name] + (["--btf_base", btf[0], btf[1]] if btf else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=120).stdout
    m = re.search(rf"\s{re.escape(member)};\s+/\*\s+(\d+)\s+\d+\s+\*/", out)
    assert m, f"pahole printed no {member} in {struct_name}:\n{out[:2000]}"
    return int(m.group(1))


@pytest.mark.parametrize("member", ["tsc_offset", "l1_tsc_offset", "tsc_scaling_ratio"])
def test_btf_offsets_equal_pahole_on_this_kernel(member: str) -> None:
    need(shutil.which("pahole"), "pahole not installed (make test installs it when root)")
    need(os.path.exists("/sys/kernel/btf/vmlinux"), "needs /sys/kernel/btf/vmlinux")
    want = _pahole_offset("kvm_vcpu", "arch") + _pahole_offset("kvm_vcpu_arch", member)
    r = tsalign("btf", "offsetof", "kvm_vcpu", f"arch.{member}", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["offset"] == want


def test_split_btf_of_a_debian_kernel_equals_pahole() -> None:
    """Real split BTF (kvm.ko of a Debian cloud kernel, fetched by scripts/fetch-split-btf.sh)."""
    cache = os.environ.get("TSALIGN_CACHE", "/var/cache/tsalign")
    dirs = sorted(glob.glob(f"{cache}/btf-*/kvm.btf"))
    need(dirs, f"no split BTF sample in {cache} (make test fetches one)")
    need(shutil.which("pahole"), "pahole not installed")
    d = os.path.dirname(dirs[-1])
    vml, kvm = f"{d}/vmlinux.btf", f"{d}/kvm.btf"
    want = _pahole_offset("kvm_vcpu", "arch", vml, kvm) + _pahole_offset("kvm_vcpu_arch", "tsc_offset", vml, kvm)
    r = tsalign("btf", "offsetof", "kvm_vcpu", "arch.tsc_offset", "--btf", kvm, "--btf-base", vml, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["offset"] == want
    r = tsalign("btf", "offsetof", "kvm_vcpu", "arch.tsc_offset", "--btf", kvm)
    assert r.returncode == 3 and "--btf-base" in r.stderr
    # the kprobe for that kernel: kvm_vcpu_kick exists there (the seed's choice)
    r = tsalign("kprobe", "render", "--btf", kvm, "--btf-base", vml, "--function", "kvm_vcpu_kick", "--json")
    assert r.returncode == 0, r.stderr
    vcpu_id = _pahole_offset("kvm_vcpu", "vcpu_id", vml, kvm)
    assert json.loads(r.stdout)["kprobe"] == (f"p:tsalign/kvm_vcpu_kick kvm_vcpu_kick tsc_offset=+{want:#x}(%di):u64 "
                                              f"vcpu_id=+{vcpu_id:#x}(%di):s32")


def test_kprobe_render_and_register_on_this_kernel() -> None:
    need(IS_ROOT and os.path.exists("/sys/kernel/btf/vmlinux"), "needs root and BTF")
    need(shutil.which("pahole"), "needs pahole (make deps installs dwarves)")
    want = _pahole_offset("kvm_vcpu", "arch") + _pahole_offset("kvm_vcpu_arch", "tsc_offset")
    r = tsalign("kprobe", "render", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["member_offset"] == want  # pahole reads the same BTF with its own code
    # the probe text as the kernel's kprobe_events syntax wants it, spelled here by hand from pahole's offset
    vcpu_id = _pahole_offset("kvm_vcpu", "vcpu_id")
    assert doc["kprobe"] == (f"p:tsalign/{doc['function']} {doc['function']} tsc_offset=+{hex(want)}(%di):u64 "
                             f"vcpu_id=+{hex(vcpu_id)}(%di):s32")
    fn = re.escape(doc["function"])
    assert re.search(rf"^[0-9a-f]+ [tTwW] {fn}(\s|$)", Path("/proc/kallsyms").read_text(), re.MULTILINE)  # a text symbol
    r = tsalign("kprobe", "register", "--json")
    doc = json.loads(r.stdout)
    if not os.path.exists("/sys/kernel/tracing/kprobe_events"):  # this machine's kernel has no kprobe events
        assert r.returncode == 0 and doc["status"] == "unavailable" and doc["changed"] is False
        assert "CONFIG_KPROBE_EVENTS" in doc["reason"] and "debugfs" in doc["reason"]
        return  # the registration itself is proved on the GRUB VM's kernel (test_ansible_vm) and in the lab's L1
    try:
        assert doc["status"] == "registered", doc
        # the kernel accepted it: the event exists and the kernel prints it back with the same fetch arg
        events = Path("/sys/kernel/tracing/kprobe_events").read_text()
        assert re.search(rf"^p:tsalign/{fn} {fn} tsc_offset=\+{hex(want)}\(%di\):u64 vcpu_id=\+{hex(vcpu_id)}\(%di\):s32$",
                         events, re.MULTILINE), events
        assert Path(f"/sys/kernel/tracing/events/tsalign/{doc['function']}/format").is_file()
    finally:
        tsalign("kprobe", "unregister")


def test_micro_vm_is_discovered_with_offsets_and_thread() -> None:
    need(IS_ROOT and os.path.exists("/dev/kvm"), "needs root and /dev/kvm")
    from tsalign.capture.microvm import MicroVM
    from tsalign.node import kvmvms

    with MicroVM() as vm:
        vm.run(beacons=3)  # the vCPU's thread id is known to KVM after its first KVM_RUN
        vms = [v for v in kvmvms.discover_vms(Root(), os.getpid()) if v.vm_fd == vm.vm_fd]
        assert len(vms) == 1
        found = vms[0]
        assert found.debugfs_dir == f"/sys/kernel/debug/kvm/{os.getpid()}-{vm.vm_fd}"
        assert [v.id for v in found.vcpus] == [0]
        assert found.vcpus[0].tid == vm.vcpu_tid
        debugfs_value = int(Path(f"{found.debugfs_dir}/vcpu0/tsc-offset").read_text())
        assert found.vcpus[0].tsc_offset == debugfs_value
        r = tsalign("offsets", "--pid", str(os.getpid()), "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert any(v["vm_fd"] == vm.vm_fd and v["vcpus"][0]["tsc_offset"] == debugfs_value for v in doc["vms"])
    # KVM removes the VM's debugfs dir once its last fd is closed
    assert not os.path.exists(found.debugfs_dir)


def test_offsets_bad_input() -> None:
    r = tsalign("offsets", "--vm", "no-such-domain-xyz")
    assert r.returncode == 3 and "no-such-domain-xyz" in r.stderr and "known:" in r.stderr
    r = tsalign("offsets", "--pid", "1")
    assert r.returncode == 4 and "pid 1" in r.stderr


def test_precheck_as_non_root_says_what_is_missing() -> None:
    need(IS_ROOT and shutil.which("setpriv"), "needs root (to drop to nobody) and setpriv(1)")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-m", "tsalign", "precheck", "--json"],
                       capture_output=True, text=True, timeout=120, cwd="/", env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    checks = {c["id"]: c for c in doc["checks"]}
    assert r.returncode in (1, 6)
    # tracefs instances are root-only: the check says so and how to fix it
    assert checks["tracefs"]["status"] == "fail" and checks["tracefs"]["fix"] == "run as root"
    assert doc["verdict"] == "fail"
    assert all(c["status"] in ("ok", "warn", "fail", "skip") for c in doc["checks"])


@pytest.mark.parametrize("content, needle", [(b"", "too short"), (b"\x7fELF" + b"\0" * 60, "not BTF")])
def test_precheck_with_foreign_or_truncated_btf(tmp_path, content: bytes, needle: str) -> None:
    f = tmp_path / "bad.btf"
    f.write_bytes(content)
    checks = precheck_json("--btf", str(f), "--role", "host")
    assert checks["btf"]["status"] == "fail" and needle in checks["btf"]["evidence"]
    assert "--btf" in checks["btf"]["fix"]
    assert checks["kvm_tsc_offset_member"]["status"] == "skip"
    # a guest needs no BTF (it computes no kvm_vcpu offsets): a guest without it is not failed for it
    checks = precheck_json("--btf", str(f), "--role", "guest")
    assert checks["btf"]["status"] == "skip" and "host-only" in checks["btf"]["evidence"]


def test_precheck_on_a_recorded_tree_of_this_machine(tmp_path) -> None:
    """--root reads a recorded tree: record this machine's files (the real source), then the
    file-based verdicts must equal the live ones."""
    need(os.path.exists("/sys/kernel/btf/vmlinux"), "needs BTF")
    root = tmp_path / "rec"
    files = ["/proc/cpuinfo", "/proc/cmdline", "/proc/sys/kernel/osrelease",
             "/sys/devices/system/clocksource/clocksource0/current_clocksource",
             "/sys/devices/system/clocksource/clocksource0/available_clocksource",
             "/sys/kernel/btf/vmlinux", "/sys/kernel/tracing/trace_clock"]
    for f in files:
        if os.path.exists(f):
            dst = root / f.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(Path(f).read_bytes())
    (root / "sys/kernel/tracing/instances").mkdir(parents=True)
    (root / "sys/kernel/tracing/events/kvm/kvm_write_tsc_offset").mkdir(parents=True)
    (root / "var/log").mkdir(parents=True)
    (root / "var/log/dmesg").write_text(subprocess.run(["dmesg"], capture_output=True, text=True).stdout)
    rec = run_checks(Root(str(root)), "host")
    live = run_checks(Root(), "host")
    for cid in ("clocksource", "tsc_flags", "kernel_cmdline", "sched_clock", "btf", "kvm_tsc_offset_member",
                "trace_clock_x86_tsc"):
        assert rec.check(cid).status == live.check(cid).status, cid
        if cid not in ("btf", "kvm_tsc_offset_member"):
            assert rec.check(cid).value == live.check(cid).value, cid
    rv, lv = rec.check("kvm_tsc_offset_member").value, live.check("kvm_tsc_offset_member").value
    assert {k: v for k, v in rv.items() if k != "btf"} == {k: v for k, v in lv.items() if k != "btf"}
    assert rec.check("perf_tsc_conversion").status == "skip"  # needs the live machine
    assert rec.tsc_khz == live.tsc_khz


def _oldest_python() -> str | None:
    cands = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python"))) + ["python3.9"]
    for cand in cands:
        path = shutil.which(cand)
        if path and subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0:
            return path
    return None


def test_target_side_code_is_stdlib_only_on_python39() -> None:
    """tsalign.node / kernel / clock (scalar) / offsets run on managed nodes: Python 3.9, no numpy."""
    py = _oldest_python()
    need(py, "no Python 3.9 interpreter here (pyenv or python3.9)")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from tsalign.node.checks import run_checks; from tsalign.kernel import btf, kprobe; "
        "from tsalign.clock import kvm, perf, pvclock; from tsalign.offsets import OffsetTimeline; "
        "from tsalign.capture import microvm, tracefs; "
        "r = run_checks(); assert 'numpy' not in sys.modules, 'numpy imported'; print(sys.version_info[:2], r.verdict)"
    )
    r = subprocess.run([py, "-I", "-c", code, os.getcwd()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("(3, 9)")
