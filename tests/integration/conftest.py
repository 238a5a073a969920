"""Integration tests use the real kernel: as root, make sure tracefs and debugfs are mounted
(the same thing `tsalign precheck --mount` does; mounting them changes no tracing state)."""

from __future__ import annotations

import os

import pytest

from tsalign.node import mounts
from tsalign.node.fs import Root


@pytest.fixture(scope="session", autouse=True)
def kernel_filesystems() -> None:
    if os.geteuid() != 0:
        return
    root = Root()
    if mounts.tracefs_dir(root) is None:
        mounts.mount("tracefs", mounts.TRACEFS_DEFAULT)
    if mounts.debugfs_dir(root) is None:
        mounts.mount("debugfs", mounts.DEBUGFS_DEFAULT)
