"""The Ansible roles against real SSH targets: a Debian bookworm rootfs served by sshd in a network
namespace (molecule scenario guest-netns, plus direct plays for bad input), and this machine itself
for the host role and precheck.yml."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.infra import netns
from tests.infra.artefacts import cached
from tests.infra.statecli import terminate
from tsalign.fleet.ingest import ingest
from tsalign.fleet.query import query

REPO = Path(__file__).resolve().parents[2]
CACHE = os.environ.get("TSALIGN_CACHE", "/var/cache/tsalign")
BIN = Path(sys.executable).parent


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PY_COLORS"] = "0"
    return env


def _rootfs() -> str:
    return cached("TSALIGN_ROOTFS", "rootfs-bookworm-*", "Debian rootfs (scripts/build-rootfs.sh)")


def _tools() -> None:
    need(os.geteuid() == 0, "needs root (network namespaces, mounts)")
    need(shutil.which("ansible-playbook", path=str(BIN)) and shutil.which("molecule", path=str(BIN)),
         "ansible-core and molecule not installed in the venv (make test installs them)")


def run(*argv: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{' '.join(argv)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    return r


def recap(out: str) -> dict:
    m = re.findall(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out)
    assert m, out[-2000:]
    ok, changed, unreachable, failed = map(int, m[-1])
    return {"ok": ok, "changed": changed, "unreachable": unreachable, "failed": failed}


def test_guest_role_molecule_scenario() -> None:
    """check/diff on a fresh target changes nothing; converge; idempotence; check again; testinfra."""
    _tools()
    os.environ["TSALIGN_ROOTFS"] = _rootfs()
    run("molecule", "destroy", "-s", "guest-netns")
    try:
        run("molecule", "create", "-s", "guest-netns")
        # molecule's ephemeral dir is keyed by the project path: the newest state file is ours
        state = max(glob.glob(os.path.expanduser("~/.ansible/tmp/molecule.*.guest-netns/netns.json")),
                    key=os.path.getmtime)
        st = json.loads(Path(state).read_text())
        grub_before = (Path(st["root"]) / "etc/default/grub").read_text()
        r = run("molecule", "converge", "-s", "guest-netns", "--", "--check", "--diff")
        assert "-kernel command line: \n" in r.stdout or "-kernel command line:" in r.stdout
        assert "+kernel command line: no-kvmclock tsc=reliable" in r.stdout
        root = Path(st["root"])
        assert (root / "etc/default/grub").read_text() == grub_before, "check mode changed the GRUB config"
        assert not (root / "opt/tsalign").exists(), "check mode installed the node code"
        assert not list((root / "tmp").glob("tsalign-check-*")), "check mode left its temporary copy"
        r = run("molecule", "converge", "-s", "guest-netns")
        assert recap(r.stdout)["changed"] > 0
        assert "no-kvmclock tsc=reliable" in (root / "etc/default/grub").read_text()
        run("molecule", "idempotence", "-s", "guest-netns")
        r = run("molecule", "converge", "-s", "guest-netns", "--", "--check", "--diff")
        assert recap(r.stdout)["changed"] == 0
        r = run("molecule", "verify", "-s", "guest-netns")
        out = r.stdout + r.stderr
        assert "4 passed" in out and not re.search(r"\d+ (skipped|failed|error)", out), out[-2000:]
    finally:
        run("molecule", "destroy", "-s", "guest-netns", check=False)
    # its own namespace is gone (others' -- a concurrent run's, or one a killed run left -- are not this test's)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert st["netns"] not in left, left


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict]:
    """A netns target (param: netns.up's keywords, e.g. {"python": False}) and an inventory file for it."""
    _tools()
    st = netns.up(_rootfs(), **getattr(request, "param", {}))
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  children:\n    tsalign_guests:\n      hosts:\n        guest-under-test:\n"
        f"          ansible_host: {st['ip']}\n          ansible_user: root\n"
        f"          ansible_ssh_private_key_file: {st['key']}\n"
        "          ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
        "          ansible_python_interpreter: /usr/bin/python3\n"
        "          tsalign_guest_update_bootloader: false\n"
        # a netns shares this machine's /proc/cmdline (no BOOT_IMAGE=): say the bootloader is what counts
        "          tsalign_guest_boot: bootloader\n"
        "    tsalign_hosts:\n      hosts: {}\n")
    st["inventory"] = str(inv)
    try:
        yield st
    finally:
        netns.down(st)


