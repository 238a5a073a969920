"""The fleet dataset on real captures: two selftests of tsalign's micro-VM on this host's /dev/kvm (host KVM
events, guest beacons and the guest's IRQ handlers after host injections), ingested as 100 captures of 100
nodes (run.json, as capture.yml writes it: replicas of the two real runs, alternately, for a fleet's scale).
The views are compared with what the runs' own files say, computed here without DuckDB: verdicts and error
bounds from verdict.json, events from timeline.jsonl, offsets from offsets.jsonl, IRQ latencies from
``tsalign analyze irq`` of the same bundles; and every table and view on DuckDB with the same on Spark."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tsalign.fleet.dataset import TABLES, write_partitions
from tsalign.fleet.ingest import ingest
from tsalign.fleet.query import ENGINES, READY_VIEWS, engine, query

REPO = Path(__file__).resolve().parents[2]
NODES = tuple(f"kvm-{i:03d}" for i in range(100))  # node i: a replica of real run i % 2
#: what ingest reads of a run (the rest of a selftest's directory is not copied into the replicas)
RUN_FILES = ("run.json", "aligned/verdict.json", "aligned/offsets.jsonl", "aligned/timeline.parquet",
             "host/manifest.json", "guest/manifest.json")


def tsalign(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tsalign", *args], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two real selftests, ingested as a 100-node fleet; their IRQ latencies by `tsalign analyze irq`."""
    need(os.geteuid() == 0 and os.path.exists("/dev/kvm"), "needs root and /dev/kvm (tsalign selftest)")
    tmp_path = tmp_path_factory.mktemp("fleet")
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
    src_dir = tmp_path / "fleet-src"
    for n, node in enumerate(NODES):
        dst = src_dir / node / "job-1"
        for f in RUN_FILES[1:]:
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(runs[n % 2] / f, dst / f)
        (dst / "run.json").write_text(json.dumps({"node": node, "vm": "mvm", "run": "job-1"}))
    ds = str(tmp_path / "dataset")
    rep = ingest(ds, [str(src_dir)])
    assert len(rep.written) == len(NODES) and not rep.skipped, rep.to_dict()
    # and latencies of known values for two more nodes (rows written as ingest writes them), for hand arithmetic
    for node, values in HAND.items():
        write_partitions(ds, {"node": node, "vm": "v", "run": "r"}, {"latencies": [
            {"vcpu": 0, "line": "x", "injection": "kvm_set_irq", "handler": "irq_handler_entry", "injected_guest_tsc": i,
             "latency_cycles": v, "latency_ns": v} for i, v in enumerate(values)]}, "hand")
    # a fleet precheck's summary (as precheck.yml writes it; tests/integration/test_fleet_scale.py runs the playbook)
    summary = tmp_path / "precheck" / "fleet-summary.json"
    summary.parent.mkdir()
    summary.write_text(json.dumps({"run": "20261202T000000Z", "nodes": {
        "kvm-a01": {"state": "checked", "verdict": "pass"}, "kvm-c01": {"state": "unreachable", "message": "timed out"},
        "kvm-c02": {"state": "failed", "message": "no Python"}}}))
    assert len(ingest(ds, [str(summary.parent)]).written) == 3
    return {"dataset": ds, "runs": runs, "lat": lat, "again": ingest(ds, [str(src_dir)])}


