"""Output directories that cannot be made or written are named before any work (found: `align -o /proc/self/x`
read and judged the whole capture, then died in a traceback with exit 1, the code of a "fail" verdict), and
nothing made for a failed command is left; an error no check caught is never exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.unit.test_verify import _tsalign
from tsalign import exitcodes

EX = Path(__file__).resolve().parents[2] / "examples"
SELFTEST = ["--host", str(EX / "selftest" / "host"), "--guest", str(EX / "selftest" / "guest")]


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A real read-only mount (tmpfs, ro): root may write anywhere else, so permissions alone prove nothing."""
    need(os.geteuid() == 0, "mounting a read-only tmpfs needs root")
    d = tmp_path / "ro"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


@pytest.mark.parametrize("verb", [["align", *SELFTEST], ["analyze", "irq", *SELFTEST]])
@pytest.mark.parametrize("where", ["proc", "read-only", "read-only child"])
def test_an_output_directory_that_cannot_be_written_is_named_first(verb: list[str], where: str, read_only: Path
                                                                   ) -> None:
    out = {"proc": "/proc/self/tsalign-x", "read-only": str(read_only),
           "read-only child": str(read_only / "a" / "b")}[where]
    r = _tsalign(*verb, "-o", out, "--progress")
    assert r.returncode == exitcodes.INVALID_INPUT, r.stderr
    assert f"-o/--out: invalid value '{out}'; expected a directory this user can create and write in" in r.stderr
    assert "Traceback" not in r.stderr and "reading" not in r.stderr  # refused before the read
    assert os.listdir(read_only) == []


def test_the_directories_made_for_a_failed_alignment_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "out"
    r = _tsalign("align", "--host", str(EX / "foreign" / "host.dat"), "--guest", str(tmp_path / "missing.txt"),
                 "--tsc-offset", "0=0", "-o", str(out))
    assert r.returncode == exitcodes.INVALID_INPUT and "--guest" in r.stderr
    assert os.listdir(tmp_path) == []
    (tmp_path / "kept").mkdir()  # one that was there before stays, with what was in it
    (tmp_path / "kept" / "earlier.txt").write_text("x")
    r = _tsalign("align", "--host", str(EX / "foreign" / "host.dat"), "--guest", str(tmp_path / "missing.txt"),
                 "--tsc-offset", "0=0", "-o", str(tmp_path / "kept"))
    assert r.returncode == exitcodes.INVALID_INPUT
    assert os.listdir(tmp_path / "kept") == ["earlier.txt"]


def test_fleet_and_demo_directories(read_only: Path) -> None:
    r = _tsalign("fleet", "ingest", str(EX), "--dataset", str(read_only / "ds"))
    assert r.returncode == exitcodes.INVALID_INPUT and "--dataset: invalid value" in r.stderr, r.stderr
    r = _tsalign("demo", "--shipped", "--out", str(read_only / "demo"))
    assert r.returncode == exitcodes.INVALID_INPUT and "--out: invalid value" in r.stderr, r.stderr
    assert os.listdir(read_only) == []


# a bug cannot be made on purpose in the real code: the one place this test replaces code is a verb's handler,
# made to raise as a bug or an unforeseen OSError would
_RAISE = """
import sys
import tsalign.cli.convert as c
def boom(args):
    raise {exc}
c.run = boom
from tsalign.cli import main
sys.exit(main(["convert", "--from", "tsc", "--to", "guest-tsc", "--tsc-offset", "1", "5"{json}]))
"""


@pytest.mark.parametrize("exc,code,said", [
    ("KeyError('x')", exitcodes.INTERNAL, "internal error (KeyError: 'x'); this is a bug in tsalign"),
    ("OSError(28, 'No space left on device', '/some/file')", exitcodes.UNAVAILABLE,
     "error: No space left on device: /some/file"),
    ("MemoryError()", exitcodes.UNAVAILABLE, "error: out of memory (MemoryError): free memory"),
])
@pytest.mark.parametrize("json_out", [False, True])
def test_an_uncaught_error_never_exits_1(exc: str, code: int, said: str, json_out: bool) -> None:
    import json

    src = Path(__file__).resolve().parents[2] / "tsalign" / "cli" / "convert.py"
    assert "handler=run)" in src.read_text()  # (the name this test replaces)
    r = subprocess.run([sys.executable, "-c", _RAISE.format(exc=exc, json=', "--json"' if json_out else "")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == code and said in r.stderr, r.stderr
    assert ("Traceback" in r.stderr) == (code == exitcodes.INTERNAL)
    if json_out:
        assert json.loads(r.stdout)["exit_code"] == code
