"""Numbers given on the command line are checked before they are used: each of these was accepted before (NaN
seconds ran a micro-VM for no time with exit 0; a negative --irq-every was taken; beacons with a NaN interval
reached the port; --pid -1 was "no VM found", exit 4; --irqs 10000000 ran the selftest into its 60 s timeout)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tsalign import exitcodes


@pytest.mark.parametrize("argv,said", [
    (["microvm", "--seconds", "nan"], "--seconds: invalid value nan; expected a positive number of seconds"),
    (["microvm", "--seconds", "inf"], "--seconds: invalid value inf"),
    (["microvm", "--seconds", "1", "--irq-every", "-1"], "--irq-every: invalid value -1"),
    (["beacons", "--count", "5", "--interval", "nan"], "--interval: invalid value nan"),
    (["beacons", "--count", "5", "--interval", "-1"], "--interval: invalid value -1.0"),
    (["beacons", "--count", "20000000"], "--count: invalid value 20000000"),
    (["offsets", "--pid", "-1"], "--pid: invalid value -1; expected a process id"),
    (["selftest", "--beacons", "10", "--irqs", "10000000", "--out", "/proc/self/never"],
     "--irqs from 0 to 20000"),
])
def test_refused_before_use(argv: list[str], said: str) -> None:
    r = subprocess.run([sys.executable, "-m", "tsalign", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == exitcodes.INVALID_INPUT and said in r.stderr, (r.returncode, r.stderr)
    assert r.stdout == ""  # nothing started
