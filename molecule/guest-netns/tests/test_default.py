"""testinfra checks of the guest role's result, over paramiko (the target's SSH key from molecule)."""

from __future__ import annotations

import os

import testinfra
import yaml


def _host():
    cfg = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "instance_config.yml")
    inst = yaml.safe_load(open(cfg))[0]  # noqa: SIM115
    return testinfra.get_host(f"paramiko://{inst['user']}@{inst['address']}:{inst['port']}",
                              ssh_identity_file=inst["identity_file"])


def test_grub_default_has_the_parameters() -> None:
    f = _host().file("/etc/default/grub")
    assert f.exists and f.mode == 0o644
    assert 'GRUB_CMDLINE_LINUX="no-kvmclock tsc=reliable"' in f.content_string
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in f.content_string  # untouched


def test_backup_of_the_original_kept() -> None:
    b = _host().file("/etc/default/grub.tsalign.bak")
    assert b.exists and 'GRUB_CMDLINE_LINUX=""' in b.content_string


def test_grub_file_still_sources() -> None:
    h = _host()
    out = h.check_output(". /etc/default/grub && echo \"$GRUB_CMDLINE_LINUX\"")
    assert out == "no-kvmclock tsc=reliable"


def test_node_code_installed() -> None:
    h = _host()
    assert h.file("/opt/tsalign/lib/tsalign/node/checks.py").exists