def _guest_play(st: dict, *extra: str) -> subprocess.CompletedProcess:
    return run("ansible-playbook", "-i", st["inventory"], "playbooks/setup.yml", *extra, check=False)


@pytest.mark.parametrize("target", [{"python": False}], indirect=True)
def test_target_without_python(target: dict) -> None:
    r = _guest_play(target)
    assert r.returncode != 0
    assert "guest-under-test: no Python 3.9+ on the node" in r.stdout and "apt-get install python3" in r.stdout


def test_missing_default_grub(target: dict) -> None:
    (Path(target["root"]) / "etc/default/grub").unlink()
    r = _guest_play(target)
    assert r.returncode != 0
    assert "/etc/default/grub does not exist" in r.stdout and "nothing was changed" in r.stdout
    assert "guest-under-test" in r.stdout


def test_unsupported_distribution(target: dict) -> None:
    osr = Path(target["root"]) / "etc/os-release"
    osr.unlink()  # a symlink into /usr/lib in Debian: replace it
    osr.write_text('ID=alpine\nVERSION_ID=3.20\nNAME="Alpine Linux"\n')
    r = _guest_play(target)
    assert r.returncode != 0
    assert "guest-under-test: Alpine" in r.stdout and "is not supported by tsalign_guest" in r.stdout, r.stdout[-2000:]
    assert 'GRUB_CMDLINE_LINUX=""' in (Path(target["root"]) / "etc/default/grub").read_text()


def test_kernel_loaded_by_the_vmm_gets_the_host_side_change(target: dict) -> None:
    """tsalign_guest_boot=auto on a node whose /proc/cmdline has no BOOT_IMAGE= (the netns shares this
    machine's: Firecracker loads its kernel directly): the role names the change to make on the host and
    leaves GRUB alone; with bootloader it edits GRUB (the other tests)."""
    assert "BOOT_IMAGE=" not in Path("/proc/cmdline").read_text()
    grub = Path(target["root"]) / "etc/default/grub"
    before = grub.read_text()
    r = _guest_play(target, "-e", "tsalign_guest_boot=auto")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "its kernel is loaded by the VMM" in r.stdout and "no-kvmclock" in r.stdout
    assert grub.read_text() == before


def test_a_stale_copy_of_the_node_code_is_replaced(target: dict) -> None:
    """tsalign_common trusts a tree marked with the staged tarball's sha1; a tree with another marker (an older
    version) is replaced whole, and the new tree carries the new marker only."""
    lib = Path(target["root"]) / "opt/tsalign/lib/tsalign"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("raise SystemExit('stale tsalign node code')\n")
    (lib / "stale_module.py").write_text("")
    (lib / f".node-{'0' * 40}").write_text("")
    r = _guest_play(target, "-e", "tsalign_guest_boot=auto")
    assert r.returncode == 0, r.stdout[-3000:]
    assert (lib / "__init__.py").read_text() == (REPO / "tsalign" / "__init__.py").read_text()
    assert not (lib / "stale_module.py").exists()
    markers = [m.name for m in lib.glob(".node-*")]
    assert len(markers) == 1 and re.fullmatch(r"\.node-[0-9a-f]{40}", markers[0]) and markers[0] != f".node-{'0' * 40}"
    r = _guest_play(target, "-e", "tsalign_guest_boot=auto")  # now current: nothing copied again
    assert r.returncode == 0, r.stdout[-3000:]
    assert re.search(r"TASK \[tsalign_common : Copy the tsalign node code\][^\n]*\n\s*skipping: ", r.stdout), r.stdout[-3000:]


