"""The nested lab: a real Linux guest (L2) on a real KVM host (L1) whose TSC offsets are applied and change.

L1 is the GRUB test VM's image booted under TCG with an AMD vendor (SVM: ``kvm_amd``, nested paging; its TSC
is unstable, so KVM rewrites each vCPU's offset on every vCPU load), its kernel booted directly. The image has
no QEMU: this machine's QEMU, its libraries and firmware (``scripts/build-qemu-bundle.sh``) and the Python
packages L1 and L2 import beyond the standard library come on a read-only payload disk (`payload_disk`). L2 boots L1's own
Debian kernel (direct kernel boot, ``-cpu host``, 2 vCPUs) on a copy-on-write view of the same pristine
image, given to L1 as a read-only second disk; it runs systemd and sshd, reached from here through L1
(ssh ProxyCommand to L1's loopback port 2222). Two clock setups: ``kvmclock`` (the default) and ``tsc``
(``no-kvmclock tsc_early_khz=<L1's TSC kHz> tsc=reliable``: the seed's configuration).

    python -m tests.infra.lab run --out out/lab      # what `make lab` runs: the seed workflow per setup
    python -m tests.infra.lab up --state S.json [--setup kvmclock|tsc]   /   down --state S.json

(``up`` leaves L1 and L2 running and writes their state; ``down`` stops them.)

Waits follow the guests' progress (SSH polled, the QEMU process watched), never a fixed short timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.infra import vm
from tests.infra.statecli import run_state_cli
from tsalign.analyze.io import HOST_IO_CALLS

__all__ = ["SETUPS", "check_workflow", "down", "inventory", "l2_down", "l2_up", "run_playbooks", "run_workflow", "up"]

SETUPS = ("kvmclock", "tsc")
L2_PORT = 2222
KERNEL = "$(ls /boot/vmlinuz-* | tail -1)"
INITRD = "$(ls /boot/initrd.img-* | tail -1)"
PY = "cd /opt/tsalign/lib && python3 -m tsalign"
#: this machine's perf on the payload disk (`_stage_perf`)
PERF = "/opt/lab/perf/perf"
#: shell: wait (n x 0.1 s at most) until a tsalign capture instance records (tracing_on=1), not just exists
RECORDING = ("for i in $(seq {n}); do grep -qx 1 /sys/kernel/tracing/instances/tsalign-*/tracing_on 2>/dev/null "
             "&& break; sleep 0.1; done; grep -qx 1 /sys/kernel/tracing/instances/tsalign-*/tracing_on")
#: host: the default capture events (offsets, evidence) plus the VM process's IO calls for `analyze io`
HOST_EXTRA = [f"syscalls:sys_{d}_{c}" for c in HOST_IO_CALLS for d in ("enter", "exit")]


#: wall seconds of the lab's steps in this process, in order (printed by `make lab`; the suite's L2 test writes
#: them to its timings.json)
TIMINGS: list[tuple[str, float]] = []


@contextlib.contextmanager
def _step(name: str) -> Iterator[None]:
    """Record how long the named lab step took (wall seconds) in TIMINGS."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        TIMINGS.append((name, round(time.monotonic() - t0, 1)))


def _until(cond: str, seconds: int) -> str:
    """Shell: wait until the shell condition ``cond`` holds, at most ``seconds`` of the VM's uptime."""
    return (f"end=$(( $(cut -d. -f1 /proc/uptime) + {seconds} )); until {cond}; do "
            "[ $(cut -d. -f1 /proc/uptime) -ge $end ] && break; sleep 0.2; done; ")


def _mark(stage: str) -> str:
    """Shell: say in a job's log (vm.run_job) that ``stage`` was reached, with the VM's uptime (s)."""
    return f"echo \"== {stage} $(cut -d' ' -f1 /proc/uptime)\"; "


def _cache(env: str, pattern: str) -> str:
    path = os.environ.get(env) or next(iter(sorted(glob.glob(f"{os.environ.get('TSALIGN_CACHE', '/var/cache/tsalign')}/{pattern}"),
                                                   key=os.path.getmtime, reverse=True)), "")
    if not path or not os.path.exists(os.path.join(path, ".complete")):
        raise RuntimeError(f"{env} names no complete artefact ({pattern}); `make fixtures` builds it")
    return path


def up(image_dir: str | None = None, qemu_bundle: str | None = None, boot_timeout: float = 900,
       for_l2: bool = False) -> dict[str, Any]:
    """Boot L1 and make it a KVM host with QEMU and tsalign; returns its state (vm.up's, plus ``tsc_khz``).

    ``for_l2``: an L1 that runs a Linux L2. With two vCPUs, a vCPU of L1 running L2 under TCG's SVM emulation
    did not take L1's IPIs, and L1's other vCPU spun in smp_call_function_many_cond (soft lockups for minutes,
    sshd silent: L1's serial console). So one vCPU — but then L1's TSC counts as stable and KVM keeps each
    offset: L1 boots with ``tsc=unstable``, so KVM rewrites the offsets on every vCPU load, as with two vCPUs.
    L1 boots the image's kernel directly (one boot; QEMU, drgn and numpy on a read-only payload disk)."""
    image_dir = image_dir or _cache("TSALIGN_VM_IMAGE", "vm-bookworm-*")
    qemu_bundle = qemu_bundle or _cache("TSALIGN_QEMU_BUNDLE", "qemu-bundle-*")
    with _step("payload disk"):
        payload = payload_disk(qemu_bundle, image_dir)
    # the image's own kernel booted directly (its GRUB entry's command line; GRUB boots are the GRUB VM tests'),
    # so tsc=unstable needs no edit of the image's GRUB config and no second boot
    cmdline = "root=/dev/vda1 ro console=ttyS0" + (" tsc=unstable" if for_l2 else "")
    try:
        with _step("L1 boot"):
            st = vm.up(image_dir, boot_timeout, cpu=vm.NESTED_CPU, memory_mb=3072, smp=1 if for_l2 else 2,
                       extra=("-kernel", f"{payload}/vmlinuz", "-initrd", f"{payload}/initrd.img", "-append", cmdline,
                              "-drive", f"file={image_dir}/base.img,if=virtio,format=raw,readonly=on",
                              "-drive", f"file={payload}/payload.img,if=virtio,format=raw,readonly=on"))
    except BaseException:
        shutil.rmtree(payload, ignore_errors=True)
        raise
    st["payload"] = payload
    try:
        r = vm.ssh(st, "cat /proc/cmdline", timeout=60)
        if for_l2 and "tsc=unstable" not in r.stdout:
            raise RuntimeError(f"L1 booted without tsc=unstable: {r.stdout}")
        r = vm.ssh(st, "modprobe kvm_amd && test -c /dev/kvm && test -b /dev/vdb && "
                       "(mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing) && "
                       "(mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug) && "
                       "dmesg | grep -o 'tsc: Detected [0-9.]* MHz' | head -1", timeout=120)
        m = re.search(r"Detected ([0-9.]+) MHz", r.stdout)
        if r.returncode != 0 or not m:
            raise RuntimeError(f"L1 is not a KVM host: {r.stdout}{r.stderr}")
        st["tsc_khz"] = int(float(m[1]) * 1000)
        with _step("L1 payload mounted, tsalign pushed"):
            r = vm.ssh(st, f"{MOUNT_PAYLOAD} && ln -sfn /opt/lab/qemu /opt/qemu && {link_site(DRGN)}", timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"L1: the payload disk did not mount: {r.stdout}{r.stderr}")
            vm.push_tsalign(st)
    except BaseException:
        down(st)
        raise
    return st


#: site-packages entries that L1 (drgn: the memory offset source reads its /proc/kcore) and a kvm-clock L2 (numpy:
#: `tsalign calibrate` fits with it) import, from this venv (manylinux wheels for the image's CPython 3.11)
DRGN = ("drgn", "_drgn_util", "drgn.libs", "_drgn.*.so")
NUMPY = ("numpy", "numpy.libs")
PAYLOAD_LABEL = "tsalign-lab"
#: where scripts/build-vm-image.sh puts the root partition in base.img (sfdisk start=2048 sectors)
IMAGE_PART_OFFSET = 1048576
#: shell, in L1 or L2: mount the payload disk (found by its label) read-only at /opt/lab
MOUNT_PAYLOAD = (f"mkdir -p /opt/lab && {{ mountpoint -q /opt/lab || "
                 f"mount -o ro,noload \"$(blkid -L {PAYLOAD_LABEL})\" /opt/lab; }}")


