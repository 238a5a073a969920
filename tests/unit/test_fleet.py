"""The fleet dataset (tsalign.fleet) on runs and precheck results written here with known contents: rows and
views against hand arithmetic, re-ingest changes nothing, a broken input is named and leaves nothing behind,
SQL on DuckDB in-process. Real captures are ingested in tests/integration/test_fleet_real.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tsalign.errors import InvalidParameter
from tsalign.fleet import dataset
from tsalign.fleet.ingest import ingest
from tsalign.fleet.query import query

REPO = Path(__file__).resolve().parents[2]


def _run(root: Path, name: str, *, node: str, verdict: str = "pass", widths: tuple[int, int] = (1000, 2600),
         kernel: str = "6.1.0-1-amd64", ident: dict[str, str] | None = None) -> Path:
    """A run directory as capture.yml leaves it (no timeline kept: no latencies)."""
    d = root / name
    (d / "aligned").mkdir(parents=True)
    (d / "host").mkdir()
    v = {"verdict": verdict, "reasons": ["r1", "r2"], "tsc_khz": 2_600_000, "vm": {"name": "vm1", "pid": 10},
         "brackets": {"checked": 500, "violated": 3 if verdict == "fail" else 0},
         "offsets": {"changes_seen": 7, "distinct_values": 4},
         "events": {"host": 1000, "guest": 900, "lost_in_ring_buffers": {"host": 2, "guest": 1}},
         "evidence": {"per_vcpu": [{"vcpu": i, "width_cycles": w, "width_ns": w * 1_000_000 // 2_600_000, "checked": 250,
                                    "violated": 0, "offset_in_use": {"distinct": 3}} for i, w in enumerate(widths)]}}
    (d / "aligned" / "verdict.json").write_text(json.dumps(v))
    (d / "aligned" / "offsets.jsonl").write_text("".join(json.dumps(
        {"vcpu": vc, "start_host_tsc": s, "offset": o & (2**64 - 1), "offset_signed": o, "ratio": 1 << 48,
         "frac_bits": 48, "source": "debugfs"}) + "\n" for vc, s, o in ((0, 0, -5000), (0, 900, -4000), (1, 0, -7000))))
    (d / "host" / "manifest.json").write_text(json.dumps({
        "role": "host", "node": {"hostname": node, "kernel": kernel, "boot_id": "b-1"},
        "started_host_tsc": 1000 + ord(name[0]), "stopped_tsc": 9000}))
    if ident is not None:
        (d / "run.json").write_text(json.dumps(ident))
    return d


def _precheck(root: Path, node: str, verdict: str, statuses: dict[str, str]) -> Path:
    p = root / "precheck" / f"{node}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"role": "host", "verdict": verdict, "kernel": "6.1", "tsc_khz": 2_600_000, "elapsed_ms": 12,
                             "checks": [{"id": c, "status": s, "evidence": "x", "fix": f"fix {c}"}
                                        for c, s in statuses.items()]}))
    return p


def _files(ds: Path) -> dict[str, float]:
    return {str(p.relative_to(ds)): p.stat().st_mtime_ns for p in ds.rglob("*") if p.is_file()}


def test_runs_and_prechecks_become_rows_and_views(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _run(src, "a", node="host-a", widths=(1000, 2600))
    _run(src, "b", node="host-b", verdict="fail", widths=(500, 400), kernel="6.1.0-2-amd64",
         ident={"node": "kvm-b", "vm": "web-01", "run": "20261202T101010Z"})
    _run(src, "c", node="host-a", widths=(3000, 100))
    _precheck(src, "kvm-1", "fail", {"btf": "fail", "tsc_flags": "ok", "kvm_vms": "fail"})
    _precheck(src, "kvm-2", "pass", {"btf": "ok"})
    ds = tmp_path / "ds"
    rep = ingest(str(ds), [str(src)])
    assert not rep.skipped and len(rep.written) == 5, rep.to_dict()
    cols, rows = query(str(ds), "SELECT node, vm, run, verdict, error_bound_cycles, evidence_violated, lost_events, "
                                "reasons FROM verdicts ORDER BY node, run")
    got = [dict(zip(cols, r)) for r in rows]
    # identity from run.json, else hostname / vm name / the capture's boot id, start and stop TSC
    assert [(g["node"], g["vm"]) for g in got] == [("host-a", "vm1"), ("host-a", "vm1"), ("kvm-b", "web-01")]
    ids = {hashlib.sha1(json.dumps(["b-1", 1000 + ord(n), 9000]).encode()).hexdigest()[:12] for n in "ac"}
    assert {got[0]["run"], got[1]["run"]} == ids and got[2]["run"] == "20261202T101010Z"
    assert sorted(g["error_bound_cycles"] for g in got) == [500, 2600, 3000]  # the widest vCPU of each
    assert got[2]["evidence_violated"] == 3 and got[2]["lost_events"] == 3 and got[2]["reasons"] == "r1\nr2"
    # offsets: three segments per run, unsigned and signed as written
    _, rows = query(str(ds), "SELECT count(*), min(tsc_offset_signed), max(tsc_offset) FROM offsets")
    assert rows == [(9, -7000, 2**64 - 4000)]
    # error bounds per kernel in ns (width * 1e6 // 2.6e6 kHz): 6.1.0-1: runs a (1000 ns), c (1153 ns); 6.1.0-2: 192
    _, rows = query(str(ds), "SELECT kernel, alignments, passed, failed, error_bound_ns_median, error_bound_ns_max "
                             "FROM error_bounds ORDER BY kernel")
    assert rows == [("6.1.0-1-amd64", 2, 2, 0, 1000, 1153), ("6.1.0-2-amd64", 1, 0, 1, 192, 192)]
    _, rows = query(str(ds), "SELECT node, check_id, fix FROM untraceable ORDER BY check_id")
    assert rows == [("kvm-1", "btf", "fix btf"), ("kvm-1", "kvm_vms", "fix kvm_vms")]
    _, rows = query(str(ds), "SELECT count(*) FROM prechecks")
    assert rows == [(4,)]
    # no timeline kept: the latency views exist and are empty
    assert query(str(ds), "SELECT * FROM latency_per_node")[1] == []


def test_ingesting_again_changes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _run(src, "a", node="host-a")
    _precheck(src, "kvm-1", "pass", {"btf": "ok"})
    ds = tmp_path / "ds"
    ingest(str(ds), [str(src)])
    before = _files(ds)
    rep = ingest(str(ds), [str(src)])
    assert not rep.written and len(rep.unchanged) == 2 and _files(ds) == before
    # the same runs copied elsewhere are the same partitions, unchanged
    shutil.copytree(src, tmp_path / "copy")
    rep = ingest(str(ds), [str(tmp_path / "copy")])
    assert not rep.written and len(rep.unchanged) == 2 and _files(ds) == before
    # a changed run is written again, in place (one row, not two)
    v = json.loads((src / "a" / "aligned" / "verdict.json").read_text()) | {"verdict": "warn"}
    (src / "a" / "aligned" / "verdict.json").write_text(json.dumps(v))
    rep = ingest(str(ds), [str(src)])
    assert len(rep.written) == 1
    assert query(str(ds), "SELECT verdict FROM verdicts")[1] == [("warn",)]


@pytest.mark.parametrize("breakage", [
    ("aligned/verdict.json", "{not json", "readable JSON"),
    ("aligned/verdict.json", json.dumps({"verdict": "great"}), "not a tsalign verdict"),
    ("host/manifest.json", json.dumps({"role": "guest"}), "not a host bundle"),
    ("aligned/offsets.jsonl", '{"vcpu": 0}\n', "offsets.jsonl:1: not an offset segment"),
    ("aligned/offsets.jsonl", json.dumps({"vcpu": 0, "start_host_tsc": -1, "offset": 0, "offset_signed": 0, "ratio": 1,
                                          "frac_bits": 0, "source": "x"}) + "\n", "out of range"),
    ("run.json", json.dumps({"node": "../../etc", "vm": "v", "run": "r"}), "letters, digits"),
    ("aligned/timeline.parquet", "PAR1 not parquet", "not a readable Parquet timeline"),
    ("aligned/verdict.json", "[" * 100_000, "readable JSON"),  # nested too deep for the parser (crashed ingest)
])
def test_a_broken_run_is_named_and_leaves_nothing(tmp_path: Path, breakage: tuple[str, str, str]) -> None:
    rel, text, why = breakage
    src = tmp_path / "src"
    bad = _run(src, "bad", node="host-bad")
    (bad / rel).write_text(text)
    _run(src, "good", node="host-good")
    ds = tmp_path / "ds"
    rep = ingest(str(ds), [str(src)])
    assert [s["path"] for s in rep.skipped] == [str(bad)] and why in rep.skipped[0]["reason"], rep.skipped
    assert [w["node"] for w in rep.written] == ["host-good"]
    assert not [p for p in ds.rglob("*") if "host-bad" in str(p) or ".staging" in str(p) or "etc" in p.name]


def test_a_fleet_summary_with_an_unknown_state_is_named(tmp_path: Path) -> None:
    src = tmp_path / "precheck"
    src.mkdir()
    (src / "fleet-summary.json").write_text(json.dumps({"run": "r1", "nodes": {"n1": {"state": "checked"},
                                                                               "n2": {"state": "asleep"}}}))
    rep = ingest(str(tmp_path / "ds"), [str(src)])
    assert not rep.written and "state 'asleep'" in rep.skipped[0]["reason"], rep.to_dict()


def test_a_failure_while_writing_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection (a disk error cannot be made on demand here): the third table's file fails to write."""
    import pyarrow.parquet as pq

    src = tmp_path / "src"
    _run(src, "a", node="host-a")
    real, calls = pq.write_table, []

    def failing(*a: Any, **k: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(*a, **k)

    monkeypatch.setattr(pq, "write_table", failing)
    ds = tmp_path / "ds"
    with pytest.raises(OSError):
        ingest(str(ds), [str(src)])
    assert sorted(os.listdir(ds)) == ["fleet.json"]


def test_bad_sql_and_foreign_datasets_are_named(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    ingest(str(ds), [str(_run(tmp_path / "src", "a", node="n"))])
    with pytest.raises(InvalidParameter, match="latency_per_node"):
        query(str(ds), "SELECT * FROM no_such_view")
    with pytest.raises(InvalidParameter, match="a fleet dataset"):
        query(str(tmp_path / "src"), "SELECT 1")
    (ds / "fleet.json").write_text(json.dumps({"schema_version": dataset.SCHEMA_VERSION + 1}))
    with pytest.raises(InvalidParameter, match="schema version"):
        query(str(ds), "SELECT 1")


def test_cli(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _run(src, "a", node="host-a")
    (src / "junk").mkdir()
    _run(src / "junk", "b", node="host-b")
    (src / "junk" / "b" / "aligned" / "verdict.json").write_text("[]")
    ds, out = str(tmp_path / "ds"), str(tmp_path / "report")

    def tsalign(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tsalign", "fleet", *argv, "--dataset", ds, "--json"], cwd=REPO,
                              capture_output=True, text=True, timeout=300)

    r = tsalign("ingest", str(src))
    assert r.returncode == 6, r.stderr  # something was skipped: a warning
    doc = json.loads(r.stdout)
    assert len(doc["written"]) == 1 and doc["skipped"][0]["path"].endswith("junk/b")
    r = tsalign("query", "SELECT node, verdict FROM verdicts")
    assert r.returncode == 0 and json.loads(r.stdout) == [{"node": "host-a", "verdict": "pass"}]
    r = tsalign("query", "SELEKT")
    assert r.returncode == 3 and "DuckDB" in json.loads(r.stdout)["error"]
    r = tsalign("report", "-o", out)
    assert r.returncode == 0, r.stderr
    html = Path(out, "report.html").read_text()
    assert "<svg" in html and "error_bounds" in html
    assert json.loads(Path(out, "report.json").read_text())["alignments"] == 1
