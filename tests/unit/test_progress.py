"""Progress lines of `tsalign align` and `tsalign analyze` on stderr: said where stderr is a terminal or --progress
asks, never mixed into --json's stdout, absent from a pipe unless asked. Runs the real CLI on the shipped capture
(examples/selftest), with a real pseudo-terminal for the default."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "selftest"
LINE = re.compile(r"^tsalign (align|analyze): \[\d+\.\d s\] (.*)$")


def _counts() -> tuple[int, int]:
    """The shipped capture's host and guest events, counted from its files (one event a line)."""
    host = sum(1 for f in sorted((SHIPPED / "host").glob("cpu*.txt")) for line in f.open()
               if line.strip() and not line.startswith("#"))
    guest = sum(1 for line in (SHIPPED / "guest" / "events.jsonl").open() if line.strip())
    return host, guest


def _run(args: list[str], stderr_tty: bool = False) -> tuple[int, str, str]:
    """The CLI's (exit code, stdout, stderr); stderr a pseudo-terminal where ``stderr_tty``."""
    cmd = [sys.executable, "-m", "tsalign", *args]
    if not stderr_tty:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        return r.returncode, r.stdout, r.stderr
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            err += chunk
        out = p.stdout.read() if p.stdout else ""
        return p.wait(timeout=300), out, err.decode().replace("\r\n", "\n")
    finally:
        os.close(master)


def _steps(stderr: str) -> list[str]:
    return [m[2] for m in (LINE.match(line) for line in stderr.splitlines()) if m]


def test_align_says_each_step_with_its_counts(tmp_path: Path) -> None:
    code, out, err = _run(["align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"),
                           "-o", str(tmp_path / "a"), "--progress", "--json"])
    assert code == 0, err
    verdict = json.loads(out)  # stdout holds the JSON document only
    steps = _steps(err)
    host, guest = _counts()
    assert steps[0].startswith("reading host (") and " and guest (" in steps[0]
    assert steps[1] == f"read {host:,} host and {guest:,} guest events; merging them on the guest TSC axis"
    assert steps[2] == f"merged {host + guest:,} events; judging the alignment by its evidence"
    assert steps[3].startswith(f"verdict pass ({verdict['brackets']['checked']:,} evidence items checked); writing")
    assert steps[4:] == ["done"]
    seconds = [float(s) for s in re.findall(r"\[(\d+\.\d) s\]", err)]
    assert seconds == sorted(seconds)


def test_a_terminal_gets_them_by_default_a_pipe_does_not(tmp_path: Path) -> None:
    args = ["align", "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"), "--outputs", "none"]
    code, _, err = _run([*args, "-o", str(tmp_path / "a")])
    assert code == 0 and not _steps(err), err
    code, _, err = _run([*args, "-o", str(tmp_path / "b")], stderr_tty=True)
    assert code == 0 and _steps(err)[-1] == "done", err
    code, _, err = _run([*args, "-o", str(tmp_path / "c"), "--no-progress"], stderr_tty=True)
    assert code == 0 and not _steps(err), err


def test_analyze_says_each_step(tmp_path: Path) -> None:
    kind = "irq"
    code, out, err = _run(["analyze", kind, "--host", str(SHIPPED / "host"), "--guest", str(SHIPPED / "guest"),
                           "-o", str(tmp_path / "r"), "--progress", "--json"])
    assert code == 0, err
    json.loads(out)
    steps = _steps(err)
    assert steps[2] == f"merged {sum(_counts()):,} events; judging the alignment by its evidence"
    assert steps[3] == f"verdict pass; running the {kind} analysis"
    assert steps[-2:] == [f"writing its reports in {tmp_path / 'r'}", "done"]
