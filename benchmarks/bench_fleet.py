"""Fleet scale (issue #16's benchmark), side by side in one run:

1. precheck.yml wall time over 10, 25 and 50 real SSH targets (network namespaces sharing one Debian rootfs;
   the default forks of ansible.cfg), to show how it grows;
2. `tsalign fleet ingest` rate (events/s) on real captures: a selftest of tsalign's micro-VM on this host's
   /dev/kvm, ingested under INGEST_RUNS node names (run.json);
3. the latency-per-node view, and a count of events per node and name, on DuckDB (in-process) and on a local
   Spark, over a dataset of at least TSALIGN_BENCH_FLEET_EVENTS events (default 100 M): the ingested
   partitions replicated at the file level under further node names (replicas of real captures, for scale).

Needs root, /dev/kvm, the rootfs of the tests (make fixtures) and Java for Spark; prints what it skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

INGEST_RUNS = 20
TARGET_EVENTS = int(os.environ.get("TSALIGN_BENCH_FLEET_EVENTS", str(100_000_000)))


def precheck_walls(work: Path) -> dict[int, float] | str:
    from tests.infra import netns

    cache = os.environ.get("TSALIGN_CACHE", "/var/cache/tsalign")
    rootfs = os.environ.get("TSALIGN_ROOTFS") or next((str(p) for p in sorted(Path(cache).glob("rootfs-bookworm-*"))
                                                       if (p / ".complete").exists()), "")
    if os.geteuid() != 0 or not rootfs:
        return "needs root and the tests' rootfs (make fixtures)"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    walls: dict[int, float] = {}
    targets: list[dict] = []
    try:
        for n in (10, 25, 50):
            while len(targets) < n:
                targets.append(netns.up(rootfs))
            hosts = {f"node-{i:02d}": {"ansible_host": st["ip"], "ansible_user": "root",
                                       "ansible_ssh_private_key_file": st["key"],
                                       "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                                       "ansible_python_interpreter": "/usr/bin/python3"} for i, st in enumerate(targets)}
            inv = work / f"fleet-{n}.yml"
            inv.write_text(json.dumps({"all": {"children": {"tsalign_hosts": {"hosts": {}},
                                                            "tsalign_guests": {"hosts": hosts}}}}))
            t0 = time.monotonic()
            r = subprocess.run(["ansible-playbook", "-i", str(inv), str(REPO / "playbooks" / "precheck.yml"),
                                "-e", f"tsalign_precheck_dir={work}/precheck-{n}", "-e", "tsalign_precheck_fail_on=never",
                                "-e", f"tsalign_common_lib={work}/lib"], capture_output=True, text=True, env=env, cwd=REPO)
            walls[n] = time.monotonic() - t0
            if r.returncode != 0:
                return f"precheck.yml over {n} targets failed: {r.stdout[-800:]}"
    finally:
        for st in targets:
            netns.down(st)
    return walls


def ingest_rate(work: Path) -> tuple[str, dict]:
    from tsalign.fleet.ingest import ingest

    st = work / "selftest"
    r = subprocess.run([sys.executable, "-m", "tsalign", "selftest", "--beacons", "20000", "--irqs", "400",
                        "--out", str(st), "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"selftest failed: {r.stderr[-800:]}")
    src = work / "runs"
    for i in range(INGEST_RUNS):
        d = src / f"kvm-{i:04d}"
        shutil.copytree(st, d)
        (d / "run.json").write_text(json.dumps({"node": f"kvm-{i:04d}", "vm": "mvm", "run": "job-1"}))
    ds = work / "dataset"
    t0 = time.monotonic()
    rep = ingest(str(ds), [str(src)])
    wall = time.monotonic() - t0
    events = sum(w["rows"].get("events", 0) for w in rep.written)
    return str(ds), {"runs": len(rep.written), "events": events, "seconds": round(wall, 2),
                     "events_per_s": int(events / wall), "per_run_events": events // max(1, len(rep.written))}


def replicate(ds: str, per_run: int) -> int:
    """Copy the ingested partitions under further node names until the dataset holds TARGET_EVENTS events."""
    root = Path(ds)
    have = INGEST_RUNS
    while have * per_run < TARGET_EVENTS:
        node = f"kvm-{have:04d}"
        src = f"kvm-{have % INGEST_RUNS:04d}"
        for table in ("events", "latencies", "verdicts", "vcpus", "offsets", "preemptions"):
            a = root / table / f"node={src}"
            if a.is_dir():
                shutil.copytree(a, root / table / f"node={node}")
        have += 1
    return have


def time_views(ds: str) -> dict[str, dict[str, float | str]]:
    from tsalign.fleet.query import engine

    res: dict[str, dict[str, float | str]] = {}
    for name in ("duckdb", "spark"):
        if name == "spark" and not shutil.which("java"):
            res[name] = {"skipped": "no Java runtime"}
            continue
        t0 = time.monotonic()
        with engine(ds, name) as e:
            ready = time.monotonic() - t0
            row = {"open_s": round(ready, 2)}
            for label, sql in (("latency_per_node_s", "SELECT * FROM latency_per_node"),
                               ("events_per_node_and_name_s", "SELECT node, event, count(*) FROM events GROUP BY node, event"),
                               ("events_total", "SELECT count(*) FROM events")):
                t1 = time.monotonic()
                _, rows = e.run(sql)
                row[label] = rows[0][0] if label == "events_total" else round(time.monotonic() - t1, 2)
        res[name] = row
    return res


def main() -> None:
    if os.geteuid() != 0 or not os.path.exists("/dev/kvm"):
        print(json.dumps({"skipped": "needs root and /dev/kvm (real captures and targets)"}))
        return
    work = Path(tempfile.mkdtemp(prefix="tsalign-bench-fleet-"))
    try:
        walls = precheck_walls(work)
        ds, ing = ingest_rate(work)
        nodes = replicate(ds, ing["per_run_events"])
        views = time_views(ds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("precheck.yml wall (s) by targets: " + (", ".join(f"{n}: {w:.1f}" for n, w in walls.items())
                                                 if isinstance(walls, dict) else f"skipped ({walls})"))
    print(f"ingest: {ing['runs']} real runs, {ing['events']:,} events in {ing['seconds']} s = {ing['events_per_s']:,} events/s")
    print(f"dataset: {nodes} nodes (real runs replicated at the file level), "
          f"{views['duckdb'].get('events_total', '?'):,} events")
    print(f"{'engine':<8}{'open s':>9}{'latency_per_node s':>21}{'events per node+name s':>25}")
    for name, v in views.items():
        if "skipped" in v:
            print(f"{name:<8} skipped: {v['skipped']}")
        else:
            print(f"{name:<8}{v['open_s']:>9}{v['latency_per_node_s']:>21}{v['events_per_node_and_name_s']:>25}")
    print(json.dumps({"precheck_wall_s": walls, "ingest": ing, "nodes": nodes, "views": views}))


if __name__ == "__main__":
    main()