def link_site(names: tuple[str, ...]) -> str:
    """Shell: link the payload's site-packages entries ``names`` (globs) into /opt/tsalign/lib, where
    ``python3 -m tsalign`` runs."""
    return "mkdir -p /opt/tsalign/lib && " + " && ".join(
        f"ln -sfn /opt/lab/site/{n} /opt/tsalign/lib/" for n in names)


def payload_disk(qemu_bundle: str, image_dir: str) -> str:
    """A directory holding ``payload.img``: a read-only ext4 image (``mkfs.ext4 -d``, nothing mounted here) with
    the QEMU bundle (``qemu/``), this venv's drgn and numpy (``site/``) and this machine's perf (``perf/``). L1 gets it as a disk and passes it on
    to L2; each mounts it at /opt/lab and reads pages as they are used, instead of ~250 MB pushed over SSH into
    TCG and unpacked there. Also the image's kernel and initrd (``vmlinuz``, ``initrd.img``: debugfs reads
    them from its ext4 partition) for L1's direct boot. The caller removes the directory (`down`)."""
    import drgn
    import numpy

    d = Path(tempfile.mkdtemp(prefix="tsalign-lab-payload-"))
    try:
        fs = f"{image_dir}/base.img?offset={IMAGE_PART_OFFSET}"
        ls = subprocess.run(["debugfs", "-R", "ls /boot", fs], capture_output=True, text=True)
        kernels = sorted(set(re.findall(r"vmlinuz-([0-9][^\s]*)", ls.stdout)))
        if not kernels:
            raise RuntimeError(f"no /boot/vmlinuz-* in {fs} (debugfs: {ls.stderr.strip()[-500:]})")
        for src, dst in ((f"/boot/vmlinuz-{kernels[-1]}", "vmlinuz"), (f"/boot/initrd.img-{kernels[-1]}", "initrd.img")):
            subprocess.run(["debugfs", "-R", f"dump {src} {d / dst}", fs], capture_output=True, check=True)
            if not (d / dst).is_file() or (d / dst).stat().st_size < 2**20:
                raise RuntimeError(f"debugfs did not dump {src} from {fs}")
        stage = d / "stage"
        (stage / "site").mkdir(parents=True)
        subprocess.run(["tar", "-xzf", str(Path(qemu_bundle, "qemu.tgz")), "-C", str(stage)], check=True)
        for mod, names in ((drgn, DRGN), (numpy, NUMPY)):
            site = Path(mod.__file__).resolve().parents[1]
            for n in names:
                for src in site.glob(n):
                    if src.is_dir():
                        shutil.copytree(src, stage / "site" / src.name, ignore=shutil.ignore_patterns("__pycache__"))
                    else:
                        shutil.copy2(src, stage / "site" / src.name)
        _stage_perf(stage / "perf")
        size = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file())
        img = d / "payload.img"
        with open(img, "wb") as f:
            f.truncate(size * 5 // 4 + 64 * 2**20)
        r = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", PAYLOAD_LABEL, "-d", str(stage), str(img)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"mkfs.ext4 -d for the lab payload failed: {r.stderr}")
        shutil.rmtree(stage)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    return str(d)


def _stage_perf(d: Path) -> None:
    """This machine's ``perf`` (linux-perf 6.1, the L1/L2 image's kernel series and Debian release) with the
    shared libraries ``ldd`` lists, run in L2 as ``/opt/lab/perf/perf`` (a wrapper setting LD_LIBRARY_PATH): the
    image carries no perf."""
    perf = shutil.which("perf")
    if not perf:
        raise RuntimeError("the lab needs perf on this machine for L2's perf capture (make test installs linux-perf)")
    (d / "lib").mkdir(parents=True)
    shutil.copy2(os.path.realpath(perf), d / "perf.bin")
    ldd = subprocess.run(["ldd", perf], capture_output=True, text=True, check=True).stdout
    for lib in re.findall(r"=> (/\S+)", ldd):
        shutil.copy2(lib, d / "lib" / os.path.basename(lib))  # follows symlinks: the file under the linked name
    (d / "perf").write_text('#!/bin/sh\nd=$(dirname "$(readlink -f "$0")")\n'
                            'LD_LIBRARY_PATH="$d/lib" exec "$d/perf.bin" "$@"\n')
    (d / "perf").chmod(0o755)


def down(st: dict[str, Any]) -> None:
    """Stop L1 (and with it any L2) and remove its files (its payload disk too)."""
    try:
        vm.down(st)
    finally:
        if st.get("payload"):
            shutil.rmtree(st["payload"], ignore_errors=True)


def l2_up(l1: dict[str, Any], setup: str, timeout: float = 900) -> dict[str, Any]:
    """Start L2 in L1 with clock ``setup``; wait for SSH through L1; push tsalign; mount tracefs."""
    if setup not in SETUPS:
        raise ValueError(f"setup {setup!r}: one of {SETUPS}")
    extra = f" no-kvmclock tsc_early_khz={l1['tsc_khz']} tsc=reliable" if setup == "tsc" else ""
    # not -daemonize: a daemonized QEMU closes its stderr, and an L2 that died during boot said nothing (KVM
    # internal errors, aborts). In its own session, detached from this SSH connection, stderr kept in a file.
    r = vm.ssh(l1, (
        "rm -f /root/l2.serial /root/l2.pid /root/l2.stderr; "  # `;`: with `&&`, `&` would background the list
        "setsid /opt/qemu/qemu-system-x86_64 -accel kvm -M pc -cpu host -m 768 -smp 2 "
        "-nodefaults -display none -serial file:/root/l2.serial -name l2,debug-threads=on "
        f"-kernel {KERNEL} -initrd {INITRD} -append 'console=ttyS0 root=/dev/vda1 rw panic=-1{extra}' "
        "-drive file=/dev/vdb,format=raw,if=virtio,snapshot=on "
        f"-drive file=$(blkid -L {PAYLOAD_LABEL}),format=raw,if=virtio,readonly=on "
        f"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:{L2_PORT}-:22 -device virtio-net-pci,netdev=n0,romfile= "
        "-pidfile /root/l2.pid </dev/null >/root/l2.stderr 2>&1 & "
        "for i in $(seq 100); do [ -s /root/l2.pid ] && break; sleep 0.2; done; "
        "kill -0 $(cat /root/l2.pid) && cat /root/l2.pid || { cat /root/l2.stderr; exit 1; }"), timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"L2 did not start: {r.stdout}{r.stderr}")
    l2 = {"key": l1["key"], "port": L2_PORT, "jump": l1, "pid": int(r.stdout.split()[-1]), "setup": setup}
    with _step(f"L2 boot ({setup})"):
        _wait_l2(l1, l2, setup, time.monotonic() + timeout)
    with _step("L2 payload mounted, tsalign pushed"):
        r = vm.ssh(l2, f"{MOUNT_PAYLOAD} && {link_site(NUMPY)}", timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"L2: the payload disk did not mount: {r.stdout}{r.stderr}")
        vm.push_tsalign(l2)
    r = vm.ssh(l2, "mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; "
                   "cat /sys/devices/system/clocksource/clocksource0/current_clocksource", timeout=60)
    l2["clocksource"] = r.stdout.strip()
    return l2


def _wait_l2(l1: dict[str, Any], l2: dict[str, Any], setup: str, deadline: float) -> None:
    """Until L2 answers SSH; raises (L2 stopped, its console in the message) when its QEMU exited or at the deadline.
    (Polling from inside L1 instead, to spare L1's one TCG vCPU the SSH handshakes, did not shorten the boot:
    237 s vs 254 s under make test.)"""
    while True:
        try:
            if vm.ssh(l2, "true", timeout=60).returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        try:  # an SSH hiccup to L1 (a loaded machine) is not a dead L2: only L1's own answer counts
            r1 = vm.ssh(l1, f"kill -0 {l2['pid']} 2>/dev/null && echo alive || echo dead", timeout=60)
            alive = r1.stdout if r1.returncode == 0 else "L1 did not answer SSH"
        except subprocess.TimeoutExpired:
            alive = "L1 did not answer SSH"
        if "dead" in alive or time.monotonic() > deadline:
            tail = _l2_console(l1)
            l2_down(l1)
            state = "QEMU exited" if "dead" in alive else ("QEMU alive" if "alive" in alive else alive)
            raise RuntimeError(f"L2 ({setup}) not reachable over SSH ({state}):\n{tail}")
        time.sleep(2)


def l2_down(l1: dict[str, Any]) -> None:
    """Stop L2 (SIGTERM, then SIGKILL) and wait until its QEMU is gone."""
    vm.ssh(l1, "p=$(cat /root/l2.pid 2>/dev/null) || exit 0; kill $p 2>/dev/null; "
               "for i in $(seq 50); do kill -0 $p 2>/dev/null || exit 0; sleep 0.2; done; kill -9 $p", timeout=60)


def _tsalign(*args: str) -> tuple[int, dict[str, Any]]:
    with _step(f"tsalign {args[0]} -> {Path(args[args.index('-o') + 1]).name if '-o' in args else ''}"):
        r = subprocess.run([sys.executable, "-m", "tsalign", *args, "--json"], capture_output=True, text=True,
                           timeout=900)
    try:
        return r.returncode, json.loads(r.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"tsalign {args[0]} printed no JSON (exit {r.returncode}): {r.stderr[-2000:]}") from None


def run_workflow(l1: dict[str, Any], l2: dict[str, Any], out: Path) -> dict[str, Any]:
    """The seed's workflow on the lab: capture L1 (host, the L2 QEMU by pid) and L2 (guest) together,
    bring the bundles here (`capture_workflow`), align with the per-vCPU offset timeline, judge, and run the three
    analyses; also the same capture with one snapshot for the whole capture (`judge_workflow`). Writes under
    ``out``; returns a summary."""
    capture_workflow(l1, l2, out)
    return judge_workflow(l2, out)


def capture_workflow(l1: dict[str, Any], l2: dict[str, Any], out: Path) -> None:
    """The CLI captures of the seed's workflow in the lab (L1 host, L2 guest; a kvm-clock L2 also its sched_clock
    capture and a calibration measured meanwhile), fetched into ``out``."""
    from tsalign.capture.capture import DEFAULT_HOST_EVENTS

    out.mkdir(parents=True, exist_ok=True)
    host_events = ",".join([*DEFAULT_HOST_EVENTS, *HOST_EXTRA])
    # the host capture runs until the guest's is over (SIGINT ends it and still writes the bundle)
    # (a background job must not hold the SSH session's descriptors: redirect the whole group)
    # 64 MiB for L1's one CPU: under make test's load L1's reader fell behind a 16 MiB buffer (186 s capture,
    # 263 613 events lost, so the vCPU-run evidence was dropped)
    with _step("CLI captures (L1, L2)"):
        r = vm.ssh(l1, f"rm -rf /root/lab; mkdir -p /root/lab; {{ {PY} capture --pid {l2['pid']} --duration 1800 "
                       f"--buffer-kb 65536 --events {host_events} --out /root/lab/host; }} > /root/lab/host.log 2>&1 < /dev/null & "
                       f"{RECORDING.format(n=1200)} && exit 0; cat /root/lab/host.log; exit 1", timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"host capture in L1 did not start: {r.stdout}{r.stderr}")
        # guest: its default events for 8 s while it sleeps (timer IRQs, TSC-deadline writes), reads and writes
        # O_DIRECT (virtio IRQs, host IO) and switches tasks. A kvm-clock guest also records the same events in
        # its sched_clock (`--clock local`, a second private instance) and calibrates sched_clock against its TSC
        # meanwhile (tsalign calibrate, pinned to CPU 0)
        kvmclock = l2["setup"] == "kvmclock"
        # A kvm-clock guest also records the same events in its sched_clock (`--clock local`, a second private
        # instance), runs `perf record` of two of them (perf's clock is local_clock(): with cap_user_time_zero=0 perf
        # cannot turn it into TSC itself) and calibrates both clocks against its TSC (tsalign calibrate, pinned to
        # CPU 0), started first and recording before perf and the captures start, so that its pairs span them: perf's
        # clock is not sched_clock on a guest whose sched_clock is unstable (L2's: its pvclock is not TSC-stable) but
        # re-anchored to the timekeeping clock at every tick, so a calibration of it holds only where it was measured.
        # perf is stopped after the workload (SIGINT: perf writes its file), inside the calibrated span.
        # (waits are bounded by L2's uptime, not by a count of iterations: under the suite's load each took seconds)
        calibrating = _until("[ $(grep -lx 1 /sys/kernel/tracing/instances/tsalign-*/tracing_on 2>/dev/null | wc -l) "
                             "-ge 4 ]", 900)  # (its four instances on)
        recording = _until("grep -qs '\"event\": \"recording\"' {log}", 900)  # (a capture's own word for it)
        # perf, started in the background of a non-interactive shell, ignores SIGINT until it installs its own handler
        # (its startup in L2 took over 20 s on a slower machine: a SIGINT sent before that was lost and perf recorded
        # on, the step timed out): the captures start once perf catches SIGINT (SigCgt bit 2), and it is stopped by
        # SIGINT until it is gone. The calibration spans 420 s, past a slow perf start and the workload: seen under the
        # suite's load on a slower machine, L2 took 300 s to start it and 220 s more to start the captures.
        perf_ready = ("for i in $(seq 1800); do m=$(awk '/^SigCgt/{print $2}' /proc/$(cat /root/lab/perf.pid)/status "
                      "2>/dev/null); [ -n \"$m\" ] && [ $(( 0x$m & 2 )) -ne 0 ] && break; sleep 0.1; done; ")
        # perf starts with its events disabled and the captures start once it acknowledged enabling them (its
        # control fifos): seen under the suite's load, perf had caught SIGINT but recorded only after the 8 s
        # x86-tsc capture was over, leaving no hit in both (the truth of check_perf_route)
        perf_on = ("timeout 300 sh -c 'echo enable > /root/lab/perf-ctl' && "
                   "[ \"$(timeout 300 head -n 1 /root/lab/perf-ack)\" = ack ] || echo 'perf: not enabled'; ")
        before = (f"{{ {PY} calibrate -o /root/lab/calibration.json --pairs 6000 --seconds 420 --json; }} "
                  "> /root/lab/calibrate.log 2>&1 < /dev/null & echo $! > /root/lab/calibrate.pid; "
                  + calibrating + _mark("calibration recording")
                  + "mkfifo /root/lab/perf-ctl /root/lab/perf-ack; "
                  + f"{PERF} record -q -B -N -a -m 1024 -D -1 --control fifo:/root/lab/perf-ctl,/root/lab/perf-ack "
                  "-e sched:sched_switch -e irq:irq_handler_entry "
                  "-o /root/lab/perf/perf.data > /root/lab/perf/perf.log 2>&1 < /dev/null & echo $! > /root/lab/perf.pid; "
                  + perf_ready + _mark("perf catches SIGINT") + perf_on if kvmclock else "")
        local = (f"{{ {PY} capture --role guest --clock local --duration 8 --out /root/lab/guest-local; }} "
                 "> /root/lab/guest-local.log 2>&1 < /dev/null & echo $! > /root/lab/guest-local.pid; " if kvmclock else "")
        # the job ends with the captures (the host capture in L1 is stopped then: left running while the calibration
        # finished, 795 s in all, it lost 900 k events and with them the vCPU-run evidence); the calibration is
        # waited on after that, on its own
        captures = "wait $(cat /root/lab/guest.pid)" + (" $(cat /root/lab/guest-local.pid)" if kvmclock else "") + "; "
        # (the two captures start together: which enables its events first, and so gets each hit first, is a race
        # that check_kvmclock_routes reads from the data; starting the second after the first had enabled its events
        # made them barely overlap in L2, whose Python starts slower than the 8 s capture)
        # run detached in L2 and waited on while it goes on (vm.run_job): each stage says so in the job's log, the
        # logs and perf's file grow; a stall ends it with L2's processes and logs in the error
        log = vm.run_job(l2, "rm -rf /root/lab; mkdir -p /root/lab/perf; " + _mark("started") + before
                         + (_mark("perf enabled") if kvmclock else "")
                         + f"{{ {PY} capture --role guest --duration 8 "
                         "--out /root/lab/guest; } > /root/lab/guest.log 2>&1 < /dev/null & echo $! > /root/lab/guest.pid; "
                         + local + recording.format(log="/root/lab/guest.log") + _mark("guest capture recording")
                         + (recording.format(log="/root/lab/guest-local.log") + _mark("sched_clock capture recording")
                            if kvmclock else "") +
                         "for i in $(seq 100); do sleep 0.005; done; "
                         "dd if=/dev/zero of=/root/lab/io.bin bs=64k count=32 oflag=direct 2>/dev/null; "
                         "dd if=/root/lab/io.bin of=/dev/null bs=64k iflag=direct 2>/dev/null; " + _mark("workload done")
                         + ("for i in $(seq 600); do kill -INT $(cat /root/lab/perf.pid) 2>/dev/null || break; sleep 0.5; "
                            "done; " + _mark("perf stopped") if kvmclock else "") +
                         captures + _mark("captures done") + "cat /root/lab/guest*.log 2>/dev/null; exit 0",
                         "l2-captures", watch="/root/lab/*.log /root/lab/perf/*", stall=400)
        if "bundle /root/lab/guest:" not in log or (kvmclock and "bundle /root/lab/guest-local:" not in log):
            raise RuntimeError(f"guest capture in L2 failed: {log}")
        r = vm.ssh(l1, "pkill -INT -f 'tsalign capture --pid'; for i in $(seq 600); do "
                       "[ -f /root/lab/host/manifest.json ] && exit 0; sleep 0.2; done; cat /root/lab/host.log; exit 1",
                   timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"host capture in L1 did not finish: {r.stdout}{r.stderr}")
        if kvmclock:  # the calibration's end (its progress said while it runs, or run_job calls it a stall)
            vm.run_job(l2, "while kill -0 $(cat /root/lab/calibrate.pid) 2>/dev/null; do sleep 30; "
                       + _mark("calibration running") + "done; " + _mark("calibration done") + "exit 0",
                       "l2-calibration", watch="/root/lab/calibrate.log", stall=400)
    with _step("CLI fetch"):
        vm.fetch(l1, "/root/lab/host", out)
        vm.fetch(l2, "/root/lab/guest", out)
        if kvmclock:
            vm.fetch(l2, "/root/lab/guest-local", out)
            r = vm.ssh(l2, "cat /root/lab/calibration.json", timeout=120)
            if r.returncode == 0:
                (out / "calibration.json").write_text(r.stdout)
            (out / "calibrate.log").write_text(vm.ssh(l2, "cat /root/lab/calibrate.log", timeout=120).stdout)
            vm.fetch(l2, "/root/lab/perf", out)
            perf_script(out / "perf")


def perf_script(d: Path) -> None:
    """``d/perf.data`` (L2's perf record) as ``perf script --ns`` text in ``d/perf.txt``, the guest trace align
    reads (printed by this machine's perf, the same build L2 ran: the tracepoint formats are in the file)."""
    if not (d / "perf.data").is_file():
        raise RuntimeError(f"L2's perf record wrote no {d / 'perf.data'}: {(d / 'perf.log').read_text()[-2000:]}")
    with open(d / "perf.txt", "w", encoding="utf-8") as f:
        r = subprocess.run(["perf", "script", "--ns", "-i", str(d / "perf.data")], stdout=f, stderr=subprocess.PIPE,
                           text=True, timeout=600)
    if r.returncode != 0 or (d / "perf.txt").stat().st_size == 0:
        raise RuntimeError(f"perf script of L2's {d / 'perf.data'} failed ({r.returncode}): {r.stderr[-2000:]}")


def judge_workflow(l2: dict[str, Any], out: Path) -> dict[str, Any]:
    """On this machine alone (L1 and L2 untouched, so it can run beside the playbooks): align the bundles
    `capture_workflow` fetched into ``out``, with and without the offset changes, run the three analyses and, for
    a kvm-clock L2, the sched_clock routes. Returns the summary (also written to ``out/lab-summary.json``)."""
    kvmclock = l2["setup"] == "kvmclock"
    host, guest = str(out / "host"), str(out / "guest")
    code, verdict = _tsalign("align", "--host", host, "--guest", guest, "-o", str(out / "aligned"))
    code1, one = _tsalign("align", "--host", host, "--guest", guest, "-o", str(out / "aligned-one-snapshot"),
                          "--ignore-offset-changes")
    analyses = {}
    for kind in ("irq", "vcpu", "io"):
        c, doc = _tsalign("analyze", kind, "--host", host, "--guest", guest, "-o", str(out / f"analysis-{kind}"))
        analyses[kind] = {"exit": c, "status": doc.get("status"), "summary": doc.get("summary"),
                          "needs": doc.get("needs")}
    routes = kvmclock_routes(out) if kvmclock else None
    summary = {"setup": l2["setup"], "l2_clocksource": l2.get("clocksource"), "exit": code, "verdict": verdict,
               "kvmclock_routes": routes,
               "one_snapshot": {"exit": code1, "verdict": one["verdict"], "reasons": one["reasons"]},
               "analyses": analyses}
    (out / "lab-summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def kvmclock_routes(out: Path) -> dict[str, Any]:
    """The kvm-clock guest's `local` (sched_clock ns) capture aligned through the host's pvclock records, alone
    (``pvclock``) and with the guest's own calibration given (``calibration``: align still converts through the
    pvclock records, which it prefers, and cross-checks the calibration against them per vCPU), each judged by the
    evidence and compared with the truth: the same events' x86-tsc timestamps in the guest's TSC capture of the
    same window (events whose cpu, pid, name and payload occur once in each)."""
    res: dict[str, Any] = {}
    runs: dict[str, list[str]] = {"pvclock": []}
    if (out / "calibration.json").is_file():
        runs["calibration"] = ["--guest-calibration", str(out / "calibration.json")]
        local = json.loads((out / "calibration.json").read_text())["clocks"]["local"]
        res["calibration_file"] = {k: local[k] for k in ("bound_cycles", "bound_ns", "disturbed", "notes")} | {
            "pieces": len(local["pieces"])}
    else:
        res["calibration"] = {"error": (out / "calibrate.log").read_text()[-2000:]}
    for name, extra in runs.items():
        code, v = _tsalign("align", "--host", str(out / "host"), "--guest", str(out / "guest-local"), *extra,
                           "-o", str(out / f"aligned-local-{name}"))
        if "verdict" not in v:
            res[name] = {"exit": code, "error": v.get("error")}
            continue
        res[name] = {"exit": code, "verdict": v["verdict"], "reasons": v["reasons"][:6],
                     "cross_check": v.get("kvmclock_cross_check"),
                     "bounds": v["guest_conversion"],
                     "notes": [n for n in v["notes"] if "converted" in n or "pvclock" in n],
                     "truth": _truth(out / f"aligned-local-{name}" / "timeline.jsonl", out / "guest"),
                     "evidence": _violations(out / f"aligned-local-{name}", out / "guest-local", out / "guest")}
    if (out / "perf" / "perf.txt").is_file() and "calibration" in runs:
        res["perf"] = perf_route(out)
    return res


def perf_route(out: Path) -> dict[str, Any]:
    """L2's `perf record` (`perf script --ns` text, perf's clock: local_clock()) aligned through the calibration
    measured in L2 meanwhile (its ``perf`` clock), judged by the evidence and compared with the truth (`_truth`:
    the same hits' x86-tsc stamps in the guest's TSC capture); and with that calibration moved by 1 ms of cycles
    (``moved``: each perf ns predicted 1 ms later), which the evidence must fail."""
    cal = json.loads((out / "calibration.json").read_text())
    khz = cal["clocks"]["perf"]["tsc_khz"]
    for piece in cal["clocks"]["perf"]["pieces"]:
        piece["tsc_timestamp"] += khz
    (out / "calibration-moved.json").write_text(json.dumps(cal))
    res: dict[str, Any] = {"events": sum(1 for _ in (out / "perf" / "perf.txt").open()), "tsc_khz": khz}
    for name, f in (("calibration", "calibration.json"), ("moved", "calibration-moved.json")):
        code, v = _tsalign("align", "--host", str(out / "host"), "--guest", str(out / "perf" / "perf.txt"),
                           "--guest-calibration", str(out / f), "-o", str(out / f"aligned-perf-{name}"))
        if "verdict" not in v:
            res[name] = {"exit": code, "error": v.get("error")}
            continue
        per = v["evidence"]["per_vcpu"]
        res[name] = {"exit": code, "verdict": v["verdict"], "reasons": v["reasons"][:6],
                     "bounds": v["guest_conversion"], "notes": [n for n in v["notes"] if n.startswith("guest perf ")],
                     "evidence": {f"vcpu{d['vcpu']}": {"checked": d["checked"], "violated": d["violated"]} for d in per},
                     "truth": _truth(out / f"aligned-perf-{name}" / "timeline.jsonl", out / "guest", keep_all=True)}
    return res


def _violations(aligned: Path, local_bundle: Path, tsc_bundle: Path) -> dict[str, Any]:
    """Per vCPU: evidence items checked and violated, the worst violation, and how much later than the x86-tsc
    stamp of the same hit (the other instance) its guest event's sched_clock stamp converted
    (``worst_stamp_late_cycles``; None when the hit is not in both captures once)."""
    from tsalign.traces.bundle import Bundle

    v = json.loads((aligned / "verdict.json").read_text())
    worst = {d["vcpu"]: d.get("worst_violation") for d in v["evidence"]["per_vcpu"]}
    at = {w["guest_tsc"] for w in worst.values() if w}
    keys = {e["guest_tsc"]: (e["cpu"], e["pid"], e["event"], e["payload"])
            for e in map(json.loads, (aligned / "timeline.jsonl").open()) if e["side"] == "guest" and e["guest_tsc"] in at}
    truth = _once(((r.cpu, r.pid, r.event, r.payload), r.ts) for r in Bundle.open(str(tsc_bundle)).records())
    local = _once(((r.cpu, r.pid, r.event, r.payload), r.ts) for r in Bundle.open(str(local_bundle)).records())

    def late(w: dict[str, Any] | None) -> int | None:
        k = keys.get(w["guest_tsc"]) if w else None
        return w["guest_tsc"] - truth[k] if w and k in truth and k in local else None

    return {f"vcpu{d['vcpu']}": {"checked": d["checked"], "violated": d["violated"], "worst": worst[d["vcpu"]],
                                 "worst_stamp_late_cycles": late(worst[d["vcpu"]])}
            for d in v["evidence"]["per_vcpu"]}


def _once(items: Any) -> dict[tuple, int]:
    """key -> timestamp for the keys seen exactly once."""
    seen: dict[tuple, list[int]] = {}
    for key, ts in items:
        seen.setdefault(key, []).append(ts)
    return {k: v[0] for k, v in seen.items() if len(v) == 1}


def _truth(timeline: Path, tsc_bundle: Path, keep_all: bool = False) -> dict[str, dict[str, Any]]:
    """Per vCPU and event name: the x86-tsc timestamp of an event minus the TSC its `local` timestamp was
    converted to (per event: the kernel writes a hit into the instances in the order that event was enabled in
    them, and the two captures enable their events concurrently, so the order is one per event, not one per run).
    ``keep_all``: each entry also lists every difference, in order (``all``)."""
    from tsalign.traces.bundle import Bundle

    recs = list(Bundle.open(str(tsc_bundle)).records())
    lo, hi = min(r.ts for r in recs), max(r.ts for r in recs)
    # only what was converted into the TSC capture's span (a trace that is longer holds hits the capture missed)
    conv = _once(((e["cpu"], e["pid"], e["event"], e["payload"]), e["guest_tsc"])
                for e in map(json.loads, timeline.open()) if e["side"] == "guest" and lo <= e["guest_tsc"] <= hi)
    truth = _once(((r.cpu, r.pid, r.event, r.payload), r.ts) for r in recs)
    per: dict[tuple[int, str], list[int]] = {}
    for k in conv.keys() & truth.keys():
        per.setdefault((k[0], k[2]), []).append(truth[k] - conv[k])
    res: dict[str, dict[str, Any]] = {}
    for (c, ev), d in sorted(per.items()):
        d.sort()
        res.setdefault(f"vcpu{c}", {})[ev] = {"matched": len(d), "min": d[0], "median": d[len(d) // 2], "max": d[-1],
                                              "lowest": d[:8], "highest": d[-8:]} | ({"all": d} if keep_all else {})
    return res


def off_readings(d: dict[str, Any], below: int, above: int) -> tuple[int, int]:
    """Of one vCPU's and event's `_truth` entry: how many differences lie beyond the one-sided bound its order
    allows (counted among the 8 most extreme: 8 means "8 or more"), and how many may (`_route_verdict`'s
    allowance: L2's kvm-clock returns a reading off by up to milliseconds on about 1 event in 1 000-3 000)."""
    beyond = sum(x > below for x in d["highest"]) if d["median"] <= 0 else sum(x < -above for x in d["lowest"])
    return beyond, min(7, allowed_off(d["matched"]))


def allowed_off(n: int) -> int:
    """How many of ``n`` readings of L2's kvm-clock may be off by milliseconds (seen: about 1 in 1 000-3 000;
    README, "nested lab"): at most 3, or 0.1 %."""
    return max(3, n // 1000)


def inventory(l1: dict[str, Any], l2: dict[str, Any] | None, path: Path) -> Path:
    """An Ansible inventory naming L1 a KVM host (``lab-l1``) and L2 its guest (``lab-l2``: QEMU VM ``l2``,
    started by hand (``tsalign_guest_vmm: qemu``), reached through L1 with an ssh ProxyCommand); L1 alone
    without ``l2``."""
    common = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=120 "
              "-o ServerAliveInterval=10 -o ServerAliveCountMax=12")
    node = {"ansible_user": "root", "ansible_ssh_private_key_file": l1["key"], "ansible_python_interpreter": "/usr/bin/python3"}
    groups: dict[str, Any] = {
        "tsalign_hosts": {"hosts": {"lab-l1": {**node, "ansible_host": "127.0.0.1", "ansible_port": l1["port"],
                                               "ansible_ssh_common_args": common}}}}
    if l2 is not None:
        jump = " ".join([*vm.ssh_argv(l1)[:-3], "-W", f"127.0.0.1:{l2['port']}", "-p", str(l1["port"]),
                         "root@127.0.0.1"])
        groups["tsalign_guests"] = {"hosts": {"lab-l2": {**node, "ansible_host": "lab-l2",
                                                         "ansible_ssh_common_args": f"{common} -o 'ProxyCommand={jump}'",
                                                         "tsalign_guest_host": "lab-l1", "tsalign_guest_domain": "l2",
                                                         "tsalign_guest_vmm": "qemu"}}}
    inv = {"all": {"children": groups}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(inv, indent=1))  # JSON is YAML
    return path


def _l2_console(l1: dict[str, Any]) -> str:
    """L2's serial console tail and L1's view of it (is QEMU alive, does its port answer), for a failure's message."""
    try:
        r = vm.ssh(l1, "echo '--- L2 console tail:'; tail -c 1500 /root/l2.serial; echo; echo '--- L2 QEMU:'; "
                       "kill -0 $(cat /root/l2.pid) && echo alive || echo gone; echo '--- its stderr:'; "
                       "tail -c 3000 /root/l2.stderr; free -m; "
                       "echo '--- L1 kernel log tail:'; dmesg | tail -25; df -h / /var/tmp", timeout=60)
        if r.returncode != 255:
            return r.stdout[-6000:]
        why = f"L1 did not answer SSH: {r.stderr.strip()[-300:]}"
    except subprocess.TimeoutExpired:
        why = "L1 did not answer"
    try:  # L1's own serial console is a file on this machine
        return f"({why})\n--- L1 console tail:\n{Path(l1['serial']).read_text(errors='replace')[-3000:]}"
    except (OSError, KeyError):
        return f"({why})"


def playbook(inv: Path, name: str, *extra: str, log: Path) -> subprocess.CompletedProcess:
    """ansible-playbook with the repository's ansible.cfg. Over nested SSH (L2 behind L1, both under TCG) a new
    connection can be closed during key exchange when a guest is slow: one long-lived control master per node
    for the whole run, and ssh's own retries (exit 255 only) for the rest."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(vm.REPO / "ansible.cfg"), "ANSIBLE_SSH_RETRIES": "8",
           "ANSIBLE_TIMEOUT": "120", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_SSH_ARGS": (
               "-o ControlMaster=auto -o ControlPersist=1200s -o ServerAliveInterval=10 -o ServerAliveCountMax=12"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # the junit callback keeps each task's duration (log.parent/junit-<playbook>/)
    env |= {"ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.junit", "JUNIT_OUTPUT_DIR": str(log.parent / f"junit-{name}")}
    with _step(name):
        r = subprocess.run(["ansible-playbook", "-i", str(inv), f"playbooks/{name}", *extra], cwd=vm.REPO,
                           capture_output=True, text=True, timeout=1800, env=env)
    log.write_text(r.stdout + r.stderr)
    return r


def run_playbooks(l1: dict[str, Any], l2: dict[str, Any], out: Path) -> dict[str, Any]:
    """The seed's workflow on the lab through the playbooks, as a fleet job runs it: ``setup.yml`` (host role
    on L1 incl. the kprobe route; guest role on L2, whose kernel its VMM loads, so it says what to change on
    the host instead of GRUB), ``precheck.yml`` over both, ``capture.yml`` capturing L1 and L2 together while
    L2 runs a workload (sleeps, O_DIRECT IO) and aligning. Writes under ``out``; returns a summary."""
    from tsalign.capture.capture import DEFAULT_HOST_EVENTS

    out = out.resolve()  # the playbooks resolve a relative directory against their own
    out.mkdir(parents=True, exist_ok=True)
    inv = inventory(l1, l2, out / "inventory.yml")
    r = playbook(inv, "setup.yml", "-e", f"tsalign_guest_calibration_dir={out}/calibration", "-e",
                 "tsalign_guest_calibration_pairs=6000", "-e", "tsalign_guest_calibration_seconds=5", log=out / "setup.log")
    if r.returncode != 0:
        raise RuntimeError(f"setup.yml failed (log {out}/setup.log): {r.stdout[-3000:]}\n{_l2_console(l1)}")
    host_side = "its kernel is loaded by the VMM" in r.stdout
    cal = out / "calibration" / "lab-l2.json"
    calibration = {c: {k: d[k] for k in ("bound_cycles", "bound_ns", "disturbed", "notes")} | {"pieces": len(d["pieces"])}
                   for c, d in json.loads(cal.read_text())["clocks"].items()} if cal.is_file() else None
    r = playbook(inv, "precheck.yml", "-e", f"tsalign_precheck_dir={out}/precheck", "-e", "tsalign_precheck_fail_on=never",
                  log=out / "precheck.log")
    if r.returncode != 0:
        raise RuntimeError(f"precheck.yml failed (log {out}/precheck.log): {r.stdout[-3000:]}\n{_l2_console(l1)}")
    # a workload on each vCPU (pinned: an idle vCPU of L2 may log no guest event in the 8 s capture, and then has no
    # evidence; CI of 2026-12-02 failed so), running until L2's capture by capture.yml is over (its process, named in
    # the job's pid file, gone), capture.yml is done (a stop file) or 30 min at most: capture.yml reaches L2's capture
    # only minutes after it starts (Ansible tasks on L2 cost 25-115 s each), when a workload of fixed length would be
    # over. Not longer: L1 (one CPU) reads its 64 MiB ring buffer as text after L2's capture, in the job's time
    # budget, and a busy L2 would take most of L1's CPU from it. It outlives this SSH session.
    vm.ssh(l2, "rm -f /root/lab-stop /var/tmp/tsalign-capture-*; for c in 0 1; do taskset -c $c sh -c 'end=$(( $(date +%s) + 1800 )); "
               "p=; while [ ! -e /root/lab-stop ] && [ $(date +%s) -lt $end ]; do "
               "if [ -z \"$p\" ]; then p=$(cat /var/tmp/tsalign-capture-*.pid 2>/dev/null | head -1); "
               "elif ! kill -0 \"$p\" 2>/dev/null; then break; fi; sleep 0.5; "
               "dd if=/dev/zero of=/root/lab-io-'$c'.bin bs=64k count=4 oflag=direct 2>/dev/null; "
               "dd if=/root/lab-io-'$c'.bin of=/dev/null bs=64k iflag=direct 2>/dev/null; done' "
               "> /dev/null 2>&1 < /dev/null & done", timeout=60)
    cap = out / "capture"
    # x86-tsc, not L2's sched_clock (tsalign_capture_guest_clock=local): L2's kvm-clock wanders against its TSC
    # (its pvclock is not TSC-stable; L1's clock is not its TSC), and a calibration measured after the capture
    # (1 min: 27.6k cycles) or by the guest role (10 min: 67k) lay beyond the bounds from L1's pvclock route, so
    # the cross-check failed those alignments, rightly; one measured during the capture agrees (run_workflow)
    # capture.yml's timing defaults: L1 records before L2's capture starts and until 3 s after it ended (each Ansible
    # task on L2 costs 15-50 s under nested TCG; a fixed host margin had to cover that, and once did not)
    # L1's ring buffer as in the CLI workflow (64 MiB): with capture.yml's 16 MiB default, L1 (slower on the CI machine
    # of 2026-12-02, its capture running minutes while Ansible reaches L2) lost 430 k of 840 k events and the
    # verdict, rightly, could not use the vCPU runs; with 64 MiB, reading it after the capture, under nested TCG on
    # a slow machine, needs more than the default 300 s budget margin
    r = playbook(inv, "capture.yml", "-e", "tsalign_capture_guest=lab-l2", "-e", "tsalign_capture_seconds=8", "-e",
                  "tsalign_capture_host_buffer_kb=65536", "-e", "tsalign_capture_budget_margin=900", "-e",
                  f"tsalign_capture_host_events={','.join([*DEFAULT_HOST_EVENTS, *HOST_EXTRA])}",
                  "-e", f"tsalign_capture_dir={cap}", "-e", "tsalign_capture_fail_on=never", log=out / "capture.log")
    vm.ssh(l2, "touch /root/lab-stop", timeout=60)
    if r.returncode != 0 or not (cap / "aligned" / "verdict.json").is_file():
        jobs = "".join(j.read_text() for j in sorted(out.glob("capture/job-*.json")) + sorted(out.glob("job-*.json")))
        raise RuntimeError(f"capture.yml failed (log {out}/capture.log): {r.stdout[-3000:]}\n--- the job's summary:\n"
                           f"{jobs[-4000:]}\n{_l2_console(l1)}")
    prechecks = {n: json.loads((out / "precheck" / f"{n}.json").read_text()) for n in ("lab-l1", "lab-l2")}
    summary = {"setup": l2["setup"], "verdict": json.loads((cap / "aligned" / "verdict.json").read_text()),
               "guest_role_host_side_change": host_side, "guest_role_calibration": calibration,
               "prechecks": {n: {"verdict": p["verdict"], "role": p["role"],
                                 "checks": {c["id"]: c["status"] for c in p["checks"]}} for n, p in prechecks.items()}}
    (out / "playbooks-summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _print_verdict(label: str, v: dict[str, Any], path: str) -> None:
    print(f"{label}: verdict {v['verdict']} ({v['brackets']['checked']} evidence items, {v['brackets']['violated']} "
          f"violated; {v['offsets']['changes_seen']} offset changes) {path}", flush=True)
    for r in v["reasons"]:
        print(f"  reason: {r}", flush=True)
    for d in v["evidence"]["per_vcpu"]:
        print(f"  vcpu{d['vcpu']}: {d['offset_in_use']['distinct']} offsets in use, error bound "
              f"{d['width_cycles']} cycles ({d['width_ns']} ns), kinds {', '.join(d['evidence'])}", flush=True)


def check_workflow(s: dict[str, Any], setup: str, out: Path) -> None:
    """The seed's workflow on L2 judged (AssertionError when not): clocksource of the setup, a verdict
    backed by evidence with no violation, offsets that changed, both vCPUs judged by vCPU runs and MSR
    writes, the one-snapshot alignment caught, the three analyses answered."""
    assert s["l2_clocksource"] in (("kvm-clock",) if setup == "kvmclock" else ("tsc", "tsc-early")), s["l2_clocksource"]
    v = s["verdict"]
    assert v["verdict"] in ("pass", "warn") and v["brackets"]["violated"] == 0, v["reasons"]
    assert not [r for r in v["reasons"] if "placed with" not in r], v["reasons"]  # warn only for placement
    assert v["offsets"]["changes_seen"] > 100 and v["evidence"]["vcpu_run_source"] == {
        "vcpu0": "kvm_entry/kvm_exit", "vcpu1": "kvm_entry/kvm_exit"}
    per = {d["vcpu"]: d for d in v["evidence"]["per_vcpu"]}
    assert set(per) == {0, 1}
    for d in per.values():
        assert d["offset_in_use"]["distinct"] > 10 and d["width_cycles"] is not None and d["violated"] == 0
        assert {"vcpu_run", "msr_write"} <= set(d["evidence"]), d["evidence"]
        assert all(val != 0 for val in d["sources"]["debugfs"]["values"])
    assert s["one_snapshot"]["verdict"] == "fail", s["one_snapshot"]["reasons"]
    a = s["analyses"]
    assert a["irq"]["status"] == "ok" and a["irq"]["summary"]["matched"] > 0, a["irq"]
    assert a["irq"]["summary"]["latency"]["cycles"]["min"] > 0
    assert a["vcpu"]["status"] == "ok" and a["vcpu"]["summary"]["vcpus"] == [0, 1], a["vcpu"]
    io = a["io"]["summary"]
    assert a["io"]["status"] == "ok" and io["completed"] > 0 and io["with_host_io"] > 0, a["io"]
    assert (out / "aligned" / "verdict.json").is_file()
    if setup == "kvmclock":
        check_kvmclock_routes(s["kvmclock_routes"])
        check_perf_route(s["kvmclock_routes"]["perf"])


def check_kvmclock_routes(routes: dict[str, Any]) -> None:
    """A kvm-clock L2's sched_clock capture: through the host's pvclock records it passes the evidence (or fails
    only as `_route_verdict` allows), and no converted TSC but a few (`off_readings`) lies beyond the stated bound
    from the x86-tsc stamp the same hit got in the other instance, per event in the order the data shows (see
    `_truth`). With the calibration measured in L2 meanwhile given too, the same, and the calibration agrees with
    the pvclock route on both vCPUs."""
    for route in ("pvclock", "calibration"):
        _route_verdict(routes[route])
    pv = routes["pvclock"]
    truth = pv["truth"]
    assert truth and all(sum(d["matched"] for d in evs.values()) > 20 for evs in truth.values()), truth
    below, above = pv["bounds"]["below_cycles"], pv["bounds"]["above_cycles"]
    for v, evs in truth.items():
        for ev, d in evs.items():
            # the kernel writes a hit into the instances in the order that event was enabled in them, a race between
            # the two captures decided per event (seen: block_rq_* sched_clock first, the rest x86-tsc first in one
            # run): x86-tsc first (median <= 0) -> the truth precedes the true local reading, so truth minus
            # converted is at most `below`; local first -> it follows, so it is at least -`above` (one-sided either
            # way; a route error the race would hide is bounded by the calibration's cross-check), but for the few
            # readings L2's kvm-clock gets wrong by milliseconds (`off_readings`)
            beyond, allowed = off_readings(d, below, above)
            assert beyond <= allowed, (v, ev, d, below, above)
    cal = routes["calibration"]
    assert cal["cross_check"]["agree"] and set(cal["cross_check"]["per_vcpu"]) == {"vcpu0", "vcpu1"}, cal["cross_check"]


#: a vCPU's share of evidence items (and of matched hits) L2's lagging perf readings may contradict (measured:
#: 0.6-2.3 % of the items, up to 4 % of a vCPU's sched_switch hits with the suite's load beside it; see check_perf_route)
PERF_LAGGING = 0.10
#: a perf calibration's bound (cycles, ~1 ms) beyond which the perf route is checked for honesty only
PERF_TIGHT = 2_600_000


def check_perf_route(r: dict[str, Any]) -> None:
    """L2's `perf record` through the calibration measured in L2 (`perf_route`), against the x86-tsc stamps the same
    hits got in the guest's TSC capture. Which probe of a hit runs first, perf's or ftrace's, is the race of who
    enabled the event first (perf starts first but attaches seconds later under nested TCG; seen both ways), read
    from the data per event as in `check_kvmclock_routes`: perf first (median > 0) -> no converted stamp lies later
    than the x86-tsc one beyond the calibration's bound; ftrace first -> none earlier, but for the lagging readings
    below. Either way the two probes' gap is small at the median (nested TCG: ~15-25 us).
    L2's sched_clock is not stable, so perf's clock (local_clock()) is held at most one tick (4 ms at HZ=250) past
    the last tick: a few readings lag the TSC by up to the time their vCPU was away (measured: 0.6-1.1 % of the
    evidence items contradicted, 3-5 ms). The calibration names the cause (its note, repeated by align); the
    evidence contradicts no more than PERF_LAGGING of a vCPU's items. The calibration moved by 1 ms (each stamp
    converted 1 ms later) fails both the evidence, on far more items, and the truth.
    (The host's pvclock records convert sched_clock, not local_clock: perf's time has no host route on such a guest.)"""
    from tsalign.clock.calib import UNSTABLE_PERF_NOTE

    assert r["events"] > 1000, r
    good, moved = r["calibration"], r["moved"]
    assert "verdict" in good and "verdict" in moved, r
    below, above = good["bounds"]["below_cycles"], good["bounds"]["above_cycles"]
    assert any(UNSTABLE_PERF_NOTE in n for n in good["notes"]) or good["verdict"] == "pass", good["notes"]
    assert good["verdict"] in ("pass", "warn") or (good["verdict"] == "fail" and good["exit"] == 1), good
    if max(below, above) > PERF_TIGHT:
        _check_loose_perf_calibration(good, moved, below, above, r["tsc_khz"])
        return
    matched = 0
    for v, evs in good["truth"].items():
        for ev, d in evs.items():
            matched += d["matched"]
            if d["matched"] < 20:
                continue
            assert abs(d["median"]) <= 500_000, (v, ev, d)
            if d["median"] > 0:  # perf first: never converted later than the truth allows
                assert d["lowest"][0] >= -above, (v, ev, d, above)
            else:  # ftrace first: never converted earlier, but for the lagging readings
                lagging = sum(x > below for x in d["all"])
                assert lagging <= max(1, PERF_LAGGING * d["matched"]), (v, ev, lagging, d["matched"], below)
    # no hit in both captures: perf started (under load) only after the guest's x86-tsc capture was over — the truth
    # is then unavailable and the evidence alone judges (seen once: 3 125 perf events, none in the capture's span)
    if not good["truth"]:
        print("perf route: no hit in both captures (perf recorded outside the x86-tsc capture): evidence only", flush=True)
    assert matched > 100 or not good["truth"], good["truth"]
    for v, d in good["evidence"].items():
        assert d["checked"] > 500 and d["violated"] <= PERF_LAGGING * d["checked"], (v, d, good["reasons"])
        m = moved["evidence"][v]
        assert m["violated"] > max(3 * d["violated"], 100), (v, m, d)
    assert moved["verdict"] == "fail" and moved["exit"] == 1, moved
    assert any(abs(d["median"]) > 500_000 for evs in moved["truth"].values() for d in evs.values()) \
        or not good["truth"], moved["truth"]


def _check_loose_perf_calibration(good: dict[str, Any], moved: dict[str, Any], below: int, above: int,
                                  khz: int) -> None:
    """A perf calibration whose own fit says it is loose (its bound beyond PERF_TIGHT: L2's perf clock wandered
    against its TSC while it was measured — seen once, under the full suite's load, 53.7 M cycles, 20 ms): no evidence
    can tell a 1 ms move within such a bound (seen again, 6.8 M cycles: the moved calibration violated 6 and 17
    items, the measured one 6 and 8), so what is checked is its honesty — every converted stamp lies within the
    stated bound (plus the probes' gap) of the truth but for the lagging readings PERF_LAGGING allows (perf's
    clock held past a tick: up to 21.8 M cycles early; 30.5 M once, an IRQ handler's), the unstable clock is named,
    and the conversion follows the
    calibration: moved by 1 ms, every vCPU's median difference moves by that much (1 %)."""
    from tsalign.clock.calib import UNSTABLE_PERF_NOTE

    print(f"perf route: the calibration measured in L2 is loose ({max(below, above)} cycles): checked for honesty only",
          flush=True)
    assert any(UNSTABLE_PERF_NOTE in n for n in good["notes"]), good["notes"]
    gap = 500_000
    shift = []
    for v, evs in good["truth"].items():
        for ev, d in evs.items():
            # never converted later than the bound allows; earlier only for the lagging readings — a share of an
            # event's hits, judged as when tight where there are 20 or more (CI of 2026-12-04: irq_handler_entry, 6
            # hits, 2 lagging 3.1 and 12.5 ms: the handlers of an idle vCPU, whose tick was stopped)
            assert -above - gap <= d["min"], (v, ev, d, below, above)
            lagging = sum(x > below + gap for x in d["all"])
            assert d["matched"] < 20 or lagging <= PERF_LAGGING * d["matched"], (v, ev, d, below, above)
            m = moved["truth"].get(v, {}).get(ev)
            if m and d["matched"] >= 20 and m["matched"] >= 20:
                shift.append(d["median"] - m["median"])
    assert shift and all(abs(x - khz) <= khz // 100 for x in shift), (shift, khz)


def _route_verdict(r: dict[str, Any]) -> None:
    """A sched_clock route's verdict passes; or it fails on a few readings only: at most 3 or 0.1 % of a vCPU's
    items. Seen on L2's non-TSC-stable kvm-clock, and not explained (README, "nested lab"): suite run of 2026-12-02
    04:05, 3 of 9 089 items, 1.8-2.0M cycles, the worst events converted 81k and 2.2M cycles *before* the x86-tsc
    stamp of the same hit; CI of 2026-12-02 06:05, 7 of 8 744 items, 1.8-2.1M cycles, the worst events (TSC-deadline
    writes in hardirq context) converted 9.2M cycles (3.7 ms) *after* it, past the very deadline they programmed,
    while every traced pvclock record of both vCPUs converts those stamps to the same TSC within 2 cycles. The
    x86-tsc capture of the same hits passes the evidence (checked by the caller). A conversion off everywhere
    violates far more items than this allows."""
    assert "verdict" in r, r
    if r["verdict"] in ("pass", "warn") and r["exit"] in (0, 2):
        return
    assert r["verdict"] == "fail" and r["exit"] == 1, r
    assert any(d["violated"] for d in r.get("evidence", {}).values()), r  # failed by the evidence, not otherwise
    for v, d in r["evidence"].items():
        assert d["violated"] <= allowed_off(d["checked"]), (v, d, r["reasons"])


def check_playbooks(p: dict[str, Any]) -> None:
    """The seed's workflow through the playbooks on an L2 on the TSC: a verdict backed by evidence on both vCPUs
    with changing offsets, the guest role saying what to change on the host side (a VMM-loaded kernel), and
    precheck reports for L1 (host) and L2 (guest); a kvm-clock L2 calibrated by the guest role (pairs measured in
    L2 by its standard-library node code, fitted on the controller), an L2 on the TSC not."""
    v = p["verdict"]
    assert v["verdict"] in ("pass", "warn") and v["brackets"]["violated"] == 0, v["reasons"]
    assert v["offsets"]["changes_seen"] > 100, v["offsets"]["changes_seen"]
    per = {d["vcpu"]: d for d in v["evidence"]["per_vcpu"]}
    assert set(per) == {0, 1} and all(d["width_cycles"] is not None and d["violated"] == 0 for d in per.values()), {
        v: {k: d[k] for k in ("delta_interval", "checked", "violated", "evidence")} for v, d in per.items()}
    assert p["guest_role_host_side_change"]
    pre = p["prechecks"]
    assert pre["lab-l1"]["role"] == "host" and pre["lab-l2"]["role"] == "guest", pre
    assert pre["lab-l1"]["checks"]["kvm_vms"] != "fail", pre
    # the guest's sched_clock as its setup has it: the TSC with no-kvmclock, else kvm-clock (a warning naming routes)
    assert pre["lab-l2"]["checks"]["sched_clock"] == ("ok" if p["setup"] == "tsc" else "warn"), pre
    cal = p["guest_role_calibration"]
    if p["setup"] == "tsc":
        assert cal is None, cal
    else:  # L2's own calibration through the CLI: a bound of ~15k cycles under nested TCG (check_kvmclock_routes);
        # perf's clock (local_clock() on L2's unstable sched_clock) may wander further under load (12.5 M cycles in
        # this session's CI): a wider perf bound must come with the note naming why
        from tsalign.clock.calib import UNSTABLE_PERF_NOTE

        assert cal and set(cal) == {"local", "perf"} and all(d["bound_cycles"] > 0 for d in cal.values()), cal
        assert cal["local"]["bound_cycles"] < 10**7, cal
        assert cal["perf"]["bound_cycles"] < 10**7 or any(UNSTABLE_PERF_NOTE in n for n in cal["perf"]["notes"]), cal


def _run(out: str) -> int:
    l1 = up(for_l2=True)
    results = {}
    try:
        for setup in SETUPS:
            l2 = l2_up(l1, setup)
            try:
                s = run_workflow(l1, l2, Path(out) / setup)
            finally:
                l2_down(l1)
            results[setup] = s["verdict"]["verdict"]
            try:
                check_workflow(s, setup, Path(out) / setup)
            except AssertionError as e:
                print(f"{setup}: check failed: {e}", flush=True)
                results[setup] = "check failed"
            _print_verdict(f"{setup} (CLI; L2 clocksource {s['l2_clocksource']}; one snapshot: "
                           f"{s['one_snapshot']['verdict']})", s["verdict"], f"{out}/{setup}/aligned/verdict.json")
            for route, d in (s.get("kvmclock_routes") or {}).items():
                print(f"  sched_clock via {route}: {json.dumps(d)[:1500]}", flush=True)
        l2 = l2_up(l1, "tsc")  # the seed's configuration, as a fleet job runs it
        try:
            p = run_playbooks(l1, l2, Path(out) / "playbooks")
        finally:
            l2_down(l1)
        results["playbooks"] = p["verdict"]["verdict"]
        try:
            check_playbooks(p)
        except AssertionError as e:
            print(f"playbooks: check failed: {e}", flush=True)
            results["playbooks"] = "check failed"
        print("prechecks: " + ", ".join(f"{n} {x['verdict']}" for n, x in p["prechecks"].items()), flush=True)
        _print_verdict("tsc (setup.yml, precheck.yml, capture.yml)", p["verdict"],
                       f"{out}/playbooks/capture/aligned/verdict.json")
    finally:
        down(l1)
        print("lab steps (wall s): " + ", ".join(f"{n} {t}" for n, t in TIMINGS), flush=True)
    return 0 if all(v in ("pass", "warn") for v in results.values()) else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("run", "up", "down"))
    ap.add_argument("--out", default="out/lab")
    ap.add_argument("--state")
    ap.add_argument("--setup", choices=SETUPS, default="kvmclock")
    a = ap.parse_args()
    if a.action == "run":
        sys.exit(_run(a.out))
    if not a.state:
        ap.error("--state is required for up/down")

    def start() -> dict[str, Any]:
        l1 = up(for_l2=True)
        l1["l2"] = {k: v for k, v in l2_up(l1, a.setup).items() if k != "jump"}
        return l1

    run_state_cli(a.action, a.state, start, down)


if __name__ == "__main__":
    main()
