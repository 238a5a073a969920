"""Bundles as a hostile user writes them: every manifest value is checked before use, data files stay
inside the bundle and are regular files, and each error names the key or the line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tsalign.errors import InvalidParameter
from tsalign.traces.bundle import Bundle
from tsalign.traces.reader import open_trace

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "selftest"


def bundle(tmp_path: Path, which: str = "host", **changes: Any) -> Path:
    dst = tmp_path / which
    shutil.copytree(EXAMPLE / which, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for key, value in changes.items():
        cur = m
        *parents, last = key.split("__")
        for p in parents:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        cur[last if not isinstance(cur, list) else int(last)] = value
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def read_all(path: Path) -> int:
    b = Bundle.open(str(path))
    return sum(1 for _ in b.records()) + sum(len(c) for c in open_trace(str(path)).raw_chunks())


def test_example_bundles_are_valid(tmp_path: Path) -> None:
    assert read_all(bundle(tmp_path)) > 0 and read_all(bundle(tmp_path, "guest")) > 0


@pytest.mark.parametrize("files", [["../../../../../../etc/passwd"], ["/etc/passwd"], ["/dev/zero"], ["a/../../x"],
                                   [".."], ["cpu0.txt\n"], [5], "cpu0.txt"])
def test_data_files_are_confined(tmp_path: Path, files: Any) -> None:
    b = bundle(tmp_path, data__files=files)
    with pytest.raises(InvalidParameter, match=r"data\.files") as e:
        Bundle.open(str(b))
    assert "root:" not in str(e.value)  # /etc/passwd is never read, so never echoed


@pytest.mark.parametrize("kind", ["symlink-out", "fifo", "device", "directory"])
def test_data_files_must_be_regular_files_inside(tmp_path: Path, kind: str) -> None:
    b = bundle(tmp_path)
    target = b / "cpu0.txt"
    target.unlink()
    if kind == "symlink-out":
        target.symlink_to("/etc/passwd")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
    with pytest.raises(InvalidParameter, match="inside the bundle|regular file") as e:
        read_all(b)
    assert "root:" not in str(e.value)


@pytest.mark.parametrize(("key", "value", "named"), [
    ("role", 5, "role"),
    ("role", "hostile", "role"),
    ("clock", "x86-tsc", "clock"),
    ("clock__domain", "nanoseconds", "clock.domain"),
    ("offsets__snapshots__0__vcpu", "0", r"offsets.snapshots\[0\].vcpu"),
    ("offsets__snapshots__0__offset", 1 << 70, r"offsets.snapshots\[0\].offset"),
    ("offsets__snapshots__0__host_tsc", -1, r"offsets.snapshots\[0\].host_tsc"),
    ("offsets__snapshots__0__frac_bits", 400, r"offsets.snapshots\[0\].frac_bits"),
    ("offsets__snapshots", {"0": 1}, "offsets.snapshots"),
    ("started_host_tsc", "4077016847662", "started_host_tsc"),
    ("stats__0__entries", -5, r"stats\[0\].entries"),
    ("lost_events", 1.5, "lost_events"),
    ("vm__0__vcpus__0__id", 10**9, r"vm\[0\].vcpus\[0\].id"),
    ("node__tsc_khz", "2.4 GHz", "node.tsc_khz"),
    ("data__format", "csv", "data.format"),
])
def test_manifest_values_are_typed_and_ranged(tmp_path: Path, key: str, value: Any, named: str) -> None:
    b = bundle(tmp_path, **{key: value})
    with pytest.raises(InvalidParameter, match=named) as e:
        Bundle.open(str(b))
    assert "manifest.json" in str(e.value) and "invalid" in str(e.value)


def test_manifest_that_is_not_json_text(tmp_path: Path) -> None:
    b = bundle(tmp_path)
    for raw in (b"\xff\xfe{}", b"[1, 2]", b"{" * 100000, b""):
        (b / "manifest.json").write_bytes(raw)
        with pytest.raises(InvalidParameter, match="manifest"):
            Bundle.open(str(b))


def test_incomplete_bundle_is_refused(tmp_path: Path) -> None:
    b = bundle(tmp_path)
    (b / "INCOMPLETE").write_text("pid 1\n")
    with pytest.raises(InvalidParameter, match="did not finish"):
        Bundle.open(str(b))


@pytest.mark.parametrize("line", ['{"ts": -1, "event": "x"}', '{"ts": 18446744073709551616, "event": "x"}',
                                  '{"ts": "12", "event": "x"}', '[1]', '{"ts": 1, "event": 7}', '{"ts": 1}',
                                  '{"ts": 1, "event": "x", "cpu": 1e300}'])
def test_jsonl_events_are_checked(tmp_path: Path, line: str) -> None:
    b = bundle(tmp_path, "guest")
    (b / "events.jsonl").write_text('{"ts": 1, "event": "tsalign_beacon"}\n' + line + "\n")
    with pytest.raises(InvalidParameter, match=r"events\.jsonl:2"):
        list(Bundle.open(str(b)).records())


def test_data_cut_at_a_line_end_is_caught_by_the_declared_counts(tmp_path: Path) -> None:
    # was: aligned with pass; the manifest's per-CPU entries were never compared with what was read
    b = bundle(tmp_path)
    lines = (b / "cpu1.txt").read_text().splitlines(keepends=True)
    (b / "cpu1.txt").write_text("".join(lines[:-100]))
    with pytest.raises(InvalidParameter, match=rf"{len(lines)} events, as the capture's ring-buffer stats declare; "
                                               rf"{len(lines) - 100} were read"):
        list(Bundle.open(str(b)).records())
    with pytest.raises(InvalidParameter, match="stats declare"), open_trace(str(b)) as t:
        list(t.chunks())
    with open_trace(str(b), strict=False) as t:  # --lenient: the events read, and the numbers as a warning
        assert sum(len(c) for c in t.chunks()) == 80 + len(lines) - 100
        assert any("stats declare" in w for w in t.info.warnings)
