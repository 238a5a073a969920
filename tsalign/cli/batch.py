"""``tsalign align-batch``: many ``tsalign align`` runs in one command, several at once.

A capture job over a fleet ends with one alignment per guest (capture.yml: 48 guests of one host in the
fleet test). Run one at a time, each pays for a Python start and tsalign's imports, and the job runs on one
core. Here the imports are paid once: the workers are forked from this process after it made them, and
``--jobs`` of them run the alignments side by side. By default as many as this machine has CPUs, but no more than
the memory this process may use holds (tsalign.memory: each alignment's peak estimated from its inputs' sizes; the
largest ones counted), so that a controller aligning long captures is not driven into the OOM killer.

The batch file is JSON: an object mapping a name (the report's key: a guest's name) to the arguments of
``tsalign align`` for it, as a list of strings. Every list is checked by ``tsalign align``'s own parser
before any alignment starts, so a bad one is an error naming it, with nothing run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import signal
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .. import exitcodes
from ..errors import InvalidParameter
from ..jsonfile import load_json
from ..memory import available_bytes
from ..verdicts import VERDICTS, exit_code, worst
from . import emit

__all__ = ["load_batch", "register", "run_batch"]

#: a name of the batch: a report key and a progress line's start
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,199}")
MAX_ITEMS = 10_000
MAX_ARGS = 200


def register(sub: Any) -> None:
    p = sub.add_parser("align-batch", help="many `tsalign align` runs in one command, several at once",
                       description="Run the alignments a JSON file lists ({NAME: [tsalign align's arguments], ...}), "
                                   "--jobs at once in processes forked after tsalign's imports. Each alignment writes "
                                   "what `tsalign align` writes. Exit: the worst verdict's code (0 pass, 1 fail, "
                                   "6 warn, 7 unverified); an alignment that could not run: its own exit code.")
    p.add_argument("batch", help="JSON file: an object mapping each name to a list of `tsalign align` arguments")
    p.add_argument("--jobs", type=int, default=None,
                   help="alignments at once (default: this machine's CPUs, fewer where the largest alignments' "
                        "estimated peaks would not fit the memory available). Each holds its own trace in memory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_batch_cli)


def load_batch(path: str) -> dict[str, list[str]]:
    """The batch file's alignments, each argument list checked by ``tsalign align``'s parser (an
    :class:`InvalidParameter` naming the first bad entry and why)."""
    expected = ('a JSON object mapping each name to a list of `tsalign align` arguments (e.g. {"web-01": '
                '["--host", "H", "--guest", "G", "-o", "OUT"]})')
    doc = load_json(path, "BATCH", expected)
    if not isinstance(doc, dict) or not doc:
        raise InvalidParameter("BATCH", path, expected)
    if len(doc) > MAX_ITEMS:
        raise InvalidParameter("BATCH", path, f"at most {MAX_ITEMS} alignments (it lists {len(doc)})")
    from . import build_parser

    parser = build_parser()
    for name, argv in doc.items():
        if not _NAME.fullmatch(name):
            raise InvalidParameter("BATCH", f"{path}: {name!r}", "names of letters, digits and . _ @ : - (up to 200, "
                                                                  "starting with a letter or digit)")
        if not (isinstance(argv, list) and 0 < len(argv) <= MAX_ARGS and all(isinstance(a, str) for a in argv)):
            raise InvalidParameter("BATCH", f"{path}: {name}", f"a list of 1 to {MAX_ARGS} strings: the arguments of "
                                                                "`tsalign align`")
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parser.parse_args(["align", *argv])
        except SystemExit:
            why = err.getvalue().strip().splitlines()
            raise InvalidParameter("BATCH", f"{path}: {name}", "arguments `tsalign align` accepts; it said: "
                                                                f"{why[-1] if why else 'no reason given'}") from None
    return doc


_STOP: Any = None  # (in a worker) the batch's interruption event, set by the parent on Ctrl-C


def _worker_init(stop: Any) -> None:
    """A worker: Ctrl-C is the parent's to handle (it stops the batch, then each running alignment with SIGTERM)."""
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _one(argv: list[str]) -> tuple[int, str, str]:
    """Run ``tsalign align ARGV --json`` in this (worker) process: (exit code, its stdout, its stderr). SIGTERM
    interrupts it as Ctrl-C interrupts `tsalign align` (its partial outputs removed)."""
    from . import main
    from .capture import term_as_interrupt

    if _STOP is not None and _STOP.is_set():
        return exitcodes.INTERRUPTED, "", "not started: the batch was interrupted"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), term_as_interrupt():
        try:
            rc = main(["align", *argv, "--json"])
        except SystemExit as e:  # (argparse: checked before, so only a changed file between)
            rc = e.code if isinstance(e.code, int) else exitcodes.USAGE
        except Exception:  # noqa: BLE001 - a bug: reported for this alignment, the others go on
            traceback.print_exc()
            rc = exitcodes.INTERNAL
    return rc, out.getvalue(), err.getvalue()


def _preload() -> None:
    """What every alignment imports, made once here so that the forked workers share it."""
    from ..align import columns, merge, sides  # noqa: F401
    from ..report import perfetto  # noqa: F401
    from ..traces import export  # noqa: F401
    from ..verify import judge  # noqa: F401


