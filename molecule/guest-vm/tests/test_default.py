"""testinfra checks after the guest role rebooted the VM, over paramiko."""

from __future__ import annotations

import os

import testinfra
import yaml


def _host():
    cfg = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "instance_config.yml")
    inst = yaml.safe_load(open(cfg))[0]  # noqa: SIM115
    return testinfra.get_host(f"paramiko://{inst['user']}@{inst['address']}:{inst['port']}",
                              ssh_identity_file=inst["identity_file"])


def test_running_kernel_has_no_kvmclock() -> None:
    assert "no-kvmclock" in _host().file("/proc/cmdline").content_string.split()


def test_grub_cfg_regenerated_with_the_parameter() -> None:
    cfg = _host().file("/boot/grub/grub.cfg").content_string
    assert any("no-kvmclock" in line for line in cfg.splitlines() if line.strip().startswith("linux"))


def test_default_grub_and_backup() -> None:
    h = _host()
    assert 'GRUB_CMDLINE_LINUX="console=ttyS0 no-kvmclock"' in h.file("/etc/default/grub").content_string
    assert 'GRUB_CMDLINE_LINUX="console=ttyS0"' in h.file("/etc/default/grub.tsalign.bak").content_string
