"""Named exit codes of the ``tsalign`` CLI (stable: scripts and Ansible depend on them)."""

__all__ = ["INCONSISTENT", "INTERNAL", "INTERRUPTED", "INVALID_INPUT", "OK", "UNAVAILABLE", "USAGE", "VERDICT_FAIL", "VERDICT_UNVERIFIED", "VERDICT_WARN"]

OK = 0
VERDICT_FAIL = 1  # the command ran; its verdict is "fail"
USAGE = 2  # command line malformed (argparse)
INVALID_INPUT = 3  # a parameter or input value is invalid or missing
UNAVAILABLE = 4  # a kernel facility, file or permission needed is not available here
INCONSISTENT = 5  # inputs contradict each other
VERDICT_WARN = 6  # the command ran; its verdict is "warn" (only where a command documents it)
VERDICT_UNVERIFIED = 7  # the command ran; there was no evidence to check its result against
INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM (128 + SIGINT, as a shell reports it)
INTERNAL = 70  # a bug in tsalign (EX_SOFTWARE): please report it with the traceback in stderr