def default_jobs(estimates: list[int], cpus: int, available: int | None) -> tuple[int, str]:
    """How many alignments to run at once without ``--jobs`` (pure): the CPUs, at most as many as there are, and no
    more than the largest ``estimates`` (peak bytes each) that fit in ``available`` bytes together (at least one);
    with why."""
    n = max(1, min(cpus, len(estimates)))
    why = f"the CPUs ({cpus})" if n == cpus else "one per alignment"
    if available is None:
        return n, f"{n}: {why}; the memory available is unknown"
    largest = sorted(estimates, reverse=True)
    fit = 0
    while fit < n and sum(largest[:fit + 1]) <= available:
        fit += 1
    if fit == n:
        return n, f"{n}: {why}"
    if fit == 0:
        return 1, (f"1: the largest alignment's estimated peak ({_gib(largest[0])}) exceeds the memory available "
                   f"({_gib(available)}): it may be killed for lack of memory")
    return fit, (f"{fit}: {fit + 1} of the largest alignments at once would need {_gib(sum(largest[:fit + 1]))} at "
                 f"their peaks (estimated), more than the {_gib(available)} available")


def _gib(b: int) -> str:
    return f"{b / 2**30:.1f} GiB"


def estimates(batch: dict[str, list[str]]) -> list[int]:
    """Each alignment's estimated peak memory (bytes), from its inputs' sizes (:mod:`tsalign.memory`)."""
    from ..memory import estimate_alignment
    from . import build_parser

    parser = build_parser()
    out = []
    for argv in batch.values():
        a = parser.parse_args(["align", *argv])
        out.append(estimate_alignment(a.host, a.guest).bytes)
    return out


def choose_jobs(batch: dict[str, list[str]], given: int | None) -> tuple[int, str]:
    """How many alignments of ``batch`` run at once, and why: ``given`` (--jobs; at most one per alignment), else
    :func:`default_jobs` from the CPUs, the alignments' estimated peaks and the memory available."""
    if given:
        n = max(1, min(given, len(batch)))
        return n, f"{n}: given (--jobs)"
    return default_jobs(estimates(batch), os.cpu_count() or 1, available_bytes())


def run_batch(batch: dict[str, list[str]], jobs: int | None = None,
              progress: Any = None) -> dict[str, dict[str, Any]]:
    """Every alignment of ``batch`` (see :func:`load_batch`), ``jobs`` at once (:func:`choose_jobs`); per name: ``exit`` (its exit code),
    ``verdict`` (None when it could not run), ``result`` (its --json document) and ``error`` (the end of its
    stderr when it could not run). ``progress(name, entry, done, total)`` is called as each ends."""
    n, _ = choose_jobs(batch, jobs)
    results: dict[str, dict[str, Any]] = {}
    _preload()
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    pool = ProcessPoolExecutor(n, mp_context=ctx, initializer=_worker_init, initargs=(stop,))
    try:
        futures = {pool.submit(_one, argv): name for name, argv in batch.items()}
        for fut in as_completed(futures):
            name = futures[fut]
            try:
                rc, out, err = fut.result()
            except BrokenProcessPool:  # a worker killed (the kernel's OOM killer, a signal): no alignment ran on
                rc, out, err = exitcodes.INTERNAL, "", (
                    "its process ended abnormally, or another's did and took the pool with it (killed: out of memory? "
                    "each alignment holds its trace; give fewer --jobs)")
            try:
                doc = json.loads(out) if out.strip() else None
            except ValueError:
                doc = None
            verdict = doc.get("verdict") if isinstance(doc, dict) else None
            ok = verdict in VERDICTS and rc == exit_code(verdict)
            entry = {"exit": rc, "verdict": verdict if ok else None, "result": doc if ok else None,
                     "error": None if ok else (err.strip()[-4000:] or f"exit {rc} with no message")}
            results[name] = entry
            if progress:
                progress(name, entry, len(results), len(batch))
    except BaseException:  # interrupted: start no other alignment (a with-block would run them all first), and stop
        stop.set()           # the running ones as `tsalign align` stops on Ctrl-C (partial outputs removed)
        pool.shutdown(wait=False, cancel_futures=True)
        workers = multiprocessing.active_children()
        for w in workers:
            w.terminate()
        for w in workers:
            w.join(60)
            if w.is_alive():
                w.kill()
        raise
    pool.shutdown()
    return {k: results[k] for k in batch}


def batch_exit(results: dict[str, dict[str, Any]]) -> int:
    """The batch's exit code: the first (in the batch's order) alignment that could not run gives its own; else
    the worst verdict's."""
    for r in results.values():
        if r["verdict"] is None:
            return int(r["exit"]) if r["exit"] else exitcodes.INTERNAL
    return exit_code(worst(*(r["verdict"] for r in results.values())))


def run_batch_cli(args: argparse.Namespace) -> int:
    if args.jobs is not None and not 1 <= args.jobs <= 1024:
        raise InvalidParameter("--jobs", args.jobs, "a number of alignments at once from 1 to 1024")
    batch = load_batch(args.batch)

    def progress(name: str, entry: dict[str, Any], done: int, total: int) -> None:
        what = entry["verdict"] or f"error (exit {entry['exit']}): {entry['error'].splitlines()[-1]}"
        sys.stderr.write(f"[{done}/{total}] {name}: {what}\n")

    jobs, why = choose_jobs(batch, args.jobs)
    sys.stderr.write(f"align-batch: {len(batch)} alignments, {why}\n")
    results = run_batch(batch, jobs, progress)
    counts = {v: sum(r["verdict"] == v for r in results.values()) for v in VERDICTS}
    counts["error"] = sum(r["verdict"] is None for r in results.values())
    lines = [f"{name}: {r['verdict'] or 'error (exit ' + str(r['exit']) + ')'}" for name, r in results.items()]
    lines.append("alignments: " + ", ".join(f"{v} {c}" for v, c in counts.items() if c))
    emit(args, {"alignments": results, "counts": counts, "jobs": jobs, "jobs_why": why}, lines)
    return batch_exit(results)
