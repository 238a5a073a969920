"""setup.yml, precheck.yml and capture.yml as fleet jobs over 50 real SSH targets (network namespaces sharing one
Debian rootfs under private overlays, each its own sshd): 48 good, one whose Python is gone (its precheck fails), one
that cannot be reached (a TEST-NET-1 address). The plays must handle the 48, report the two with why, never stop
for them, fail by policy, and the fleet dataset ingested from their output must hold exactly that: compared
with the per-node reports and run directories the playbooks wrote and with what was done to the two.

capture.yml runs all 50 as the guests of one job: this machine is their KVM host, each good guest mapped to a
micro-VM of its own (48 at once: tsalign's micro-VM, lightened with --pause-ms), the two bad ones to VMs that do not
run. A netns guest shares this machine's kernel, so its events are not its micro-VM's guest's: its verdict is
``fail`` by the vCPU-run evidence (as in test_ansible_netns.test_capture_playbook_end_to_end), or ``unverified`` when
its VM's vCPU thread did not switch during the guest's capture (a micro-VM pausing 5 s); the job's mechanics
(50 nodes started together though forks are 25, one host capture of 48 VMs shared by 48 run directories, the
summary, the dataset) are real."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.infra import netns
from tests.integration.test_ansible_netns import _rootfs, _tools, run
from tsalign.fleet.ingest import ingest
from tsalign.fleet.query import query

GOOD = 48
NO_PYTHON = "node-nopython"
UNREACHABLE = "node-unreachable"


def _microvms(names: list[str]) -> list[subprocess.Popen]:
    """One micro-VM per name, each started (its "started" line read) before the next; running 30 min at most."""
    procs: list[subprocess.Popen] = []
    try:
        for n in names:
            p = subprocess.Popen([sys.executable, "-m", "tsalign", "microvm", "--seconds", "1800", "--name", n,
                                  "--pause-ms", "5000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            line = p.stderr.readline() if p.stderr else ""
            assert '"started"' in line, (n, line, p.poll())
    except BaseException:
        _stop(procs)
        raise
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=60)


def test_fleet_of_50(tmp_path: Path) -> None:
    _tools()
    rootfs = _rootfs()
    targets: dict[str, dict] = {}
    vms: list[subprocess.Popen] = []
    try:
        targets[NO_PYTHON] = netns.up(rootfs, python=False, tracefs=True)  # first: in the rollout's first batch
        for i in range(GOOD):
            targets[f"node-{i:02d}"] = netns.up(rootfs, tracefs=True)
        ssh = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5"
        hosts = {n: {"ansible_host": st["ip"], "ansible_user": "root", "ansible_ssh_private_key_file": st["key"],
                     "ansible_ssh_common_args": ssh, "ansible_python_interpreter": "/usr/bin/python3"}
                 for n, st in targets.items()}
        hosts[UNREACHABLE] = {**hosts["node-00"], "ansible_host": "192.0.2.1"}  # TEST-NET-1: never answers
        inv = tmp_path / "fleet.yml"
        inv.write_text(json.dumps({"all": {"children": {"tsalign_hosts": {"hosts": {}},
                                                        "tsalign_guests": {"hosts": hosts}}}}))
        # setup.yml's guest role as a rollout in batches of a tenth, stopping only when more than a quarter of a
        # batch fails: the node without Python fails in the first batch (1 of 5: the rollout goes on; with the
        # default, 0 %, it would stop there), the unreachable one in the last; the 48 others converge (a netns
        # shares this machine's boot: the bootloader is what counts, left as is)
        for h in hosts.values():
            h.update({"tsalign_guest_update_bootloader": False, "tsalign_guest_boot": "bootloader"})
        inv.write_text(json.dumps({"all": {"children": {"tsalign_hosts": {"hosts": {}},
                                                        "tsalign_guests": {"hosts": hosts}}}}))
        setup = run("ansible-playbook", "-i", str(inv), "playbooks/setup.yml", "-e", "tsalign_guest_serial=10%",
                    "-e", "tsalign_guest_max_fail_percentage=25", "-e", f"tsalign_common_lib={tmp_path}/lib",
                    check=False, timeout=1800)
        out = tmp_path / "precheck"
        t0 = time.monotonic()
        r = run("ansible-playbook", "-i", str(inv), "playbooks/precheck.yml", "-e", f"tsalign_precheck_dir={out}",
                "-e", f"tsalign_common_lib={tmp_path}/lib", check=False, timeout=1800)
        wall = time.monotonic() - t0
        # capture.yml over the 50 as one job's guests, this machine their host (the good ones' VMs running)
        vms = _microvms([f"fleet-vm-{i:02d}" for i in range(GOOD)])
        for n, h in hosts.items():
            h.update({"tsalign_guest_host": "localhost",
                      "tsalign_guest_domain": f"fleet-vm-{n[5:]}" if n[5:].isdigit() else f"fleet-vm-{n[5:]}-absent"})
        inv.write_text(json.dumps({"all": {"children": {
            "tsalign_hosts": {"hosts": {"localhost": {"ansible_connection": "local",
                                                      "ansible_python_interpreter": sys.executable}}},
            "tsalign_guests": {"hosts": hosts}}}}))
        cap = tmp_path / "capture"
        t0 = time.monotonic()
        c = run("ansible-playbook", "-i", str(inv), "playbooks/capture.yml", "-e", "tsalign_capture_guests=all",
                "-e", f"tsalign_capture_root={cap}", "-e", "tsalign_capture_run=fleet", "-e", "tsalign_capture_seconds=4",
                "-e", "tsalign_capture_guest_buffer_kb=1024",
                "-e", "tsalign_capture_host_buffer_kb=65536",
                "-e", f"tsalign_common_lib={tmp_path}/lib", check=False, timeout=3600)
        capture_wall = time.monotonic() - t0
    finally:
        _stop(vms)
        for st in targets.values():
            netns.down(st)
    (tmp_path / "capture.log").write_text(c.stdout + c.stderr)
    (tmp_path / "capture-wall.txt").write_text(f"{capture_wall:.1f}\n")
    check_fleet_capture(c, cap, tmp_path / "capture-dataset")
    assert capture_wall < 2400, capture_wall
    (tmp_path / "wall.txt").write_text(f"{wall:.1f}\n")
    recap = dict(re.findall(r"^(node-\S+)\s+: (ok=.*)$", setup.stdout, re.MULTILINE))
    assert len(recap) == 50 and setup.returncode != 0, setup.stdout[-3000:]
    for n in targets:
        if n != NO_PYTHON:
            assert "failed=0" in recap[n] and "unreachable=0" in recap[n], (n, recap[n])
    assert "failed=1" in recap[NO_PYTHON] and "unreachable=1" in recap[UNREACHABLE], recap
    # the play went on for the others and failed by policy, naming the two (and any node whose verdict is fail)
    assert r.returncode != 0 and "precheck verdict not acceptable" in r.stdout, r.stdout[-3000:]
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("node-*.json")}
    assert sorted(reports) == [f"node-{i:02d}" for i in range(GOOD)], sorted(reports)
    summary = json.loads((out / "fleet-summary.json").read_text())
    states = {n: v["state"] for n, v in summary["nodes"].items()}
    assert states == {**{n: "checked" for n in reports}, NO_PYTHON: "failed", UNREACHABLE: "unreachable"}, states
    assert "192.0.2.1" in summary["nodes"][UNREACHABLE]["message"] or "timed out" in summary["nodes"][UNREACHABLE]["message"]
    assert all(summary["nodes"][n]["verdict"] == reports[n]["verdict"] for n in reports)
    table = (out / "summary.txt").read_text()
    assert f"{UNREACHABLE}" in table and "unreachable:" in table and "failed:" in table
    # the dataset holds exactly what happened
    ds = str(tmp_path / "dataset")
    rep = ingest(ds, [str(out)])
    assert not rep.skipped, rep.skipped
    _, rows = query(ds, "SELECT node, state FROM reachability ORDER BY node")
    assert dict(rows) == states
    _, rows = query(ds, "SELECT node, count(*) FROM prechecks GROUP BY node ORDER BY node")
    assert dict(rows) == {n: len(d["checks"]) for n, d in reports.items()}
    _, rows = query(ds, "SELECT DISTINCT node, check_id FROM untraceable")
    failed_checks = {(n, c["id"]) for n, d in reports.items() if d["verdict"] == "fail" for c in d["checks"]
                     if c["status"] == "fail"}
    assert set(rows) == failed_checks | {(NO_PYTHON, "failed"), (UNREACHABLE, "unreachable")}
    _, rows = query(ds, "SELECT DISTINCT run FROM reachability UNION SELECT DISTINCT run FROM prechecks")
    assert rows == [(summary["run"],)]  # one run, named by the playbook's stamp
    assert wall < 1500, wall


def check_fleet_capture(r: subprocess.CompletedProcess, cap: Path, ds: Path) -> None:
    """capture.yml's job over the 50: the 48 captured together with one host capture of their 48 VMs, each aligned
    with its own VM (never ``pass``: a netns guest is no VM's guest), the two bad ones named in the
    summary with why (no Python; unreachable), the job failed by policy; the dataset holds the 48 runs, each under
    its own VM, with the verdicts the runs' files hold."""
    assert r.returncode != 0 and "guest(s) failed the job" in r.stdout, r.stdout[-3000:]
    # the failure names each node that did not capture, with why, where the user reads it
    assert f"{UNREACHABLE}: not captured ({UNREACHABLE}: unreachable" in r.stdout, r.stdout[-3000:]
    job = json.loads((cap / "job-fleet.json").read_text())
    good = {f"node-{i:02d}" for i in range(GOOD)}
    assert set(job["guests"]) == good | {NO_PYTHON, UNREACHABLE}, sorted(job["guests"])
    verdicts = {}
    for n in good:
        g = job["guests"][n]
        assert (g["status"], g["vm"]) == ("aligned", f"fleet-vm-{n[5:]}") and g["verdict"] in ("fail", "unverified"), (n, g)
        v = json.loads((cap / f"{n}-fleet" / "aligned" / "verdict.json").read_text())
        assert v["verdict"] == g["verdict"] and v["vm"]["name"] == g["vm"], (n, v["verdict"], v["vm"], g)
        verdicts[g["vm"]] = g["verdict"]
    bad = {n: job["guests"][n] for n in (NO_PYTHON, UNREACHABLE)}
    assert all(g["status"] == "not captured" and g["failed_nodes"] == [n] for n, g in bad.items()), bad
    assert "Python" in bad[NO_PYTHON]["errors"][NO_PYTHON], bad
    assert bad[UNREACHABLE]["errors"][UNREACHABLE].startswith("unreachable"), bad
    # one host capture of the 48 running VMs (the two absent ones named in its notes), shared through links
    host = json.loads((cap / "hosts-fleet" / "localhost" / "manifest.json").read_text())
    assert sorted(v["name"] for v in host["vm"]) == sorted(f"fleet-vm-{n[5:]}" for n in good)
    # nothing lost (a lossy host capture drops its vCPU-run evidence), so most verdicts rest on evidence
    assert host["lost_events"] == 0, host["stats"]
    assert sum(v == "fail" for v in verdicts.values()) >= GOOD // 2, verdicts
    assert sum("not running on this host" in x for x in host["notes"]) == 2, host["notes"]
    guests = [json.loads((cap / f"{n}-fleet" / "guest" / "manifest.json").read_text()) for n in sorted(good)]
    assert all((cap / f"{n}-fleet" / "host").is_symlink() for n in good)
    # every guest captured while the host's capture ran (started together, though the forks are 25)
    assert all(host["started_host_tsc"] < g["started_tsc"] and g["stopped_tsc"] < host["stopped_tsc"] for g in guests), [
        (g["started_tsc"] - host["started_host_tsc"], host["stopped_tsc"] - g["stopped_tsc"]) for g in guests]
    rep = ingest(str(ds), [str(cap / f"{n}-fleet") for n in sorted(good)])
    assert not rep.skipped and len(rep.written) == GOOD, (rep.skipped, rep.written)
    _, rows = query(str(ds), "SELECT vm, verdict FROM verdicts ORDER BY vm")
    assert rows == sorted(verdicts.items()), rows
