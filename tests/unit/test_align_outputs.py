"""``tsalign align --outputs``: the timeline's outputs a long capture's user picks (JSON lines are the biggest and
slowest), on the shipped real selftest bundles (examples/selftest) and the shipped foreign pair (examples/foreign).
Each output asked for is the same rows as the default run's (read back with pyarrow and the json module); the verdict
does not depend on them; an output not asked for is not left from an earlier run; a wrong list is refused before
anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.unit.test_verify import SHIPPED, _tsalign
from tsalign import exitcodes

FOREIGN = Path(__file__).resolve().parents[2] / "examples" / "foreign"


def _align(out: Path, *more: str) -> tuple[int, dict]:
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o", str(out), "--json",
                 *more)
    return r.returncode, json.loads(r.stdout)


def _verdict(out: Path) -> dict:
    v = json.loads((out / "verdict.json").read_text())
    v.pop("artifacts")
    return v


def test_parquet_only_the_same_rows_and_verdict(tmp_path: Path) -> None:
    code, full = _align(tmp_path / "full")
    assert code == 0 and {"timeline", "parquet", "offsets"} <= set(full["artifacts"])
    out = tmp_path / "lean"
    _align(out)  # an earlier alignment's files in the same directory
    code, lean = _align(out, "--outputs", "parquet")
    assert (code, lean["verdict"]) == (0, full["verdict"])
    assert sorted(p.name for p in out.iterdir()) == ["offsets.jsonl", "timeline.parquet", "verdict.json"]
    assert set(lean["artifacts"]) == {"offsets", "parquet", "verdict"}
    assert _verdict(out) == _verdict(tmp_path / "full")
    rows = [json.loads(x) for x in (tmp_path / "full" / "timeline.jsonl").open()]
    table = pq.read_table(out / "timeline.parquet")
    assert table.num_rows == len(rows) > 1000
    assert table.column("guest_tsc").to_pylist() == [r["guest_tsc"] for r in rows]
    assert table.column("payload").to_pylist() == [r["payload"] for r in rows]


def test_none_writes_the_verdict_only(tmp_path: Path) -> None:
    code, v = _align(tmp_path / "v", "--outputs", "none")
    assert code == 0 and v["verdict"] == "pass"
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["offsets.jsonl", "verdict.json"]


def test_jsonl_and_perfetto_in_the_order_asked_any(tmp_path: Path) -> None:
    code, v = _align(tmp_path / "a", "--outputs", "perfetto,jsonl")
    assert code == 0 and set(v["artifacts"]) == {"offsets", "timeline", "perfetto", "verdict"}
    assert (tmp_path / "a" / "trace.perfetto-trace").stat().st_size > 0
    assert not (tmp_path / "a" / "timeline.parquet").exists()


def test_a_wrong_list_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    r = _tsalign("align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "-o",
                 str(tmp_path / "x"), "--outputs", "jsonl,csv")
    assert r.returncode == exitcodes.USAGE and "jsonl, parquet, perfetto" in r.stderr and "'jsonl,csv'" in r.stderr
    # perfetto asked for where no TSC frequency is known (a .dat and a text trace, no --tsc-khz): its ns cannot be
    r = _tsalign("align", "--host", str(FOREIGN / "host.dat"), "--guest", str(FOREIGN / "guest.txt"), "-o",
                 str(tmp_path / "y"), "--outputs", "perfetto")
    assert r.returncode == exitcodes.INVALID_INPUT and "--tsc-khz" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
