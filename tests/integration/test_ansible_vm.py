"""The guest role on a real VM that boots through its own GRUB (qemu TCG): update-grub, reboot
(allowed here), /proc/cmdline verified by testinfra. The same VM, a real kernel with kprobe_events
and KVM as a module, then proves the kprobe route: member offset from its split BTF equals pahole's,
registration is idempotent and leaves other kprobes alone."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import need
from tests.infra import vm
from tests.infra.artefacts import cached

REPO = Path(__file__).resolve().parents[2]
CACHE = os.environ.get("TSALIGN_CACHE", "/var/cache/tsalign")
BIN = Path(sys.executable).parent


def _image() -> str:
    return cached("TSALIGN_VM_IMAGE", "vm-bookworm-*", "GRUB VM image (scripts/build-vm-image.sh)")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0",
           "ANSIBLE_FORCE_COLOR": "0", "TSALIGN_VM_IMAGE": _image()}
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    if check:
        assert r.returncode == 0, f"{' '.join(argv)}:\n{r.stdout[-5000:]}\n{r.stderr[-2000:]}"
    return r


def _pahole(struct: str, member: str, base: str, split: str) -> int:
    out = subprocess.run(["pahole", "-C", struct, "--btf_base", base, split], capture_output=True, text=True).stdout
    m = re.search(rf"\s{re.escape(member)};\s+/\*\s+(\d+)\s+\d+\s+\*/", out)
    assert m, out[:1500]
    return int(m.group(1))


def test_guest_role_reboots_grub_vm_and_kprobe_route(tmp_path: Path) -> None:
    need(os.geteuid() == 0 and shutil.which("qemu-system-x86_64"), "needs root and qemu-system-x86 (make test)")
    need(shutil.which("molecule", path=str(BIN)), "molecule not installed in the venv (make test)")
    _image()
    run("molecule", "destroy", "-s", "guest-vm")
    st: dict = {}
    try:
        run("molecule", "create", "-s", "guest-vm")
        r = run("molecule", "converge", "-s", "guest-vm")
        assert "Reboot the guest" in r.stdout and re.search(r"grub-vm\s+: ok=\d+\s+changed=[1-9]", r.stdout)
        run("molecule", "idempotence", "-s", "guest-vm")
        r = run("molecule", "verify", "-s", "guest-vm")
        assert "3 passed" in r.stdout + r.stderr and not re.search(r"\d+ (skipped|failed|error)", r.stdout + r.stderr)
        state = max(glob.glob(os.path.expanduser("~/.ansible/tmp/molecule.*.guest-vm/vm.json")), key=os.path.getmtime)
        st = json.loads(Path(state).read_text())
        _kprobe_route(st, tmp_path)
    finally:
        run("molecule", "destroy", "-s", "guest-vm", check=False)
    # destroy stopped this scenario's QEMU (the nested lab's L1 may be running beside this test: make test)
    assert not subprocess.run(["pgrep", "-f", f"qemu-system-x86_64 .*{st['work']}/"], capture_output=True).stdout


def _kprobe_route(st: dict, tmp_path: Path) -> None:
    py = "cd /opt/tsalign/lib && python3 -m tsalign"
    r = vm.ssh(st, "modprobe kvm && echo 'p:other do_sys_openat2' >> /sys/kernel/tracing/kprobe_events && "
                   f"{py} kprobe register --json", timeout=120)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["status"] == "registered" and first["changed"] is True and first["btf"] == "/sys/kernel/btf/kvm"
    again = json.loads(vm.ssh(st, f"{py} kprobe register --json", timeout=120).stdout)
    assert again["changed"] is False
    events = vm.ssh(st, "cat /sys/kernel/tracing/kprobe_events").stdout.splitlines()
    assert first["kprobe"] in events and "p:kprobes/other do_sys_openat2" in events
    gone = json.loads(vm.ssh(st, f"{py} kprobe unregister --json", timeout=120).stdout)
    assert gone["changed"] is True
    assert vm.ssh(st, "cat /sys/kernel/tracing/kprobe_events").stdout.split("\n")[0] == "p:kprobes/other do_sys_openat2"
    # the member offset equals pahole's on the VM kernel's own BTF (vmlinux + kvm split)
    if shutil.which("pahole"):
        for name in ("vmlinux", "kvm"):  # cat, not scp: scp stops at 8 KiB of a sysfs binary file
            data = subprocess.run(["ssh", "-i", st["key"], "-p", str(st["port"]), "-o", "StrictHostKeyChecking=no",
                                   "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "root@127.0.0.1",
                                   f"cat /sys/kernel/btf/{name}"], capture_output=True, check=True).stdout
            (tmp_path / f"{name}.btf").write_bytes(data)
        want = (_pahole("kvm_vcpu", "arch", str(tmp_path / "vmlinux.btf"), str(tmp_path / "kvm.btf"))
                + _pahole("kvm_vcpu_arch", "tsc_offset", str(tmp_path / "vmlinux.btf"), str(tmp_path / "kvm.btf")))
        assert first["member_offset"] == want
    # after the role's reboot the guest runs without kvm-clock: its precheck says so
    pc = json.loads(vm.ssh(st, f"{py} precheck --role guest --json", timeout=120).stdout)
    checks = {c["id"]: c for c in pc["checks"]}
    assert checks["kernel_cmdline"]["value"]["no_kvmclock"] is True
    assert checks["sched_clock"]["value"] == "tsc"
