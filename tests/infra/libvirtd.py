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


def ensure_running(timeout: float = 30) -> dict[str, list] | None:
    """Start virtlogd and libvirtd if they are not running; returns what was started (or None when
    libvirtd is not installed)."""
    if not shutil.which("libvirtd"):
        return None
    started: dict[str, list] = {}
    for daemon in ("virtlogd", "libvirtd"):
        if not _pids(daemon):
            subprocess.run([daemon, "-d"], check=True)
            started[daemon] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("libvirtd did not answer on qemu:///system")
    for daemon in started:
        started[daemon] = _pids(daemon)
    return started


def stop(started: dict[str, list] | None) -> None:
    for daemon in ("libvirtd", "virtlogd"):
        for pid in (started or {}).get(daemon, []):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
