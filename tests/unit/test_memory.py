"""Memory estimates before an alignment (tsalign.memory) and what align-batch makes of them.

The estimate is checked against independent counts (trace-cmd report's lines, the files' own lines) and against
the peak RSS the kernel reports for real alignments; the memory available against a real memory cgroup (v1 here:
a child of this process's cgroup with its own limit), into which real `tsalign align`/`align-batch` runs are put.
The cgroup parsers also get cgroup file trees written by hand (v1 and v2 layouts, checked by hand arithmetic).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import need
from tsalign import memory
from tsalign.cli.batch import default_jobs

REPO = Path(__file__).resolve().parents[2]
SELFTEST = REPO / "examples" / "selftest"
FOREIGN = REPO / "examples" / "foreign"
GIB = 1 << 30


def test_event_estimates_are_upper_bounds_of_real_inputs() -> None:
    need(shutil.which("trace-cmd"), "needs trace-cmd (make test installs it)")
    r = subprocess.run(["trace-cmd", "report", str(FOREIGN / "host.dat")], capture_output=True, text=True, check=True)
    dat_events = sum(1 for line in r.stdout.splitlines() if ": " in line and "[" in line)
    assert dat_events > 2000
    assert memory.events_in(str(FOREIGN / "host.dat")) >= dat_events
    lines = (FOREIGN / "guest.txt").read_text().count("\n")
    assert memory.events_in(str(FOREIGN / "guest.txt")) >= lines
    host_lines = sum(p.read_text().count("\n") for p in (SELFTEST / "host").glob("cpu*.txt"))
    # by hand: (7080 + 244180) bytes / 60 = 4187 (the manifest and formats are not events)
    assert memory.events_in(str(SELFTEST / "host")) == (7080 + 244180) // 60 >= host_lines
    assert memory.events_in(str(SELFTEST / "guest")) >= (SELFTEST / "guest" / "events.jsonl").read_text().count("\n")
    assert memory.events_in("/nonexistent") == 0
    assert memory.events_in(str(REPO / "examples")) == 0  # (a directory that is not a bundle: align says why)


#: runs a command and prints its peak RSS (KiB) as the kernel counts it: from a small process, because a child's
#: ru_maxrss starts at the RSS of the process it was forked from (the kernel keeps the old mm's peak at exec), and
#: pytest's is hundreds of MiB by now
PEAK = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execv(sys.argv[1], sys.argv[1:])\n"
        "_, status, ru = os.wait4(pid, 0)\nprint(os.waitstatus_to_exitcode(status), ru.ru_maxrss)")


def test_the_estimated_peak_is_above_real_alignments_peaks(tmp_path: Path) -> None:
    for host, guest, extra in ((SELFTEST / "host", SELFTEST / "guest", []),
                               (FOREIGN / "host.dat", FOREIGN / "guest.txt", ["--tsc-offset", "0"])):
        r = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "tsalign", "align", "--host", str(host),
                            "--guest", str(guest), *extra, "-o", str(tmp_path / host.name), "--json"],
                           capture_output=True, text=True, timeout=600)
        rc, peak_kib = map(int, r.stdout.split()[-2:])
        assert rc in (0, 1, 6), r.stderr
        assert 100 << 20 < peak_kib * 1024 <= memory.estimate_alignment(str(host), str(guest)).bytes


def test_meminfo_and_cgroup_files_by_hand(tmp_path: Path) -> None:
    assert memory.meminfo_available("MemTotal: 100 kB\nMemAvailable:    2048 kB\n") == 2 << 20
    assert memory.meminfo_available("MemTotal: 100 kB\n") is None
    # v1: this process in /a/b; /a limits to 1000 with 600 used (100 inactive file pages), /a/b to 5000 with 100 used
    v1 = tmp_path / "v1"
    for rel, lim, used, inactive in (("a", 1000, 600, 100), ("a/b", 5000, 100, 0), ("", 1 << 63, 700, 0)):
        d = v1 / "memory" / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.limit_in_bytes").write_text(f"{lim}\n")
        (d / "memory.usage_in_bytes").write_text(f"{used}\n")
        (d / "memory.stat").write_text(f"cache 5\ntotal_inactive_file {inactive}\n")
    assert memory.cgroup_room("4:memory:/a/b\n1:cpu:/\n", str(v1)) == 1000 - 600 + 100
    # v2 (hybrid: mounted at unified/), "max" at the leaf, a limit at its parent; v2 says inactive_file
    v2 = tmp_path / "v2"
    for rel, lim, used, inactive in (("unified/s", "3000", 1000, 500), ("unified/s/t", "max", 900, 0)):
        d = v2 / rel
        d.mkdir(parents=True)
        (d / "memory.max").write_text(lim + "\n")
        (d / "memory.current").write_text(f"{used}\n")
        (d / "memory.stat").write_text(f"anon 1\ninactive_file {inactive}\n")
    (v2 / "unified" / "s" / "t" / "memory.stat").write_text("inactive_file 0\n")
    assert memory.cgroup_room("0::/s/t\n", str(v2)) == 3000 - 1000 + 500
    assert memory.cgroup_room("0::/s/t\n4:memory:/x\n", str(tmp_path / "none")) is None  # (nothing readable)
    # inactive pages beyond the usage are not counted (a stale stat): at most the usage
    (v2 / "unified" / "s" / "memory.stat").write_text("inactive_file 99999\n")
    assert memory.cgroup_room("0::/s/t\n", str(v2)) == 3000


def test_default_jobs_by_hand() -> None:
    est = [3 * GIB, 1 * GIB, 2 * GIB]
    assert default_jobs(est, 2, None) == (2, "2: the CPUs (2); the memory available is unknown")
    assert default_jobs(est, 2, 6 * GIB)[0] == 2  # 3 + 2 GiB fit
    n, why = default_jobs(est, 2, 4 * GIB)  # 3 + 2 do not: one at a time
    assert n == 1 and "5.0 GiB" in why and "4.0 GiB" in why
    n, why = default_jobs(est, 8, 6 * GIB)  # three CPUs' worth of alignments but 3+2+1 = 6 GiB: all three fit
    assert n == 3 and why == "3: one per alignment"
    n, why = default_jobs(est, 2, 2 * GIB)
    assert n == 1 and "may be killed" in why


def _memory_cgroup() -> Path | None:
    """This process's v1 memory cgroup directory, where one is mounted and writable."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            d = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
            return d if os.access(d, os.W_OK) else None
    return None


