"""``tsalign convert`` through the real console script (a subprocess), good and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tsalign import exitcodes


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsalign", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("tsalign ")


def test_seed_offset_signed_and_unsigned_agree() -> None:
    a = run("convert", "--from", "tsc", "--to", "guest-tsc", "--tsc-offset", "0xffee6aba03eccaac", "5000000000000000")
    b = run("convert", "--from", "tsc", "--to", "guest-tsc", "--tsc-offset=-4949202418480468", "5000000000000000")
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout == f"{5000000000000000 - 4949202418480468}\n"


def test_chain_perf_to_guest_json_and_stdin() -> None:
    # 2 GHz perf page (mult/2**shift = 1/2), guest offset -1000: ns 10 -> tsc 20 -> guest 2**64-980
    r = run("convert", "--from", "perf", "--to", "guest-tsc", "--time-zero", "0", "--time-mult", "0x40000000",
            "--time-shift", "31", "--tsc-offset", "-1000", "--json", stdin="10\n\n# comment\n0x14\n")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["path"] == ["perf", "tsc", "guest-tsc"]
    assert [v["out"] for v in doc["values"]] == [(1 << 64) - 980, (1 << 64) - 960]


def test_durations() -> None:
    r = run("convert", "--from", "cycles", "--to", "ns", "--tsc-khz", "2596000", "2596000", "-2596")
    assert r.stdout.split() == ["1000000", "-1000"]


@pytest.mark.parametrize(
    "args, stdin, needle",
    [
        (["--from", "tsc", "--to", "guest-tsc", "--tsc-offset", "1", "12abc"], "", "VALUE #1: invalid value '12abc'"),
        (["--from", "tsc", "--to", "guest-tsc", "--tsc-offset", "1", str(1 << 64)], "", "unsigned 64-bit"),
        (["--from", "tsc", "--to", "guest-tsc", "--tsc-offset", str(1 << 64), "1"], "", "--tsc-offset"),
        (["--from", "perf", "--to", "tsc", "--time-zero", "0", "--time-mult", "0", "--time-shift", "31", "1"], "",
         "--time-mult: invalid value 0"),
        (["--from", "perf", "--to", "tsc", "--time-zero", "0", "--time-mult", "1", "1"], "",
         "--time-shift is required"),
        (["--from", "tsc", "--to", "guest-tsc", "--tsc-offset", "0", "--tsc-frac-bits", "64", "1"], "",
         "--tsc-frac-bits: invalid value 64; expected 0..63"),
        (["--from", "tsc", "--to", "guest-tsc", "--tsc-offset", "0", "--tsc-ratio", "0", "5"], "",
         "--tsc-ratio: invalid value '0'; expected a positive fixed-point ratio"),  # (was: 5, as unscaled)
        (["--from", "tsc", "--to", "guest-tsc", "1"], "", "--tsc-offset is required"),
        (["--from", "tsc", "--to", "minutes", "1"], "", "one of perf"),
        (["--from", "cycles", "--to", "tsc", "1"], "", "cycles <-> ns"),
        (["--from", "tsc", "--to", "guest-tsc", "--tsc-offset", "0"], "1\nxyz\n", "stdin line 2"),
    ],
)
def test_bad_input(args: list, stdin: str, needle: str) -> None:
    r = run("convert", *args, stdin=stdin)
    assert r.returncode == exitcodes.INVALID_INPUT, (r.stdout, r.stderr)
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_bad_input_json_error_document() -> None:
    r = run("convert", "--json", "--from", "tsc", "--to", "guest-tsc", "x")
    assert r.returncode == exitcodes.INVALID_INPUT
    assert json.loads(r.stdout)["exit_code"] == exitcodes.INVALID_INPUT
