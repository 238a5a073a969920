"""``tsalign <verb>``: thin command line over the library.

Each verb lives in its own module and registers itself with :func:`register`; errors become named
exit codes (:mod:`tsalign.exitcodes`), ``--json`` writes one JSON document to stdout, logs go to
stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Callable

from .. import __version__, exitcodes
from ..errors import InconsistentData, InvalidParameter, MissingParameter, TsalignError, Unavailable

__all__ = ["OUT_OF_MEMORY", "build_parser", "emit", "main"]

#: how main's error for a MemoryError begins (the fuzz harness tells a memory finding by it)
OUT_OF_MEMORY = "out of memory (MemoryError)"

Handler = Callable[[argparse.Namespace], int]


def emit(args: argparse.Namespace, document: dict[str, Any], text_lines: list[str]) -> None:
    """Write ``document`` as JSON (with --json) or ``text_lines`` as plain text to stdout."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
    else:
        for line in text_lines:
            sys.stdout.write(line + "\n")


def _exit_code(err: TsalignError) -> int:
    if isinstance(err, (InvalidParameter, MissingParameter)):
        return exitcodes.INVALID_INPUT
    if isinstance(err, Unavailable):
        return exitcodes.UNAVAILABLE
    if isinstance(err, InconsistentData):
        return exitcodes.INCONSISTENT
    return exitcodes.INVALID_INPUT


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every verb registered."""
    from . import analyze as _analyze
    from . import batch as _batch
    from . import capture as _capture
    from . import convert as _convert
    from . import demo as _demo
    from . import events as _events
    from . import fleet as _fleet
    from . import node as _node

    parser = argparse.ArgumentParser(
        prog="tsalign",
        description="Align KVM host and guest trace timestamps on the guest TSC axis.",
    )
    parser.add_argument("--version", action="version", version=f"tsalign {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for module in (_convert, _demo, _node, _capture, _batch, _events, _analyze, _fleet):
        module.register(sub)
    return parser


def _reap_stale_instances() -> None:
    """Remove tracefs instances of tsalign processes that are gone (a capture killed while its watchdog
    could not run): any tsalign command does it, as root, where tracefs is mounted; never an error.
    ``TSALIGN_REAP=0`` turns it off (for tools that run the CLI in bulk beside real captures: the fuzz harness)."""
    if os.geteuid() != 0 or os.environ.get("TSALIGN_REAP") == "0":
        return
    from ..capture import tracefs
    from ..node import mounts
    from ..node.fs import Root

    d = mounts.tracefs_dir(Root())
    if d is not None:
        try:
            tracefs.reap_stale(d)
        except (OSError, TsalignError):
            pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tsalign`` console script; returns the exit code."""
    # pyarrow's own allocator (mimalloc) keeps what it freed: align's peak RSS of a 2.4 M-event pair was 988 MiB
    # with it, 905 MiB with the C library's (same run time); read when pyarrow first allocates
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    _reap_stale_instances()
    try:
        return handler(args)
    except TsalignError as err:
        return _fatal(args, str(err), type(err).__name__, _exit_code(err))
    except KeyboardInterrupt:
        sys.stderr.write(f"tsalign {args.verb}: interrupted\n")
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        return exitcodes.OK
    except MemoryError:  # not a bug, and not "fail": what the machine could not give
        return _fatal(args, f"{OUT_OF_MEMORY}: free memory, raise this process's limit, or give it a shorter capture",
                      "MemoryError", exitcodes.UNAVAILABLE)
    except OSError as err:  # the machine said no where no check caught it first: no traceback, not exit 1 ("fail")
        msg = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
        return _fatal(args, msg, "OSError", exitcodes.UNAVAILABLE)
    except Exception as err:  # noqa: BLE001 - a bug: its traceback to report, and never exit 1, which says "verdict fail"
        traceback.print_exc()
        return _fatal(args, f"internal error ({type(err).__name__}: {err}); this is a bug in tsalign: please report "
                      "it with the traceback above", type(err).__name__, exitcodes.INTERNAL)


def _fatal(args: argparse.Namespace, msg: str, kind: str, code: int) -> int:
    """An error ending the command: said on stderr (and on stdout as JSON with --json); returns ``code``."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps({"error": msg, "kind": kind, "exit_code": code}) + "\n")
    sys.stderr.write(f"tsalign {args.verb}: error: {msg}\n")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
