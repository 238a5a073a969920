"""Where tracefs and debugfs are mounted, and mounting them on explicit request."""

from __future__ import annotations

import ctypes
import os

from .fs import Root

__all__ = ["debugfs_dir", "mount", "mount_missing", "mount_point", "tracefs_dir"]

TRACEFS_DEFAULT = "/sys/kernel/tracing"
DEBUGFS_DEFAULT = "/sys/kernel/debug"


def mount_point(root: Root, fstype: str, usual: str) -> str | None:
    """Where ``fstype`` is mounted (/proc/mounts): ``usual`` if it is mounted there, else the first mount point
    (e.g. a bind mount into some chroot, which is the same filesystem), else None."""
    text = root.read("/proc/mounts") or ""
    points = [parts[1].replace("\\040", " ") for parts in map(str.split, text.splitlines())
              if len(parts) >= 3 and parts[2] == fstype]
    return usual if usual in points else (points[0] if points else None)


def tracefs_dir(root: Root) -> str | None:
    """The tracefs directory: its own mount, or debugfs/tracing (older kernels auto-mount it there)."""
    mp = mount_point(root, "tracefs", TRACEFS_DEFAULT)
    if mp:
        return mp
    dbg = mount_point(root, "debugfs", DEBUGFS_DEFAULT)
    if dbg and root.exists(os.path.join(dbg, "tracing", "trace_clock")):
        return os.path.join(dbg, "tracing")
    if not root.is_live and root.exists(TRACEFS_DEFAULT + "/trace_clock"):
        return TRACEFS_DEFAULT  # recorded trees have no /proc/mounts of their own
    return None


def debugfs_dir(root: Root) -> str | None:
    mp = mount_point(root, "debugfs", DEBUGFS_DEFAULT)
    if mp:
        return mp
    if not root.is_live and root.exists(DEBUGFS_DEFAULT + "/kvm"):
        return DEBUGFS_DEFAULT
    return None


def mount(fstype: str, target: str) -> str | None:
    """mount -t ``fstype`` nodev ``target``; returns None on success, else the error text."""
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(b"nodev", target.encode(), fstype.encode(), 0, None)
    if rc != 0:
        err = ctypes.get_errno()
        return f"mount -t {fstype} nodev {target}: {os.strerror(err)}"
    return None


def mount_missing() -> list[str]:
    """As root, mount tracefs and debugfs where this machine has none (what ``tsalign precheck --mount`` does);
    what was mounted, said in a line each (nothing when not root, or when both are there)."""
    done = []
    if os.geteuid() == 0:
        for fstype, find, target in (("tracefs", tracefs_dir, TRACEFS_DEFAULT), ("debugfs", debugfs_dir, DEBUGFS_DEFAULT)):
            if find(Root()) is None and mount(fstype, target) is None:
                done.append(f"mounted {fstype} at {target}")
    return done