@contextmanager
def _limited(limit: int) -> Iterator[Path]:
    """A child of this process's memory cgroup limited to ``limit`` bytes (removed after)."""
    parent = _memory_cgroup()
    need(os.geteuid() == 0 and parent is not None, "needs root and a writable v1 memory cgroup (this machine has one)")
    assert parent is not None
    d = parent / f"tsalign-test-{os.getpid()}"
    d.mkdir()
    try:
        (d / "memory.limit_in_bytes").write_text(str(limit))
        yield d
    finally:
        d.rmdir()


def _run_in(cg: Path, argv: list[str]) -> subprocess.CompletedProcess:
    procs = str(cg / "cgroup.procs")

    def enter() -> None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return subprocess.run(argv, capture_output=True, text=True, preexec_fn=enter, timeout=600, cwd=REPO)


@pytest.mark.real
def test_available_memory_follows_a_real_cgroup_limit() -> None:
    with _limited(300 << 20) as cg:
        r = _run_in(cg, [sys.executable, "-c", "from tsalign.memory import available_bytes; print(available_bytes())"])
    assert r.returncode == 0, r.stderr
    assert 200 << 20 < int(r.stdout) <= 300 << 20


@pytest.mark.real
def test_align_batch_runs_fewer_at_once_where_memory_is_limited(tmp_path: Path) -> None:
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({n: ["--host", str(SELFTEST / "host"), "--guest", str(SELFTEST / "guest"), "-o",
                                     str(tmp_path / n)] for n in ("a", "b")}))
    one = memory.estimate_alignment(str(SELFTEST / "host"), str(SELFTEST / "guest")).bytes
    argv = [sys.executable, "-m", "tsalign", "align-batch", str(batch), "--json"]
    if (os.cpu_count() or 1) >= 2:  # unlimited: both at once
        doc = json.loads(subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=600).stdout)
        assert doc["jobs"] == 2 and doc["counts"]["pass"] == 2
    with _limited(one + (one // 2)) as cg:  # room for one alignment's estimate, not two
        r = _run_in(cg, argv)
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["counts"]["pass"] == 2, r.stderr
    assert doc["jobs"] == 1 and "more than the" in doc["jobs_why"], doc["jobs_why"]
    assert "align-batch: 2 alignments, 1:" in r.stderr


@pytest.mark.real
def test_align_warns_before_reading_what_will_not_fit(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # 6 GB of text by its size (sparse: no disk used): ~100 M events estimated
        f.truncate(6 * 10**9)
    with _limited(400 << 20) as cg:
        r = _run_in(cg, [sys.executable, "-m", "tsalign", "align", "--host", str(big), "--guest",
                         str(SELFTEST / "guest"), "--tsc-offset", "0", "-o", str(tmp_path / "out")])
    assert r.returncode != 0  # (the file holds no trace: refused by the reader, after the warning)
    assert "warning: these inputs may need up to 11." in r.stderr and "GiB this process may use" in r.stderr, r.stderr
    # the same inputs with room: no warning
    small = subprocess.run([sys.executable, "-m", "tsalign", "align", "--host", str(SELFTEST / "host"), "--guest",
                            str(SELFTEST / "guest"), "-o", str(tmp_path / "out2")], capture_output=True, text=True,
                           cwd=REPO, timeout=600)
    assert small.returncode == 0 and "warning: these inputs" not in small.stderr