def test_fleet_of_real_selftests(fleet: dict[str, Any]) -> None:
    ds, runs, lat = fleet["dataset"], fleet["runs"], fleet["lat"]
    assert fleet["again"].unchanged and not fleet["again"].written  # ingesting the same runs again changes nothing
    verdicts = {n: json.loads((runs[i % 2] / "aligned" / "verdict.json").read_text()) for i, n in enumerate(NODES)}
    _, rows = query(ds, "SELECT node, verdict, evidence_checked, error_bound_cycles, offset_changes FROM verdicts ORDER BY node")
    assert rows == [(n, v["verdict"], v["brackets"]["checked"],
                     max(d["width_cycles"] for d in v["evidence"]["per_vcpu"] if d["width_cycles"] is not None),
                     v["offsets"]["changes_seen"]) for n, v in sorted(verdicts.items())]
    # every event of each run's timeline, as its timeline.jsonl lists them
    _, rows = query(ds, "SELECT node, side, event, count(*) FROM events GROUP BY ALL ORDER BY ALL")
    want_ev: dict[tuple[str, str, str], int] = {}
    for i, n in enumerate(NODES):
        for e in map(json.loads, (runs[i % 2] / "aligned" / "timeline.jsonl").open()):
            want_ev[(n, e["side"], e["event"])] = want_ev.get((n, e["side"], e["event"]), 0) + 1
    assert rows == sorted((*k, c) for k, c in want_ev.items())
    # every offset segment of each run, as its offsets.jsonl lists them
    _, rows = query(ds, "SELECT node, vcpu, start_host_tsc, tsc_offset_signed, source FROM offsets ORDER BY ALL")
    want = sorted((n, s["vcpu"], s["start_host_tsc"], s["offset_signed"], s["source"]) for i, n in enumerate(NODES)
                  for s in map(json.loads, (runs[i % 2] / "aligned" / "offsets.jsonl").open()))
    assert rows == want and rows
    _, rows = query(ds, "SELECT node, injections, latency_ns_median, latency_ns_max FROM latency_per_node "
                        "WHERE node LIKE 'kvm-%' ORDER BY node")
    assert len(rows) == len(NODES)
    for (node, count, median, top), n in zip(rows, range(len(NODES))):
        want = lat[n % 2]
        assert node == NODES[n] and count == len(want) and top == want[-1], (node, count, top, want)
        assert median == want[(len(want) - 1) // 2], (median, want)  # quantile_disc: the lower middle value
    _, rows = query(ds, "SELECT alignments, passed FROM error_bounds")
    assert rows == [(len(NODES), sum(v["verdict"] == "pass" for v in verdicts.values()))]


#: latencies (ns) of two hand-made nodes: nearest-rank median and p99 are ranks ceil(n/2) and ceil(0.99 n)
HAND = {"hand-150": [(i * 7919) % 1000 + 1000 for i in range(150)], "hand-1": [42]}


@pytest.mark.parametrize("engine_name", ["duckdb", "spark"])
def test_percentiles_by_hand(fleet: dict[str, Any], engine_name: str) -> None:
    if engine_name == "spark":
        need(shutil.which("java") is not None, "needs a Java runtime for Spark (make deps installs it)")
    _, rows = query(fleet["dataset"], "SELECT node, injections, latency_ns_median, latency_ns_p99, latency_ns_max "
                                      "FROM latency_per_node WHERE node LIKE 'hand-%' ORDER BY node", engine_name)
    # hand-150: values 1000..1999 in a shuffled order, 150 of them: the 75th and the 149th smallest
    v = sorted(HAND["hand-150"])
    assert rows == [("hand-1", 1, 42, 42, 42), ("hand-150", 150, v[74], v[148], v[149])], rows


def test_duckdb_and_spark_give_identical_answers(fleet: dict[str, Any]) -> None:
    """Every table and ready view on both engines (one local Spark session), on the 100 captures."""
    need(shutil.which("java") is not None, "needs a Java runtime for Spark (make deps installs it)")
    names = [*TABLES, *READY_VIEWS]
    got: dict[str, dict[str, Any]] = {}
    # the events (1.8 M rows) compared by node, side and name: count, and sums of the TSCs mod a prime
    whole = {t: f"SELECT * FROM {t}" for t in names} | {"events": (
        "SELECT node, vm, run, side, event, count(*) AS n, sum(guest_tsc % 1000003) AS g, "
        "sum(coalesce(host_tsc, 0) % 1000003) AS h, sum(length(payload)) AS p FROM events GROUP BY node, vm, run, side, event")}
    for name in ENGINES:
        with engine(fleet["dataset"], name) as e:
            for t in names:
                cols, rows = e.run(whole[t])
                got.setdefault(t, {})[name] = (sorted(cols), sorted((tuple(sorted(zip(cols, r), key=str)) for r in rows), key=str))
    for t in names:
        assert got[t]["duckdb"] == got[t]["spark"], t
    assert all(got[t]["duckdb"][1] for t in ("verdicts", "latency_per_node", "offsets", "reachability", "untraceable"))
    assert len(got["verdicts"]["duckdb"][1]) == len(NODES)
