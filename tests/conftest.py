"""Shared test plumbing.

Tests that need a real facility (root, /dev/kvm, tracefs, debugfs, BTF, libvirtd, a VM) call
:func:`need`. On a laptop they skip with the stated reason; with ``TSALIGN_REQUIRE_REAL=1`` (set by
``.ci/run``) *any* skip is turned into a failure, so a suite that silently skips proves nothing.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Property tests build arrays and run numpy: no per-example deadline (CI machines vary in speed).
# Derandomized: the same examples every run, so CI cannot fail on a case no earlier run tried (a new
# counterexample belongs in a test of its own, as test_pvclock_round_trip's bound is); set
# TSALIGN_HYPOTHESIS_RANDOM=1 to explore new examples.
settings.register_profile("tsalign", deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          derandomize=os.environ.get("TSALIGN_HYPOTHESIS_RANDOM", "") in ("", "0"))
settings.load_profile("tsalign")

REQUIRE_REAL = os.environ.get("TSALIGN_REQUIRE_REAL", "") not in ("", "0")


def need(condition: Any, reason: str) -> None:
    """Skip (or fail under TSALIGN_REQUIRE_REAL=1) unless ``condition`` holds."""
    if not condition:
        if REQUIRE_REAL:
            pytest.fail(f"TSALIGN_REQUIRE_REAL=1 but: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_REAL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under TSALIGN_REQUIRE_REAL=1 (a real test must run here): {reason}"
