"""A real VM that boots through its own GRUB (image from scripts/build-vm-image.sh), under qemu TCG,
reached over SSH on a loopback-forwarded port. Each run uses a pristine qcow2 overlay.

    python -m tests.infra.vm up --state STATE.json [--image-dir DIR]
    python -m tests.infra.vm down --state STATE.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.infra.statecli import run_state_cli, terminate

__all__ = ["CPU", "NESTED_CPU", "down", "fetch", "push", "push_tsalign", "run_job", "ssh", "ssh_argv", "up", "wait_ssh"]

CPU = "max,vendor=GenuineIntel,family=6,model=85"  # clocksource tsc + constant_tsc under TCG
#: AMD under TCG offers SVM: the VM is a real KVM host of its own (kvm_amd, nested paging), whose
#: unstable TSC makes KVM rewrite each vCPU's offset on every vCPU load
NESTED_CPU = "max,vendor=AuthenticAMD"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SSH_OPTS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR")


def ssh_argv(st: dict[str, Any]) -> list[str]:
    """ssh to the VM of ``st`` (root, its key); a nested VM (``st["jump"]``: the state of the VM it runs
    in, which forwards ``st["port"]`` on its loopback to it) is reached through that one."""
    argv = ["ssh", "-i", st["key"], *SSH_OPTS, "-o", "ConnectTimeout=30", "-o", "BatchMode=yes",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6"]
    jump = st.get("jump")
    if jump:
        proxy = " ".join([*ssh_argv(jump)[:-1], "-W", f"127.0.0.1:{st['port']}", "-p", str(jump["port"]),
                          "root@127.0.0.1"])
        return [*argv, "-o", f"ProxyCommand={proxy}", "root@nested"]
    return [*argv, "-p", str(st["port"]), "root@127.0.0.1"]


def _ssh_run(st: dict[str, Any], command: str, timeout: int, retries: int, text: bool) -> subprocess.CompletedProcess:
    """``command`` over ssh, run again (up to ``retries`` times) when ssh itself failed (exit 255: a guest
    starved on a loaded machine missed the connect or keep-alive deadline) — only for commands that may run
    twice."""
    for attempt in range(retries + 1):
        r = subprocess.run([*ssh_argv(st), command], capture_output=True, text=text, timeout=timeout)
        if r.returncode != 255 or attempt == retries:
            break
        time.sleep(2)
    return r


def ssh(st: dict[str, Any], command: str, timeout: int = 30, retries: int = 0) -> subprocess.CompletedProcess:
    """Run ``command`` in the VM (``retries``: see _ssh_run)."""
    return _ssh_run(st, command, timeout, retries, text=True)


def run_job(st: dict[str, Any], script: str, job: str, watch: str = "", stall: float = 300,
            limit: float = 2400, poll: float = 5) -> str:
    """Run the shell ``script`` in the VM detached from SSH (its own session; files in /root/job-``job``/) and
    wait on its progress, not on a fixed deadline: it gives up when the job's log and the sizes of the files
    ``watch`` (a shell glob) have not changed for ``stall`` s, or after ``limit`` s. Returns the job's output
    (stdout and stderr). On a stall or a non-zero exit it raises RuntimeError with what the VM showed then
    (the job's log, its processes, the watched files), after ending the job's session.

    A long SSH session is not used: one that hangs tells nothing of where the job was (seen: a 600 s timeout
    with no output). The script should ``echo`` where it is as it goes; each line is progress."""
    d = f"/root/job-{job}"
    start = (f"rm -rf {d}; mkdir -p {d}; cat > {d}/job.sh <<'TSALIGN_JOB_EOF'\n{script}\nTSALIGN_JOB_EOF\n"
             f"setsid sh -c 'echo $$ > {d}/sid; sh {d}/job.sh; echo $? > {d}/rc' > {d}/log 2>&1 < /dev/null & "
             f"for i in $(seq 100); do [ -s {d}/sid ] && exit 0; sleep 0.1; done; exit 1")
    r = ssh(st, start, timeout=120, retries=2)
    if r.returncode != 0:
        raise RuntimeError(f"job {job} did not start in the VM: {r.stdout}{r.stderr}")
    probe = (f"cat {d}/rc 2>/dev/null || echo running; wc -c {d}/log {watch} 2>/dev/null; "
             f"tail -n 3 {d}/log")
    t0 = last = time.monotonic()
    seen = ""
    while True:
        try:
            p = ssh(st, probe, timeout=120, retries=2)
            state = p.stdout if p.returncode == 0 else seen
        except subprocess.TimeoutExpired:
            state = seen
        now = time.monotonic()
        if state != seen:
            seen, last = state, now
        status = seen.split("\n", 1)[0].strip()
        if status not in ("", "running"):
            break
        if now - last > stall or now - t0 > limit:
            why = (f"no progress for {now - last:.0f} s" if now - last > stall else f"still running after {limit:.0f} s")
            diag = ssh(st, f"cat {d}/log; echo '== processes'; ps -eo pid,ppid,stat,etimes,wchan:24,args "
                           f"| grep -v ' \\[.*\\]$'; " + (f"echo '== watched'; ls -l {watch} 2>&1; for f in {watch}; do "
                           "case $f in *.log) echo \"== $f\"; tail -n 20 \"$f\";; esac; done; " if watch else "") +
                           f"kill -TERM -- -$(cat {d}/sid) 2>/dev/null", timeout=120, retries=2)
            raise RuntimeError(f"job {job} in the VM: {why}; it showed:\n{diag.stdout}{diag.stderr}")
        time.sleep(poll)
    out = ssh(st, f"cat {d}/log", timeout=120, retries=2).stdout
    if status != "0":
        raise RuntimeError(f"job {job} in the VM exited {status}:\n{out}")
    return out


def _alive(pid: int | None) -> bool:
    if not pid:
        return True  # not started by us (no pid known): only SSH tells
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_ssh(st: dict[str, Any], timeout: float = 900, not_boot_id: str = "", stall: float = 240) -> str:
    """Wait until SSH answers (and, after a reboot, with a new boot_id); returns the boot_id.

    Follows the guest's progress, not a fixed time: it waits while QEMU runs and its serial console keeps
    printing, and gives up when QEMU has exited, when the console has been silent for ``stall`` s with SSH
    still closed, or after ``timeout`` s in all (a loaded 2-core machine boots a TCG guest slowly)."""
    t0 = time.monotonic()
    last_size, last_change = -1, t0
    why = f"{timeout:.0f} s in all"
    while time.monotonic() - t0 < timeout:
        try:
            r = ssh(st, "cat /proc/sys/kernel/random/boot_id", timeout=30)
            if r.returncode == 0 and r.stdout.strip() and r.stdout.strip() != not_boot_id:
                return r.stdout.strip()
        except subprocess.TimeoutExpired:
            pass
        size = os.path.getsize(st["serial"]) if os.path.exists(st.get("serial", "")) else 0
        if size != last_size:
            last_size, last_change = size, time.monotonic()
        if not _alive(st.get("pid")):
            why = "QEMU exited"
            break
        if time.monotonic() - last_change > stall:
            why = f"the serial console silent for {stall:.0f} s"
            break
        time.sleep(1)
    tail = Path(st["serial"]).read_text(errors="replace")[-1500:] if os.path.exists(st["serial"]) else ""
    raise RuntimeError(f"VM not reachable over SSH after {time.monotonic() - t0:.0f} s ({why}); serial console tail:\n{tail}")


def up(image_dir: str, boot_timeout: float = 900, beacon_port: bool = False, cpu: str = CPU,
       memory_mb: int = 1024, extra: tuple[str, ...] = (), smp: int = 2) -> dict[str, Any]:
    """Boot a pristine overlay of the image. ``beacon_port``: give COM2 (ttyS1, port 0x2f8) a chardev
    file of its own, for `tsalign beacons`; ``cpu``: the -cpu model (NESTED_CPU for a KVM host);
    ``extra``: more qemu arguments (e.g. a second drive)."""
    if not os.path.exists(os.path.join(image_dir, ".complete")):
        raise RuntimeError(f"{image_dir} holds no complete image (scripts/build-vm-image.sh builds it)")
    work = tempfile.mkdtemp(prefix="tsalign-vm-")
    key = os.path.join(work, "id_ed25519")
    shutil.copy(os.path.join(image_dir, "id_ed25519"), key)
    os.chmod(key, 0o600)
    st: dict[str, Any] = {"work": work, "key": key, "port": _free_port(), "serial": f"{work}/serial.log",
                          "pidfile": f"{work}/qemu.pid", "disk": f"{work}/run.qcow2"}
    try:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        os.path.join(image_dir, "base.img"), st["disk"]], check=True)
        subprocess.run(["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-smp", str(smp), "-cpu", cpu,
                        "-name", "tsalign-vm,debug-threads=on",  # vCPU threads named "CPU N/TCG"
                        "-drive", f"file={st['disk']},if=virtio,format=qcow2",
                        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{st['port']}-:22",
                        "-device", "virtio-net-pci,netdev=n0", "-serial", f"file:{st['serial']}",
                        *(["-serial", f"file:{work}/beacons.log"] if beacon_port else []),
                        *extra, "-display", "none", "-daemonize", "-pidfile", st["pidfile"]],
                       check=True, capture_output=True, text=True)
        st["pid"] = int(Path(st["pidfile"]).read_text().strip())
        st["boot_id"] = wait_ssh(st, boot_timeout)
    except BaseException:
        down(st)
        raise
    return st


REPO = Path(__file__).resolve().parents[2]


def push_tsalign(st: dict[str, Any]) -> None:
    """This checkout's ``tsalign`` package to /opt/tsalign/lib in the VM (run it there with
    ``cd /opt/tsalign/lib && python3 -m tsalign``: the standard library suffices for the node verbs)."""
    tar = subprocess.run(["tar", "-C", str(REPO), "--exclude=__pycache__", "-c", "tsalign"], capture_output=True,
                         check=True).stdout
    push(st, tar, "mkdir -p /opt/tsalign/lib && tar -x -C /opt/tsalign/lib")


def push(st: dict[str, Any], data: bytes, command: str, timeout: int = 300) -> None:
    """Run ``command`` in the VM with ``data`` on its stdin (e.g. a tar stream)."""
    r = subprocess.run([*ssh_argv(st), command], input=data, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{command!r} in the VM failed: {r.stderr.decode(errors='replace')}")


def fetch(st: dict[str, Any], remote: str, local: Path) -> None:
    """Copy directory ``remote`` of the VM into ``local`` (as local/<basename>)."""
    r = _ssh_run(st, f"tar -C {os.path.dirname(remote)} -c {os.path.basename(remote)}", 600, 3, text=False)
    if r.returncode != 0:
        raise RuntimeError(f"fetching {remote} from the VM failed ({r.returncode}): {r.stderr.decode()[-1000:]}")
    data = r.stdout
    local.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(local)], input=data, check=True)


def down(st: dict[str, Any]) -> None:
    pid = st.get("pid")
    if pid is None and os.path.exists(st.get("pidfile", "")):
        try:
            pid = int(Path(st["pidfile"]).read_text().strip())
        except ValueError:
            pid = None
    if pid:
        terminate(pid)
    if st.get("work"):
        shutil.rmtree(st["work"], ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("action", choices=("up", "down"))
    ap.add_argument("--state", required=True)
    ap.add_argument("--image-dir", default=os.environ.get("TSALIGN_VM_IMAGE"))
    a = ap.parse_args()
    if a.action == "up" and not a.image_dir:
        ap.error("--image-dir or TSALIGN_VM_IMAGE is required")
    run_state_cli(a.action, a.state, lambda: up(a.image_dir), down)

if __name__ == "__main__":
    main()
