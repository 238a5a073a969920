"""Real traces recorded on this machine, for the reader tests and the fuzz harness's seeds: one private
tracefs instance (x86-tsc, TGID recorded) read as its ``trace`` text (with and without the irq-info
columns) and as a trace-cmd .dat made by ``trace-cmd extract`` (v7 zstd, converted by trace-cmd to v6 and
to uncompressed v7), ``trace-cmd report -t`` of that file, and ``perf record`` + ``perf script`` (default,
--ns, and times only). Needs root, tracefs, trace-cmd and perf."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def _load() -> subprocess.Popen[bytes]:
    """Context switches, wakeups and syscalls on both CPUs for about a second."""
    code = "import os,time\nfor i in range(400):\n    os.getppid(); time.sleep(0.0005)\n"
    return subprocess.Popen([sys.executable, "-c", code])


def _sh(cmd: list[str], out: Path | None = None) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stderr[-500:]}")
    if out is not None:
        out.write_text(r.stdout)
    return r.stdout


def record(d: Path) -> dict[str, Path]:
    """Record the files into directory ``d``; returns name -> path (text, text_noirq, v7zstd, v6, v7none,
    report, perf, perf_ns, perf_times)."""
    from tsalign.capture.tracefs import TraceSession

    files: dict[str, Path] = {}
    with TraceSession(["sched:sched_switch", "sched:sched_wakeup", "irq:*", "raw_syscalls:sys_exit"]) as s:
        with open(os.path.join(s.path, "options", "record-tgid"), "w") as f:
            f.write("1")
        s.start()
        p, q = _load(), _load()
        p.wait()
        q.wait()
        s.stop()
        trace = os.path.join(s.path, "trace")
        files["text"] = d / "tracefs.txt"
        shutil.copyfile(trace, files["text"])
        with open(os.path.join(s.path, "options", "irq-info"), "w") as f:
            f.write("0")
        files["text_noirq"] = d / "tracefs-noirq.txt"
        shutil.copyfile(trace, files["text_noirq"])
        files["v7zstd"] = d / "ext.dat"
        _sh(["trace-cmd", "extract", "-B", s.name, "-o", str(files["v7zstd"])])
    files["v6"] = d / "v6.dat"
    _sh(["trace-cmd", "convert", "--file-version", "6", "-i", str(files["v7zstd"]), "-o", str(files["v6"])])
    files["v7none"] = d / "v7none.dat"
    _sh(["trace-cmd", "convert", "--compression", "none", "-i", str(files["v7zstd"]), "-o", str(files["v7none"])])
    files["report"] = d / "report.txt"
    _sh(["trace-cmd", "report", "-t", str(files["v7zstd"])], files["report"])
    perf = d / "perf.data"
    p = _load()
    _sh(["perf", "record", "-q", "-e", "sched:sched_switch", "-e", "sched:sched_wakeup", "-a", "-o", str(perf),
         "--", "sleep", "0.5"])
    p.wait()
    files["perf"] = d / "perf.txt"
    _sh(["perf", "script", "-i", str(perf)], files["perf"])
    files["perf_ns"] = d / "perf-ns.txt"
    _sh(["perf", "script", "--ns", "-i", str(perf)], files["perf_ns"])
    files["perf_times"] = d / "perf-times.txt"
    _sh(["perf", "script", "--ns", "-F", "cpu,time,event", "-i", str(perf)], files["perf_times"])
    return files
