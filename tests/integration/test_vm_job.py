"""tests/infra/vm.run_job, which the nested lab waits on, against a real GRUB-booted VM: a job that ends well gives
its output; one that exits non-zero and one that stops making progress are failures that say what the VM showed
(its log, processes, watched files), and the stalled job's processes are ended."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import need
from tests.infra import vm
from tests.infra.artefacts import cached
from tests.infra.lab import _mark


def test_run_job_passes_fails_and_stalls() -> None:
    need(os.geteuid() == 0 and shutil.which("qemu-system-x86_64"), "needs root and qemu-system-x86 (make test)")
    st = vm.up(cached("TSALIGN_VM_IMAGE", "vm-bookworm-*", "GRUB VM image (scripts/build-vm-image.sh)"))
    try:
        out = vm.run_job(st, "mkdir -p /root/w; " + _mark("a") + "sleep 2 & echo x > /root/w/f.log; wait; "
                         + _mark("b") + "exit 0", "ok", watch="/root/w/*.log", poll=1)
        assert "== a " in out and "== b " in out and out.index("== a") < out.index("== b")
        with pytest.raises(RuntimeError, match=r"exited 3:\n== a "):
            vm.run_job(st, _mark("a") + "exit 3", "fails", poll=1)
        with pytest.raises(RuntimeError) as e:
            vm.run_job(st, "mkdir -p /root/s; echo hello > /root/s/x.log; " + _mark("a") + "sleep 1000", "stalls",
                       watch="/root/s/*.log", stall=8, poll=1)
        text = str(e.value)
        assert "no progress for" in text and "== a " in text and "sleep 1000" in text and "hello" in text, text
        left = vm.ssh(st, "pgrep -x sleep; echo rc=$?", timeout=60).stdout
        assert "rc=1" in left, left  # the stalled job's session was ended
    finally:
        vm.down(st)