def test_invalid_grub_file_is_not_replaced(target: dict) -> None:
    grub = Path(target["root"]) / "etc/default/grub"
    bad = grub.read_text() + "if [ 1 = 1 ]; then\n"
    grub.write_text(bad)
    r = _guest_play(target)
    assert r.returncode != 0 and "valid shell syntax" in r.stdout
    assert grub.read_text() == bad
    assert not list(grub.parent.glob(".grub.tsalign.*"))


@pytest.mark.parametrize("target", [{"tracefs": True, "kmsg": True}], indirect=True)
def test_a_guest_that_keeps_kvmclock_gets_a_calibration(target: dict, tmp_path: Path) -> None:
    """This machine is a kvm-clock guest (its kernel log says so), and the target shares its kernel, log and
    tracefs: the guest role measures pairs there (node code, standard library), fits them on the controller, once
    per boot; the map is then judged on fresh pairs measured afterwards (tsalign calibrate --verify)."""
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    need("kvm-clock: using sched offset" in log, "needs a kvm-clock guest (this machine's kernel log says so)")
    cal_dir = tmp_path / "cal"
    pairs_on_node = Path(target["root"]) / "var/tmp/tsalign-calibration-pairs.json"
    r = _guest_play(target, "-e", f"tsalign_guest_calibration_dir={cal_dir}")
    assert r.returncode == 0 and "calibrated against the TSC" in r.stdout, r.stdout[-3000:]
    cal = json.loads((cal_dir / "guest-under-test.json").read_text())
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert cal["measured"]["sched_clock"] == "kvm-clock" and cal["measured"]["hits"] == 20000, cal["measured"]
    for clock in ("local", "perf"):
        c = cal["clocks"][clock]
        # this machine's bound is ~0.8 us (test_calibrate_real); a loaded one (the nested lab beside) widens it
        assert c["boot_id"] == boot and 0 < c["bound_ns"] < 20_000, (clock, c)
    assert not pairs_on_node.exists() and not [d for d in os.listdir("/sys/kernel/tracing/instances")
                                               if d.startswith("tsalign-")]
    code = subprocess.run([sys.executable, "-m", "tsalign", "calibrate", "--verify", str(cal_dir / "guest-under-test.json"),
                           "--json"], capture_output=True, text=True, timeout=300)
    check = json.loads(code.stdout)["check"]
    assert code.returncode == 0 and all(check[c]["verdict"] == "pass" for c in check), check
    # once per boot: run again, nothing measured, nothing changed
    r = _guest_play(target, "-e", f"tsalign_guest_calibration_dir={cal_dir}")
    assert r.returncode == 0 and "calibrated against the TSC" not in r.stdout and recap(r.stdout)["changed"] == 0, \
        r.stdout[-3000:]
    # a calibration of another boot is measured again
    cal["clocks"]["local"]["boot_id"] = "another-boot"
    (cal_dir / "guest-under-test.json").write_text(json.dumps(cal))
    r = _guest_play(target, "-e", f"tsalign_guest_calibration_dir={cal_dir}")
    assert r.returncode == 0 and "calibrated against the TSC" in r.stdout, r.stdout[-3000:]
    assert json.loads((cal_dir / "guest-under-test.json").read_text())["clocks"]["local"]["boot_id"] == boot


def test_a_required_calibration_that_cannot_be_measured_fails(target: dict, tmp_path: Path) -> None:
    """A target without tracefs: required, the play fails and says why; auto (the other tests: their kernel log
    unreadable, sched_clock unknown) measures nothing; nothing is left on the node either way."""
    r = _guest_play(target, "-e", f"tsalign_guest_calibration_dir={tmp_path}", "-e", "tsalign_guest_calibrate=required")
    assert r.returncode != 0 and "guest-under-test: calibration failed" in r.stdout and "tracefs" in r.stdout, \
        r.stdout[-3000:]
    assert not (Path(target["root"]) / "var/tmp/tsalign-calibration-pairs.json").exists()
    assert not list(tmp_path.glob("guest-under-test*.json"))


