"""A real libvirtd for the libvirt role tests: started by the tests when it is not running (PID 1
is not systemd here), stopped again by whoever started it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

__all__ = ["ensure_running", "kvm_device_for_qemu", "restore_kvm_device", "stop"]


def _pids(name: str) -> list:
    r = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def kvm_device_for_qemu() -> tuple | None:
    """Give /dev/kvm to group kvm, mode 0660, as Debian's udev rules do (this machine has no udev):
    libvirt runs qemu as libvirt-qemu, a member of kvm. Returns the previous (mode, gid) to restore."""
    import grp

    try:
        st = os.stat("/dev/kvm")
        gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        return None
    if st.st_gid == gid and st.st_mode & 0o060 == 0o060:
        return None
    os.chown("/dev/kvm", -1, gid)
    os.chmod("/dev/kvm", (st.st_mode & 0o7777) | 0o060)
    return (st.st_mode & 0o7777, st.st_gid)


def restore_kvm_device(previous: tuple | None) -> None:
    if previous:
        os.chmod("/dev/kvm", previous[0])
        os.chown("/dev/kvm", -1, previous[1])


def _answers() -> bool:
    try:
        return subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True,
                              timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _wait_gone(names: tuple, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while any(_pids(n) for n in names) and time.monotonic() < deadline:
        time.sleep(0.1)


def ensure_running(timeout: float = 30) -> dict[str, list] | None:
    """Start virtlogd and libvirtd if they are not running; returns what was started (or None when
    libvirtd is not installed)."""
    if not shutil.which("libvirtd"):
        return None
    started: dict[str, list] = {}
    if not _answers():
        _wait_gone(("libvirtd",))  # one that an earlier test stopped may still be exiting
    for daemon in ("virtlogd", "libvirtd"):
        if not _pids(daemon):
            subprocess.run([daemon, "-d"], check=True)
            started[daemon] = []
    deadline = time.monotonic() + timeout
    while not _answers():
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd did not answer on qemu:///system")
        time.sleep(0.2)
    for daemon in started:
        started[daemon] = _pids(daemon)
    return started


def stop(started: dict[str, list] | None) -> None:
    """Stop what :func:`ensure_running` started, and wait until it is gone."""
    for daemon in ("libvirtd", "virtlogd"):
        for pid in (started or {}).get(daemon, []):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    _wait_gone(tuple(d for d in ("libvirtd", "virtlogd") if (started or {}).get(d)))


def domain_xml(name: str, kind: str, uuid_str: str) -> str:
    """A minimal real domain: ``kvm`` (host-passthrough, arch-capabilities disabled so invtsc can
    start under PVM), ``qemu`` (TCG, qemu64) or ``nocpu`` (TCG, no <cpu> element)."""
    cpu = {
        "kvm": "<cpu mode='host-passthrough'><feature policy='disable' name='arch-capabilities'/></cpu>",
        "qemu": "<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>",
        "nocpu": "",
    }[kind]
    dtype = "kvm" if kind == "kvm" else "qemu"
    return f"""<domain type='{dtype}'>
  <name>{name}</name>
  <uuid>{uuid_str}</uuid>
  <description>tsalign test domain: keep me</description>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><serial type='pty'/></devices>
</domain>"""


def up() -> dict[str, object]:
    """libvirtd running, /dev/kvm usable by qemu, two fresh test domains defined."""
    import uuid

    import libvirt

    started = ensure_running()
    if started is None:
        raise RuntimeError("libvirtd is not installed (make test installs libvirt-daemon-system)")
    st: dict[str, object] = {"started": started, "kvm_mode": kvm_device_for_qemu(), "domains": {}}
    conn = libvirt.open("qemu:///system")
    try:
        tag = uuid.uuid4().hex[:6]
        for kind in ("kvm", "qemu"):
            name = f"tsalign-mol-{kind}-{tag}"
            conn.defineXML(domain_xml(name, kind, str(uuid.uuid4())))
            st["domains"][name] = conn.lookupByName(name).UUIDString()  # type: ignore[index]
    finally:
        conn.close()
    return st


def down(st: dict[str, object]) -> None:
    import libvirt

    try:
        conn = libvirt.open("qemu:///system")
        for name in st.get("domains", {}):  # type: ignore[union-attr]
            try:
                d = conn.lookupByName(name)
                if d.isActive():
                    d.destroy()
                d.undefine()
            except libvirt.libvirtError:
                pass
        conn.close()
    except libvirt.libvirtError:
        pass
    restore_kvm_device(st.get("kvm_mode"))  # type: ignore[arg-type]
    stop(st.get("started"))  # type: ignore[arg-type]


if __name__ == "__main__":
    import argparse

    from tests.infra.statecli import run_state_cli

    ap = argparse.ArgumentParser(description="libvirtd + test domains for the libvirt molecule scenario")
    ap.add_argument("action", choices=("up", "down"))
    ap.add_argument("--state", required=True)
    a = ap.parse_args()
    run_state_cli(a.action, a.state, up, down)
