"""Pure planning of the guest kernel command line and of the libvirt domain XML."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tsalign.errors import InvalidParameter, Unavailable
from tsalign.node import grub
from tsalign.node.domain_xml import check_stored, plan_domain_xml
from tsalign.node.fs import Root

DEBIAN_DEFAULT = """# If you change this file, run 'update-grub' afterwards to update
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=ttyS0"
"""


def test_adds_parameters_once() -> None:
    p = grub.edit_default_grub(DEBIAN_DEFAULT, ["no-kvmclock", "tsc=reliable"])
    assert p.changed and p.before == ["console=ttyS0"] and p.after == ["console=ttyS0", "no-kvmclock", "tsc=reliable"]
    assert 'GRUB_CMDLINE_LINUX="console=ttyS0 no-kvmclock tsc=reliable"\n' in p.after_text
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in p.after_text  # untouched
    again = grub.edit_default_grub(p.after_text, ["no-kvmclock", "tsc=reliable"])
    assert not again.changed and again.after_text == p.after_text


def test_replaces_same_key_and_removes() -> None:
    p = grub.edit_default_grub('GRUB_CMDLINE_LINUX="tsc=unstable no-kvmclock"\n', ["tsc=reliable"], ["no-kvmclock"])
    assert p.after == ["tsc=reliable"]


def test_missing_variable_is_appended_and_last_assignment_wins() -> None:
    p = grub.edit_default_grub("GRUB_TIMEOUT=5", ["no-kvmclock"])
    assert p.after_text == 'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="no-kvmclock"\n'
    p = grub.edit_default_grub('GRUB_CMDLINE_LINUX="a"\nGRUB_CMDLINE_LINUX="b"\n', ["no-kvmclock"])
    assert p.after_text == 'GRUB_CMDLINE_LINUX="a"\nGRUB_CMDLINE_LINUX="b no-kvmclock"\n'


@pytest.mark.parametrize("bad", ["a b", 'x"', "$(reboot)", ""])
def test_bad_parameters(bad: str) -> None:
    with pytest.raises(InvalidParameter):
        grub.edit_default_grub(DEBIAN_DEFAULT, [bad])


def test_expansion_in_value_is_refused() -> None:
    with pytest.raises(InvalidParameter, match="shell expansion"):
        grub.edit_default_grub('GRUB_CMDLINE_LINUX="$EXTRA quiet"\n', ["no-kvmclock"])


def test_apply_validates_and_keeps_backup(tmp_path) -> None:
    f = tmp_path / "grub"
    f.write_text(DEBIAN_DEFAULT)
    plan = grub.edit_default_grub(f.read_text(), ["no-kvmclock"])
    backup = grub.apply_default_grub(plan, str(f))
    assert backup and Path(backup).read_text() == DEBIAN_DEFAULT
    assert "no-kvmclock" in f.read_text()
    assert grub.apply_default_grub(grub.edit_default_grub(f.read_text(), ["no-kvmclock"]), str(f)) is None


def test_apply_refuses_a_file_the_shell_rejects(tmp_path) -> None:
    f = tmp_path / "grub"
    f.write_text(DEBIAN_DEFAULT + 'if [ 1 = 1 ]; then\n')  # a syntax error elsewhere in the file
    plan = grub.edit_default_grub(f.read_text(), ["no-kvmclock"])
    with pytest.raises(InvalidParameter, match="valid shell syntax"):
        grub.apply_default_grub(plan, str(f))
    assert f.read_text() == DEBIAN_DEFAULT + 'if [ 1 = 1 ]; then\n'  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["grub"]  # no temp file left


@pytest.mark.parametrize("os_release, method", [
    ('ID=debian\nVERSION_ID="12"\n', "debian"),
    ('ID=ubuntu\nID_LIKE=debian\n', "debian"),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "grubby"),
    ('ID=tencentos\nID_LIKE="rhel fedora centos"\n', "grubby"),
    ('ID="opensuse-leap"\nID_LIKE="suse opensuse"\n', "suse"),
])
def test_detect_method(tmp_path, os_release: str, method: str) -> None:
    os.makedirs(tmp_path / "etc")
    (tmp_path / "etc/os-release").write_text(os_release)
    assert grub.detect_method(Root(str(tmp_path))).name == method


def test_unsupported_distribution(tmp_path) -> None:
    os.makedirs(tmp_path / "etc")
    (tmp_path / "etc/os-release").write_text("ID=alpine\n")
    with pytest.raises(Unavailable, match="unsupported distribution 'alpine'"):
        grub.detect_method(Root(str(tmp_path)))


def test_grubby_info_parsing() -> None:
    # grubby is not packaged in Debian, so this is its documented --info output format, not a live run
    info = 'index=0\nkernel="/boot/vmlinuz-5.14"\nargs="ro crashkernel=auto no-kvmclock"\nroot="/dev/vda1"\n'
    assert grub.grubby_args(info) == {"/boot/vmlinuz-5.14": ["ro", "crashkernel=auto", "no-kvmclock"]}


DOMAIN = """<domain type='kvm'>
  <name>g1</name>
  <uuid>2b8f0d2e-1a6c-4c1e-9d3a-6f0c2a4e7b11</uuid>
  <!-- keep me -->
  <memory unit='KiB'>1048576</memory>
  <cpu mode='host-passthrough'>
    <feature policy='disable' name='arch-capabilities'/>
  </cpu>
  <clock offset='utc'/>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>"""


def test_domain_xml_adds_invtsc_and_keeps_everything() -> None:
    p = plan_domain_xml(DOMAIN, invtsc=True, kvmclock_off=True)
    assert p.changed and len(p.changes) == 2
    assert "<uuid>2b8f0d2e-1a6c-4c1e-9d3a-6f0c2a4e7b11</uuid>" in p.after and "keep me" in p.after
    assert "<feature policy=\"disable\" name=\"arch-capabilities\" />" in p.after
    assert check_stored(p.after, True, True) == []
    assert not plan_domain_xml(p.after, True, True).changed  # idempotent


def test_domain_xml_fixes_policy_and_reports_missing() -> None:
    xml = DOMAIN.replace("</cpu>", "<feature policy='optional' name='invtsc'/></cpu>")
    p = plan_domain_xml(xml)
    assert p.changes == ["invtsc policy 'optional' -> 'require'"]
    assert check_stored(DOMAIN) == ["cpu feature invtsc (policy require)"]
    with pytest.raises(InvalidParameter, match="well-formed"):
        plan_domain_xml("<domain>")