def test_host_role_and_precheck_on_this_machine(tmp_path: Path) -> None:
    """This machine is a real KVM host (and a kvmclock guest): host role converges, is idempotent,
    writes local facts; precheck.yml's fleet summary shows what `tsalign precheck` reports."""
    _tools()
    need(os.path.exists("/dev/kvm"), "needs /dev/kvm")
    lib, fact = tmp_path / "lib", tmp_path / "facts.d" / "tsalign.fact"
    extra = ["-e", f"tsalign_common_lib={lib}", "-e", f"tsalign_host_fact_file={fact}"]
    r = run("ansible-playbook", "-i", "inventory/local/hosts.yml", "playbooks/setup.yml", *extra)
    assert recap(r.stdout)["failed"] == 0
    r = run("ansible-playbook", "-i", "inventory/local/hosts.yml", "playbooks/setup.yml", *extra)
    assert recap(r.stdout)["changed"] == 0, r.stdout[-3000:]
    facts = json.loads(fact.read_text())
    direct = json.loads(subprocess.run([sys.executable, "-m", "tsalign", "precheck", "--json"],
                                       capture_output=True, text=True).stdout)
    assert facts["tsc_offset_member"]["arch.tsc_offset"] == next(
        c for c in direct["checks"] if c["id"] == "kvm_tsc_offset_member")["value"]["arch.tsc_offset"]
    assert facts["kprobe_status"] in ("registered", "unavailable")
    if not os.path.exists("/sys/kernel/tracing/kprobe_events"):
        assert facts["kprobe_status"] == "unavailable" and "CONFIG_KPROBE_EVENTS" in facts["kprobe_reason"]
    out = tmp_path / "precheck"
    r = run("ansible-playbook", "-i", "inventory/local/hosts.yml", "playbooks/precheck.yml", *extra,
            "-e", f"tsalign_precheck_dir={out}")
    node = json.loads((out / "localhost.json").read_text())
    summary = (out / "summary.txt").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("localhost"))
    assert node["verdict"] in row and str(direct["tsc_khz"]) in row
    statuses = {c["id"]: c["status"] for c in direct["checks"]}
    assert row.split()[4:7] == [statuses["clocksource"], statuses["tsc_flags"], statuses["kernel_cmdline"]]
    assert node["verdict"] == direct["verdict"]
    # the controller's kernel table: this machine's build, resolved from its own BTF, with the kprobe the node
    # itself chooses; setup.yml takes it from the table unchanged, and refuses a table that contradicts the node
    table = json.loads((out / "kernels.json").read_text())
    build = next(c for c in direct["checks"] if c["id"] == "kernel_build")["value"]
    assert [(b["build_id"], b["status"], b["nodes"]) for b in table["builds"]] == [(build["build_id"], "resolved",
                                                                                    ["localhost"])]
    plan = next(c for c in direct["checks"] if c["id"] == "kprobe_function")["value"]
    if plan:
        assert table["nodes"]["localhost"]["kprobe"] == plan["kprobe"]
        r = run("ansible-playbook", "-i", "inventory/local/hosts.yml", "playbooks/setup.yml", *extra,
                "-e", f"tsalign_host_kernel_table={out / 'kernels.json'}")
        assert recap(r.stdout)["changed"] == 0 and recap(r.stdout)["failed"] == 0, r.stdout[-3000:]
        wrong = tmp_path / "wrong.json"
        table["nodes"]["localhost"]["kprobe"] = plan["kprobe"].replace(f"+{plan['member_offset']:#x}(", "+0x8(")
        wrong.write_text(json.dumps(table))
        r = run("ansible-playbook", "-i", "inventory/local/hosts.yml", "playbooks/setup.yml", *extra,
                "-e", f"tsalign_host_kernel_table={wrong}", check=False)
        assert r.returncode != 0 and "differ from this node's own" in r.stdout, r.stdout[-3000:]


