"""``tsalign align-batch``: many alignments in one command, side by side (capture.yml aligns a job's guests with it).

Inputs: the shipped real selftest capture (examples/selftest: ``pass`` by hand-checked beacons), the same guest
moved by 10^12 cycles (``fail``) and a guest that does not exist (an error): each must come out as a single
``tsalign align`` run of it does, and the batch's exit code must be the error's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_verify import SHIPPED, _moved, _tsalign
from tsalign import exitcodes


def _args(guest: Path, out: Path) -> list[str]:
    return ["--host", str(SHIPPED / "host"), "--guest", str(guest), "-o", str(out)]


def test_batch_gives_each_alignment_as_align_does(tmp_path: Path) -> None:
    moved = _moved(tmp_path, 10**12)
    batch = {"good": _args(SHIPPED / "guest", tmp_path / "b-good"), "moved": _args(moved, tmp_path / "b-moved"),
             "absent": _args(tmp_path / "no-such-guest", tmp_path / "b-absent")}
    (tmp_path / "batch.json").write_text(json.dumps(batch))
    r = _tsalign("align-batch", str(tmp_path / "batch.json"), "--jobs", "2", "--json")
    doc = json.loads(r.stdout)
    res = doc["alignments"]
    assert list(res) == ["good", "moved", "absent"]  # the batch's order, whatever order they ended in
    assert (res["good"]["verdict"], res["good"]["exit"]) == ("pass", 0)
    assert (res["moved"]["verdict"], res["moved"]["exit"]) == ("fail", exitcodes.VERDICT_FAIL)
    assert res["absent"]["verdict"] is None and res["absent"]["exit"] == exitcodes.INVALID_INPUT
    assert "no-such-guest" in res["absent"]["error"]
    assert doc["counts"] == {"pass": 1, "warn": 0, "unverified": 0, "fail": 1, "error": 1}
    assert r.returncode == exitcodes.INVALID_INPUT  # an alignment that could not run outranks any verdict
    assert "[3/3]" in r.stderr and "moved: fail" in r.stderr
    # each as `tsalign align` alone gives it: verdict, reasons and every output byte for byte
    for name, guest in (("good", SHIPPED / "guest"), ("moved", moved)):
        one = _tsalign("align", *_args(guest, tmp_path / f"one-{name}"), "--json")
        alone = json.loads(one.stdout)
        assert one.returncode == res[name]["exit"]
        assert {k: v for k, v in alone.items() if k != "artifacts"} == \
            {k: v for k, v in res[name]["result"].items() if k != "artifacts"}
        for f in ("timeline.jsonl", "timeline.parquet", "offsets.jsonl"):
            assert (tmp_path / f"b-{name}" / f).read_bytes() == (tmp_path / f"one-{name}" / f).read_bytes(), (name, f)
    # without the one that cannot run: the worst verdict's code
    del batch["absent"]
    (tmp_path / "batch2.json").write_text(json.dumps(batch))
    r = _tsalign("align-batch", str(tmp_path / "batch2.json"))
    assert r.returncode == exitcodes.VERDICT_FAIL and "alignments: pass 1, fail 1" in r.stdout


@pytest.mark.parametrize(("text", "said"), [
    ("not json", "readable JSON"),
    ("[]", "a JSON object mapping each name"),
    ("{}", "a JSON object mapping each name"),
    ('{"../x": ["--host", "h", "--guest", "g"]}', "names of letters"),
    ('{"a": "--host h"}', "a list of 1 to 200 strings"),
    ('{"a": []}', "a list of 1 to 200 strings"),
    ('{"a": ["--host", "h", "--guest", "g"], "b": ["--host", "h", "--guest", "g", "--no-such-option"]}', "unrecognized arguments"),
    ('{"a": ["--guest", "g"]}', "--host"),
])
def test_a_bad_batch_file_is_refused_before_anything_runs(tmp_path: Path, text: str, said: str) -> None:
    (tmp_path / "batch.json").write_text(text)
    r = _tsalign("align-batch", str(tmp_path / "batch.json"), "--json")
    assert r.returncode == exitcodes.INVALID_INPUT, (r.stdout, r.stderr)
    assert said in json.loads(r.stdout)["error"], r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.json"]  # nothing run, nothing written


def test_jobs_out_of_range(tmp_path: Path) -> None:
    (tmp_path / "batch.json").write_text(json.dumps({"a": _args(SHIPPED / "guest", tmp_path / "o")}))
    r = _tsalign("align-batch", str(tmp_path / "batch.json"), "--jobs", "0")
    assert r.returncode == exitcodes.INVALID_INPUT and "--jobs" in r.stderr


def test_a_killed_worker_is_reported_not_a_traceback(tmp_path: Path) -> None:
    """A worker killed mid-batch (as the OOM killer would) leaves the alignments it took down reported as errors that
    say so, and the batch's exit is INTERNAL — never a Python traceback or a hang."""
    batch = {f"g{i}": _args(SHIPPED / "guest", tmp_path / f"o{i}") for i in range(6)}
    (tmp_path / "batch.json").write_text(json.dumps(batch))
    p = subprocess.Popen([sys.executable, "-m", "tsalign", "align-batch", str(tmp_path / "batch.json"), "--jobs", "2",
                          "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    killed = None
    while killed is None and time.monotonic() < deadline and p.poll() is None:
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            if f"\nPPid:\t{p.pid}\n" in text:
                killed = int(status.parent.name)
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.01)
    out, err = p.communicate(timeout=300)
    assert killed is not None, "no worker seen"
    assert "Traceback" not in err, err
    doc = json.loads(out)
    broken = [n for n, r in doc["alignments"].items() if r["verdict"] is None]
    assert broken and all("ended abnormally" in doc["alignments"][n]["error"] for n in broken), doc
    assert p.returncode == exitcodes.INTERNAL and doc["counts"]["error"] == len(broken)


def test_interrupted_batch_stops_starting_alignments(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the process group) ends the batch with 130 soon, without running the alignments not
    started."""
    batch = {f"g{i}": _args(SHIPPED / "guest", tmp_path / f"o{i}") for i in range(30)}
    (tmp_path / "batch.json").write_text(json.dumps(batch))
    p = subprocess.Popen([sys.executable, "-m", "tsalign", "align-batch", str(tmp_path / "batch.json"), "--jobs", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert p.stderr is not None
    assert p.stderr.readline() == "align-batch: 30 alignments, 1: given (--jobs)\n"
    first = p.stderr.readline()  # "[1/30] g0: pass": one alignment ended
    assert first.startswith("[1/30]"), first
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == exitcodes.INTERRUPTED and "interrupted" in err, err
    outs = list(tmp_path.glob("o*"))
    assert len(outs) < 10  # the rest never started
    for o in outs:  # each finished, or was stopped as `tsalign align` stops on Ctrl-C: no partial outputs
        names = sorted(f.name for f in o.iterdir())
        assert names in ([], ["offsets.jsonl", "timeline.jsonl", "timeline.parquet", "verdict.json"]) or \
            "trace.perfetto-trace" in names and len(names) == 5, (o, names)
