"""The verdict words of every tsalign check and the exit codes they map to (one registry).

``pass``: independent evidence was checked and holds. ``warn``: it holds, but something limits
trust (sources disagree, events lost, evidence bounds the offset from one side only).
``unverified``: there was no evidence to check (never exit 0). ``fail``: evidence contradicts
the alignment (or, for prechecks, the node cannot do what is asked).
"""

from __future__ import annotations

from . import exitcodes

__all__ = ["FAIL", "PASS", "UNVERIFIED", "VERDICTS", "WARN", "exit_code", "worst"]

PASS, WARN, UNVERIFIED, FAIL = "pass", "warn", "unverified", "fail"
#: in increasing severity: a combined verdict is the most severe of its parts
VERDICTS = (PASS, WARN, UNVERIFIED, FAIL)
_EXIT = {PASS: exitcodes.OK, WARN: exitcodes.VERDICT_WARN, UNVERIFIED: exitcodes.VERDICT_UNVERIFIED,
         FAIL: exitcodes.VERDICT_FAIL}


def worst(*verdicts: str) -> str:
    """The most severe of ``verdicts`` (``pass`` when none is given)."""
    return max(verdicts, key=VERDICTS.index, default=PASS)


def exit_code(verdict: str) -> int:
    """The CLI exit code of a verdict (tsalign.exitcodes)."""
    return _EXIT[verdict]
