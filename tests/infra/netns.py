"""An SSH target without Docker: a Debian rootfs (scripts/build-rootfs.sh) under a private overlay,
served by sshd chrooted inside a network namespace, reachable over a veth pair on a /30.

    python -m tests.infra.netns up --state STATE.json [--no-python]   # prints the state
    python -m tests.infra.netns down --state STATE.json
    python -m tests.infra.netns reap                      # undo the targets of a run that was killed

Everything is undone by ``down``: sshd killed, mounts removed, namespace and veth deleted, work dir
removed. Never reboot such a target: it shares this machine's kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.infra.statecli import run_state_cli, terminate

__all__ = ["down", "reap_stale", "up"]


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _free_index() -> int:
    used = _run("ip", "netns", "list").stdout
    for i in range(10, 250):
        if f"tsalign-t{i}" not in used:
            return i
    raise RuntimeError("no free tsalign-tN network namespace name")


def up(rootfs: str, python: bool = True, tracefs: bool = False, kmsg: bool = False) -> dict[str, Any]:
    """Start a target; returns its state (ip, key, names, pids). ``tracefs``/``kmsg``: this kernel's tracefs and
    kernel log inside it (the target shares this kernel: a guest capture, a guest's clock checks)."""
    if not os.path.isfile(os.path.join(rootfs, ".complete")):
        raise RuntimeError(f"{rootfs} is not a complete rootfs (scripts/build-rootfs.sh builds it)")
    i = _free_index()
    work = tempfile.mkdtemp(prefix=f"tsalign-t{i}-")
    st: dict[str, Any] = {"index": i, "netns": f"tsalign-t{i}", "veth": f"tsv{i}h", "work": work,
                          "root": f"{work}/root", "host_ip": f"10.199.{i}.1", "ip": f"10.199.{i}.2",
                          "key": f"{work}/id_ed25519", "mounts": [], "pid": None, "rootfs": rootfs}
    try:
        for d in ("upper", "work", "root"):
            os.mkdir(f"{work}/{d}")
        _run("mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={rootfs},upperdir={work}/upper,workdir={work}/work", st["root"])
        st["mounts"].append(st["root"])
        root = st["root"]
        _run("mount", "-t", "proc", "proc", f"{root}/proc")
        st["mounts"].append(f"{root}/proc")
        for dev in ("null", "zero", "urandom", "random", "tty", *(("kmsg",) if kmsg else ())):
            open(f"{root}/dev/{dev}", "a").close() if not os.path.exists(f"{root}/dev/{dev}") else None
            _run("mount", "--bind", f"/dev/{dev}", f"{root}/dev/{dev}")
            st["mounts"].append(f"{root}/dev/{dev}")
        if tracefs:  # the target shares this kernel: give it this kernel's tracefs (for guest captures)
            os.makedirs(f"{root}/sys/kernel/tracing", exist_ok=True)
            _run("mount", "--bind", "/sys/kernel/tracing", f"{root}/sys/kernel/tracing")
            st["mounts"].append(f"{root}/sys/kernel/tracing")
        if not python:
            for name in os.listdir(f"{root}/usr/bin"):
                if name.startswith("python"):
                    os.unlink(f"{root}/usr/bin/{name}")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", st["key"])
        os.makedirs(f"{root}/root/.ssh", mode=0o700, exist_ok=True)
        shutil.copy(st["key"] + ".pub", f"{root}/root/.ssh/authorized_keys")
        os.chmod(f"{root}/root/.ssh/authorized_keys", 0o600)
        _run("chroot", root, "ssh-keygen", "-A")
        os.makedirs(f"{root}/run/sshd", exist_ok=True)
        ns, veth = st["netns"], st["veth"]
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"tsv{i}t")
        _run("ip", "link", "set", f"tsv{i}t", "netns", ns)
        _run("ip", "addr", "add", f"{st['host_ip']}/30", "dev", veth)
        _run("ip", "link", "set", veth, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{st['ip']}/30", "dev", f"tsv{i}t")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", f"tsv{i}t", "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        log = open(f"{work}/sshd.log", "w")  # noqa: SIM115 - handed to sshd, closed below
        p = subprocess.Popen(["ip", "netns", "exec", ns, "chroot", root, "/usr/sbin/sshd", "-D", "-e",
                              "-o", "PermitRootLogin=prohibit-password", "-o", f"ListenAddress={st['ip']}",
                              "-o", "UseDNS=no", "-o", "PidFile=/run/sshd.pid"],
                             stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        log.close()
        st["pid"] = p.pid
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection((st["ip"], 22), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or p.poll() is not None:
                    raise RuntimeError(f"sshd did not come up: {Path(f'{work}/sshd.log').read_text()[-500:]}") from None
                time.sleep(0.1)
    except BaseException:
        down(st)
        raise
    return st


def down(st: dict[str, Any]) -> None:
    """Undo :func:`up` (idempotent; each step tolerates a missing piece)."""
    if st.get("pid"):
        terminate(st["pid"], group=True)
    # sshd's sessions are in sessions of their own (setsid): a client that went away with the veth leaves its
    # session process waiting on a connection that cannot close, holding the namespace (seen: 11 after one CI run)
    for pid in _pids(st.get("netns")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for m in reversed(st.get("mounts", [])):
        _run("umount", "-l", m, check=False)
    _run("ip", "netns", "del", st.get("netns") or "-", check=False)
    _run("ip", "link", "del", st.get("veth", "-"), check=False)
    if st.get("work") and os.path.isdir(st["work"]):
        shutil.rmtree(st["work"], ignore_errors=True)


def _pids(netns: str | None) -> list[int]:
    """The processes in network namespace ``netns``."""
    if not netns:
        return []
    out = _run("ip", "netns", "pids", netns, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reap_stale() -> list[str]:
    """Undo targets whose run died without ``down`` (a killed test session: sshd gone, its namespace, veth,
    mounts and work dir left behind, perhaps an SSH session process of its own). A target is stale when its
    namespace holds no sshd listener; a live one always does. Call it where no other ``up`` can be half-way (a
    test session's start). Returns the names."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return []
    names = [(line.split() or [""])[0] for line in _run("ip", "netns", "list", check=False).stdout.splitlines()]
    alive = {n for n in names if n.startswith("tsalign-t") and n[len("tsalign-t"):].isdigit()}
    # a run killed between its first mount and `ip netns add`, or after `ip netns del` (seen: an overlay root with
    # its /proc, /dev and tracefs mounts, no namespace), has a work dir and no namespace: stale as well
    orphans = {f"tsalign-t{m.group(1)}" for w in Path(tempfile.gettempdir()).glob("tsalign-t*-*")
               if (m := re.fullmatch(r"tsalign-t(\d+)-\w+", w.name))} - alive
    reaped = []
    for name in sorted(alive | orphans):
        if name in alive and any("sshd -D" in _cmdline(pid) for pid in _pids(name)):  # (its listener: alive)
            continue
        i = int(name[len("tsalign-t"):])
        prefix = f"{tempfile.gettempdir()}/tsalign-t{i}-"
        with open("/proc/mounts") as f:
            points = [p[1] for p in map(str.split, f) if len(p) > 1 and p[1].startswith(prefix)]
        down({"netns": name if name in alive else None, "veth": f"tsv{i}h", "mounts": sorted(points, key=len)})
        for w in Path(tempfile.gettempdir()).glob(f"tsalign-t{i}-*"):
            shutil.rmtree(w, ignore_errors=True)
        reaped.append(name)
    return reaped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("action", choices=("up", "down", "reap"))
    ap.add_argument("--state")
    ap.add_argument("--rootfs", default=os.environ.get("TSALIGN_ROOTFS"))
    ap.add_argument("--no-python", action="store_true")
    a = ap.parse_args()
    if a.action == "reap":
        for name in reap_stale():
            print(f"reaped the stale target {name}")
        return
    if not a.state:
        ap.error("--state is required")
    if a.action == "up" and not a.rootfs:
        ap.error("--rootfs or TSALIGN_ROOTFS is required")
    run_state_cli(a.action, a.state, lambda: up(a.rootfs, python=not a.no_python), down)

if __name__ == "__main__":
    main()