def test_lint_and_syntax() -> None:
    _tools()
    need(shutil.which("ansible-lint", path=str(BIN)), "ansible-lint not installed")
    for pb in sorted((REPO / "playbooks").glob("*.yml")):
        run("ansible-playbook", "--syntax-check", "-i", "inventory/example/hosts.yml", str(pb))
    r = run("ansible-lint", "--profile", "production", "playbooks/", "roles/", "molecule/", check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_capture_playbook_refuses_a_bad_job(tmp_path: Path) -> None:
    """capture.yml checks its job on the controller before it touches a node: no guest, a guest not in the
    inventory, a directory for two guests, a capture of no seconds; each named in the failure, nothing written."""
    _tools()
    inv = tmp_path / "hosts.yml"
    guests = {g: {"ansible_host": "192.0.2.1", "tsalign_guest_host": "kvm-1", "tsalign_guest_domain": g}
              for g in ("g1", "g2")}
    inv.write_text(json.dumps({"all": {"children": {"tsalign_hosts": {"hosts": {"kvm-1": {"ansible_host": "192.0.2.2"}}},
                                                    "tsalign_guests": {"hosts": guests}}}}))
    for extra, says in ((["-e", "tsalign_capture_guests="], "give -e tsalign_capture_guest=NAME"),
                        (["-e", "tsalign_capture_guests=g1,nope"], "not in tsalign_guests: ['nope']"),
                        (["-e", "tsalign_capture_guests=all", "-e", f"tsalign_capture_dir={tmp_path}/d"],
                         "tsalign_capture_dir only for a job of one guest"),
                        (["-e", "tsalign_capture_guest=g1", "-e", "tsalign_capture_seconds=0"], "must be positive"),
                        (["-e", "tsalign_capture_guest=g1", "-e", "tsalign_capture_run=x;rm -rf /"], "names paths")):
        r = run("ansible-playbook", "-i", str(inv), "playbooks/capture.yml", "-e", f"tsalign_capture_root={tmp_path}/out",
                *extra, check=False, timeout=300)
        assert r.returncode != 0 and says in r.stdout, (extra, r.stdout[-2000:])
        assert re.findall(r"^(\S+)\s+: ok=", r.stdout, re.MULTILINE) == ["localhost"], r.stdout[-1000:]  # no node touched
    assert not (tmp_path / "out").exists() and not (tmp_path / "d").exists()


@pytest.mark.parametrize("clock", ["x86-tsc", "local"])
def test_capture_playbook_end_to_end(tmp_path: Path, clock: str) -> None:
    """capture.yml for real: this machine is the KVM host running a VM (tsalign's micro-VM, found by
    name); the "guest" is the netns target. It shares this machine's kernel, so its x86-tsc trace
    is this TSC -- the job's mechanics (concurrent async captures on two nodes, fetch, unpack, align,
    verdict policy) are real; the guest-side semantics are those of a same-kernel stand-in. Its events are
    not the micro-VM's guest's, and the evidence says so: they fall where the VM's vCPU thread was off
    CPU (the micro-VM sleeps 10 ms between batches of beacons), so the verdict is ``fail`` (vcpu_run).
    ``local``: the guest traces on its sched_clock (this machine's: kvm-clock), measures a calibration during
    the capture, which the controller fits and align converts through (the target cannot read the kernel log, so
    its sched offset is unknown and the calibration alone converts): the same verdict, for the same reason."""
    _tools()
    need(os.path.exists("/dev/kvm"), "needs /dev/kvm")
    mvm = subprocess.Popen([sys.executable, "-m", "tsalign", "microvm", "--seconds", "300", "--name", "tsalign-mvm"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    st = None
    try:
        mvm.stderr.readline()  # "started" once the VM exists
        st = netns.up(_rootfs(), tracefs=True)
        inv = tmp_path / "hosts.yml"
        inv.write_text(
            "all:\n  children:\n"
            "    tsalign_hosts:\n      hosts:\n        localhost:\n          ansible_connection: local\n"
            f"          ansible_python_interpreter: {sys.executable}\n"
            "    tsalign_guests:\n      hosts:\n        netns-guest:\n"
            f"          ansible_host: {st['ip']}\n          ansible_user: root\n"
            f"          ansible_ssh_private_key_file: {st['key']}\n"
            "          ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
            "          ansible_python_interpreter: /usr/bin/python3\n"
            "          tsalign_guest_host: localhost\n          tsalign_guest_domain: tsalign-mvm\n")
        # x86-tsc: where the job puts a run by default (out/capture/GUEST-RUN; the run named here, not by the clock)
        run_id = f"pytest-{os.getpid()}"
        out = REPO / "out" / "capture" / f"netns-guest-{run_id}" if clock == "x86-tsc" else tmp_path / "capture"
        where = ["-e", f"tsalign_capture_run={run_id}"] if clock == "x86-tsc" else ["-e", f"tsalign_capture_dir={out}"]
        r = run("ansible-playbook", "-i", str(inv), "playbooks/capture.yml", "-e", "tsalign_capture_guest=netns-guest",
                "-e", "tsalign_capture_seconds=3", "-e", f"tsalign_common_lib={tmp_path}/lib",
                *where, "-e", f"tsalign_capture_guest_clock={clock}", check=False)
        assert (out / "aligned" / "verdict.json").is_file(), r.stdout[-3000:]
        verdict = json.loads((out / "aligned" / "verdict.json").read_text())
        assert verdict["verdict"] == "fail", verdict["reasons"]
        assert "vcpu_run" in verdict["evidence"]["kinds_found"]
        assert any(r.startswith("vcpu0: ") and "vcpu_run" in r for r in verdict["reasons"]), verdict["reasons"]
        # the default policy (fail on unverified or worse) fails the play, after showing the verdict
        assert r.returncode != 0 and "alignment verdict fail" in r.stdout
        assert verdict["events"]["host"] > 0 and verdict["events"]["guest"] > 0
        assert verdict["vm"]["name"] == "tsalign-mvm" and "debugfs" in verdict["offsets"]["sources"]
        # the run is named for the fleet dataset, which takes it as it is
        ident = json.loads((out / "run.json").read_text())
        assert ident["node"] == "localhost" and ident["vm"] == "tsalign-mvm" and ident["guest"] == "netns-guest"
        assert ident["run"] == run_id if clock == "x86-tsc" else re.fullmatch(r"\d{8}T\d{6}Z", ident["run"]), ident
        rep = ingest(str(tmp_path / "fleet"), [str(out)])
        assert [(w["node"], w["vm"], w["run"]) for w in rep.written] == [("localhost", "tsalign-mvm", ident["run"])]
        assert query(str(tmp_path / "fleet"), "SELECT verdict, evidence_checked, evidence_violated FROM verdicts")[1] == [
            (verdict["verdict"], verdict["brackets"]["checked"], verdict["brackets"]["violated"])]
        host = json.loads((out / "host" / "manifest.json").read_text())
        guest = json.loads((out / "guest" / "manifest.json").read_text())
        assert host["role"] == "host" and guest["role"] == "guest"
        if clock == "x86-tsc":
            assert guest["clock"]["domain"] == "guest_tsc" and not (out / "guest-calibration.json").exists()
        else:
            assert guest["clock"]["trace_clock"] == "local" and verdict["guest_conversion"]["below_cycles"] > 0
            cal = json.loads((out / "guest-calibration.json").read_text())
            assert cal["measured"]["hits"] == 20000 and cal["clocks"]["local"]["bound_cycles"] > 0, cal["measured"]
            # measured during the capture, not after it (the netns shares this TSC: one axis)
            pieces = cal["clocks"]["local"]["pieces"]
            assert pieces[0]["tsc_first"] < guest["stopped_tsc"] and pieces[-1]["tsc_last"] > guest["started_tsc"], \
                (pieces[0]["tsc_first"], pieces[-1]["tsc_last"], guest["started_tsc"], guest["stopped_tsc"])
            assert not list((Path(st["root"]) / "var/tmp").glob("*pairs*"))  # removed from the node
        # the two captures ran at the same time
        assert host["started_host_tsc"] < guest["stopped_tsc"] and guest["started_tsc"] < host["stopped_tsc"]
        assert "Show each verdict" in r.stdout and "alignment verdict fail" in r.stdout
        assert not list((Path(st["root"]) / "var/tmp").glob("tsalign-capture-*"))  # removed from the node
        # the job's summary beside the run, and the host's bundle once, linked from the run (relative)
        job = json.loads((out.parent / f"job-{ident['run']}.json").read_text())
        assert job == {"run": ident["run"], "guests": {"netns-guest": {
            "host": "localhost", "vm": "tsalign-mvm", "dir": str(out.resolve()), "status": "aligned", "exit": 1,
            "verdict": "fail"}}}
        assert (out / "host").is_symlink() and not os.path.isabs(os.readlink(out / "host"))
        assert (out / "host").resolve() == (out.parent / f"hosts-{ident['run']}" / "localhost").resolve()
    finally:
        for p in (f"netns-guest-pytest-{os.getpid()}", f"hosts-pytest-{os.getpid()}"):
            shutil.rmtree(REPO / "out" / "capture" / p, ignore_errors=True)
        (REPO / "out" / "capture" / f"job-pytest-{os.getpid()}.json").unlink(missing_ok=True)
        if st:
            netns.down(st)
        mvm.terminate()
        mvm.wait(timeout=30)
    assert not os.listdir("/sys/kernel/tracing/instances")


def test_a_killed_runs_targets_are_reaped() -> None:
    """A target whose session was killed (sshd gone, no ``down``) is undone by ``reap``: namespace, veth, the
    mounts of this machine's tracefs and /proc, work dir. So is one killed with its mounts made and no namespace
    (seen left by a killed run: an overlay root with its mounts, the namespace gone). A live target beside them is
    left as it is."""
    _tools()
    rootfs = _rootfs()
    dead, live, half = netns.up(rootfs, tracefs=True), netns.up(rootfs), netns.up(rootfs, tracefs=True)
    terminate(half["pid"], group=True)
    subprocess.run(["ip", "netns", "del", half["netns"]], check=True)
    # what an SSH session left in each (a process in a session of its own, as sshd's are): the dead target's keeps
    # its namespace from being empty, and `down` takes the live one's with it
    orphans = [subprocess.Popen(["ip", "netns", "exec", t["netns"], "sleep", "600"], start_new_session=True)
               for t in (dead, live)]
    try:
        os.killpg(dead["pid"], 9)
        terminate(dead["pid"], group=True)  # collects the killed child
        r = run(sys.executable, "-m", "tests.infra.netns", "reap")
        assert f"reaped the stale target {dead['netns']}" in r.stdout and live["netns"] not in r.stdout
        assert f"reaped the stale target {half['netns']}" in r.stdout
        assert orphans[0].wait(timeout=30) == -9 and orphans[1].poll() is None
        with open("/proc/mounts") as f:
            mounts = f.read()
        assert dead["work"] not in mounts and not os.path.exists(dead["work"])
        assert half["work"] not in mounts and not os.path.exists(half["work"])
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert dead["netns"] not in names and live["netns"] in names
        assert subprocess.run(["ip", "link", "show", dead["veth"]], capture_output=True).returncode != 0
        assert f"{live['root']}/proc" in mounts and os.path.isdir(live["work"])
        netns.down(live)
        assert orphans[1].wait(timeout=30) == -9
    finally:
        for t in (dead, live, half):
            netns.down(t)
        for o in orphans:
            if o.poll() is None:
                o.kill()
                o.wait()
