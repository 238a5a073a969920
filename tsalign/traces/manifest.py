"""The bundle manifest's schema, checked before any value of it is used.

A manifest comes from a file anybody can edit: every key tsalign reads has a type and a range here
(JSON Schema, checked with ``jsonschema``), and the data files it lists must be regular files inside
the bundle directory (no absolute paths, no ``..``, no symlink out, no device or FIFO). Keys tsalign
does not read (``node.cmdline``, ``workload``...) may hold anything JSON allows.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from ..errors import InvalidParameter

__all__ = ["SCHEMA", "check_data_file", "validate"]

U64 = {"type": "integer", "minimum": 0, "maximum": (1 << 64) - 1}
S64_OR_U64 = {"type": "integer", "minimum": -(1 << 63), "maximum": (1 << 64) - 1}
COUNT = {"type": "integer", "minimum": 0, "maximum": (1 << 63) - 1}
VCPU = {"type": "integer", "minimum": 0, "maximum": 4095}
PID = {"type": "integer", "minimum": 0, "maximum": 1 << 22}
NAME = {"type": "string", "maxLength": 4096}
OPT_NAME = {"type": ["string", "null"], "maxLength": 4096}
#: a file name relative to the bundle: path components of safe characters, no "." or ".." component
#: (\Z, not $: Python's $ also matches before a final newline)
REL_PATH = {"type": "string", "pattern": r"^(?!\.{1,2}(/|\Z))(?!.*/\.{1,2}(/|\Z))[A-Za-z0-9_.:+-]+(/[A-Za-z0-9_.:+-]+)*\Z",
            "maxLength": 255}

SNAPSHOT = {
    "type": "object",
    "required": ["host_tsc", "vcpu", "offset"],
    "properties": {"host_tsc": U64, "vcpu": VCPU, "offset": S64_OR_U64, "ratio": U64,
                   "frac_bits": {"type": "integer", "minimum": 0, "maximum": 63}, "source": NAME, "read_until": U64},
}
HOST_VM = {
    "type": "object",
    "properties": {
        "pid": PID, "vm_fd": {"type": ["integer", "null"], "minimum": 0, "maximum": 1 << 20},
        "name": OPT_NAME, "uuid": OPT_NAME, "debugfs_dir": OPT_NAME,
        "vcpus": {"type": "array", "maxItems": 4096,
                  "items": {"type": "object", "required": ["id"], "properties": {"id": VCPU, "tid": PID}}},
    },
}
GUEST_VM = {"type": "object", "properties": {"pid": PID, "vm_fd": {"type": ["integer", "null"], "minimum": 0},
                                             "host_boot_id": OPT_NAME}}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["role", "clock", "data"],  # format and version: checked first by Bundle.open
    "properties": {
        "role": {"enum": ["host", "guest"]},
        "clock": {"type": "object", "required": ["domain"],
                  "properties": {"domain": {"enum": ["host_tsc", "guest_tsc", "perf_ns", "kvmclock_ns", "sched_ns"]},
                                 "trace_clock": NAME, "convertible": {"type": "boolean"}, "reason": NAME,
                                 "kvm_sched_clock_offset_ns": {"type": ["integer", "null"], "minimum": 0,
                                                               "maximum": (1 << 64) - 1},
                                 "resolution_ns": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
                                 "perf_user_page": {"type": "object"}, "pvclock": {"type": "object"}}},
        "data": {"type": "object", "required": ["format", "files"],
                 "properties": {"format": {"enum": ["ftrace-text", "jsonl"]},
                                "files": {"type": "array", "maxItems": 8192, "items": REL_PATH}}},
        "events": {"type": "array", "maxItems": 100000, "items": NAME},
        "formats": {"type": "object", "additionalProperties": REL_PATH},
        "offsets": {"type": "object", "properties": {"snapshots": {"type": "array", "maxItems": 1 << 20, "items": SNAPSHOT}}},
        "vm": {"oneOf": [{"type": "array", "maxItems": 4096, "items": HOST_VM}, GUEST_VM]},
        "node": {"type": "object", "properties": {
            "tsc_khz": {"type": ["integer", "null"], "minimum": 0, "maximum": 100_000_000},
            "hostname": OPT_NAME, "boot_id": OPT_NAME, "kernel": OPT_NAME, "clocksource": OPT_NAME,
            "sched_clock": OPT_NAME}},
        "stats": {"type": "array", "maxItems": 8192, "items": {
            "type": "object", "required": ["cpu", "entries"],
            "properties": {"cpu": {"type": "integer", "minimum": 0, "maximum": 8191}, "entries": COUNT,
                           "overrun": COUNT, "commit_overrun": COUNT, "dropped_events": COUNT}}},
        "lost_events": COUNT,
        "started_host_tsc": U64, "started_tsc": U64, "stopped_tsc": U64,
        "duration_s": {"type": "number", "minimum": 0, "maximum": 1e7},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}


def _where(path: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(top level)"


def validate(manifest: Any, where: str) -> None:
    """Raise InvalidParameter naming ``where`` (the manifest's path), the key and what was expected,
    for the first violation of SCHEMA (jsonschema's best match)."""
    import jsonschema

    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(manifest))
    if err is not None:
        shown = repr(err.instance)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise InvalidParameter("bundle manifest", where,
                               f"key {_where(err.absolute_path)} = {shown} is invalid: {err.message[:300]} "
                               "(re-capture, or fix the manifest by hand)")


def check_data_file(bundle: str, name: str) -> str:
    """The path of data file ``name`` of ``bundle``, after checking it is a regular file inside the
    bundle directory (symlinks resolved). Raises InvalidParameter otherwise."""
    root = os.path.realpath(bundle)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root:
        raise InvalidParameter("bundle data", name, f"a file inside the bundle {bundle} (it resolves to {path})")
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidParameter("bundle data", os.path.join(bundle, name),
                               f"a readable file listed in manifest.json ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidParameter("bundle data", os.path.join(bundle, name), "a regular file (not a device, FIFO or directory)")
    return path
