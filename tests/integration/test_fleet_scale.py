"""precheck.yml as a fleet job over 50 real SSH targets (network namespaces sharing one Debian rootfs under
private overlays, each its own sshd): 48 good, one whose Python is gone (its precheck fails), one that
cannot be reached (a TEST-NET-1 address). The play must check the 48, report the two with why, never stop
for them, fail by policy, and the fleet dataset ingested from its output must hold exactly that: compared
with the per-node reports the playbook wrote and with what was done to the two."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tests.infra import netns
from tests.integration.test_ansible_netns import _rootfs, _tools, run
from tsalign.fleet.ingest import ingest
from tsalign.fleet.query import query

GOOD = 48
NO_PYTHON = "node-nopython"
UNREACHABLE = "node-unreachable"


def test_precheck_fleet_of_50(tmp_path: Path) -> None:
    _tools()
    rootfs = _rootfs()
    targets: dict[str, dict] = {}
    try:
        targets[NO_PYTHON] = netns.up(rootfs, python=False)  # first: in the rollout's first batch
        for i in range(GOOD):
            targets[f"node-{i:02d}"] = netns.up(rootfs)
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
    finally:
        for st in targets.values():
            netns.down(st)
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
