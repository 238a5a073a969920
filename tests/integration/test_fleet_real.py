"""The fleet dataset on real captures: two selftests of tsalign's micro-VM on this host's /dev/kvm (host KVM
events, guest beacons and the guest's IRQ handlers after host injections), each ingested under
several node names (run.json, as capture.yml writes it: replicas of real runs, for a fleet of more than one
host). The views are compared with what the runs' own files say, computed here without DuckDB: verdicts and
error bounds from verdict.json, IRQ latencies from ``tsalign analyze irq`` of the same bundles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import need
from tsalign.fleet.ingest import ingest
from tsalign.fleet.query import query

REPO = Path(__file__).resolve().parents[2]
NODES = ("kvm-a01", "kvm-a02", "kvm-b01")


def tsalign(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tsalign", *args], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_fleet_of_real_selftests(tmp_path: Path) -> None:
    need(os.geteuid() == 0 and os.path.exists("/dev/kvm"), "needs root and /dev/kvm (tsalign selftest)")
    runs = []
    for i in range(2):
        out = tmp_path / f"st{i}"
        r = tsalign("selftest", "--beacons", "200", "--irqs", "30", "--json", "--out", str(out))
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        runs.append(out)
    # the IRQ latencies of each run, by `tsalign analyze irq` (rows: latency_ns per matched injection)
    lat = {}
    for i, out in enumerate(runs):
        r = tsalign("analyze", "irq", "--host", str(out / "host"), "--guest", str(out / "guest"), "-o",
                    str(tmp_path / f"irq{i}"), "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        lat[i] = sorted(x["latency_ns"] for x in json.loads(r.stdout)["rows"])
        assert lat[i]
    fleet = tmp_path / "fleet-src"
    for n, node in enumerate(NODES):  # kvm-a01: run 0; kvm-a02 and kvm-b01: run 1
        src = runs[min(n, 1)]
        dst = fleet / node / "job-1"
        shutil.copytree(src, dst)
        (dst / "run.json").write_text(json.dumps({"node": node, "vm": "mvm", "run": "job-1"}))
    ds = str(tmp_path / "dataset")
    rep = ingest(ds, [str(fleet)])
    assert len(rep.written) == 3 and not rep.skipped, rep.to_dict()
    assert ingest(ds, [str(fleet)]).unchanged and not ingest(ds, [str(fleet)]).written

    verdicts = {n: json.loads((runs[min(i, 1)] / "aligned" / "verdict.json").read_text()) for i, n in enumerate(NODES)}
    _, rows = query(ds, "SELECT node, verdict, evidence_checked, error_bound_cycles, offset_changes FROM verdicts ORDER BY node")
    assert rows == [(n, v["verdict"], v["brackets"]["checked"],
                     max(d["width_cycles"] for d in v["evidence"]["per_vcpu"] if d["width_cycles"] is not None),
                     v["offsets"]["changes_seen"]) for n, v in sorted(verdicts.items())]
    # every offset segment of each run, as its offsets.jsonl lists them
    _, rows = query(ds, "SELECT node, vcpu, start_host_tsc, tsc_offset_signed, source FROM offsets ORDER BY ALL")
    want = sorted((n, s["vcpu"], s["start_host_tsc"], s["offset_signed"], s["source"]) for i, n in enumerate(NODES)
                  for s in map(json.loads, (runs[min(i, 1)] / "aligned" / "offsets.jsonl").open()))
    assert rows == want and rows
    _, rows = query(ds, "SELECT node, injections, latency_ns_median, latency_ns_max FROM latency_per_node ORDER BY node")
    for (node, count, median, top), n in zip(rows, range(3)):
        want = lat[min(n, 1)]
        assert node == NODES[n] and count == len(want) and top == want[-1], (node, count, top, want)
        assert median == want[(len(want) - 1) // 2], (median, want)  # quantile_disc: the lower middle value
    _, rows = query(ds, "SELECT alignments, passed FROM error_bounds")
    assert rows == [(3, sum(v["verdict"] == "pass" for v in verdicts.values()))]
