"""The libvirt role against a real libvirtd: invtsc added to real domain definitions, uuid and
unrelated elements kept, idempotent, check/diff, restart policy, bad input; a KVM domain with
invtsc really starts here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.infra import libvirtd

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
URI = "qemu:///system"


@pytest.fixture(scope="module")
def conn() -> Iterator[object]:
    need(os.geteuid() == 0, "needs root (libvirtd)")
    need(shutil.which("libvirtd"), "libvirt-daemon-system not installed (make test installs it)")
    try:
        import libvirt
    except ImportError:
        need(False, "libvirt-python not installed in the venv (make test installs it)")
    started = libvirtd.ensure_running()
    kvm_mode = libvirtd.kvm_device_for_qemu()
    c = libvirt.open(URI)
    yield c
    c.close()
    libvirtd.restore_kvm_device(kvm_mode)
    libvirtd.stop(started)


def domain_xml(name: str, kind: str) -> str:
    cpu = {
        # host-passthrough KVM: arch-capabilities must go for invtsc to start here (PVM)
        "kvm": "<cpu mode='host-passthrough'><feature policy='disable' name='arch-capabilities'/></cpu>",
        "qemu": "<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>",
        "nocpu": "",
    }[kind]
    dtype = "kvm" if kind == "kvm" else "qemu"
    return f"""<domain type='{dtype}'>
  <name>{name}</name>
  <uuid>{uuid.uuid4()}</uuid>
  <description>tsalign test domain: keep me</description>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><serial type='pty'/></devices>
</domain>"""


@pytest.fixture
def domains(conn: object) -> Iterator[dict]:
    tag = uuid.uuid4().hex[:6]
    made = {}
    for kind in ("kvm", "qemu", "nocpu"):
        name = f"tsalign-test-{kind}-{tag}"
        conn.defineXML(domain_xml(name, kind))  # type: ignore[attr-defined]
        made[kind] = name
    yield made
    import libvirt

    for name in made.values():
        try:
            d = conn.lookupByName(name)  # type: ignore[attr-defined]
            if d.isActive():
                d.destroy()
            d.undefine()
        except libvirt.libvirtError:
            pass


def play(tmp_path: Path, names: list, *extra: str, restart: str = "none", timeout: int = 10) -> subprocess.CompletedProcess:
    pb = tmp_path / "libvirt.yml"
    pb.write_text(f"""---
- name: tsalign_libvirt on this machine's libvirtd
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{sys.executable}"
    tsalign_common_lib: "{tmp_path}/lib"
  roles:
    - role: tsalign_libvirt
      tsalign_libvirt_domains: {names!r}
      tsalign_libvirt_restart: {restart}
      tsalign_libvirt_shutdown_timeout: {timeout}
""")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(pb), *extra], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def changed(out: str) -> int:
    return int(re.findall(r"changed=(\d+)", out)[-1])


def stored(conn: object, name: str) -> ET.Element:
    return ET.fromstring(conn.lookupByName(name).XMLDesc(2))  # type: ignore[attr-defined]


def test_invtsc_added_kept_idempotent_and_kvm_domain_starts(conn: object, domains: dict, tmp_path: Path) -> None:
    before = {k: stored(conn, n) for k, n in domains.items()}
    names = list(domains.values())
    r = play(tmp_path, names, "--check", "--diff")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "+" in r.stdout and "name=\"invtsc\"" in r.stdout  # the diff shows the planned XML
    for k, n in domains.items():  # check mode changed nothing
        assert ET.tostring(stored(conn, n)) == ET.tostring(before[k])
    r = play(tmp_path, names)
    assert r.returncode == 0, r.stdout[-3000:]
    for k, n in domains.items():
        x = stored(conn, n)
        assert x.findtext("uuid") == before[k].findtext("uuid")
        assert x.findtext("description") == "tsalign test domain: keep me"
        assert x.find("devices/serial") is not None and x.findtext("memory") == before[k].findtext("memory")
        assert any(f.get("name") == "invtsc" and f.get("policy") == "require" for f in x.findall("cpu/feature"))
    assert any(f.get("name") == "arch-capabilities" for f in stored(conn, domains["kvm"]).findall("cpu/feature"))
    assert stored(conn, domains["qemu"]).findtext("cpu/model") == "qemu64"
    r = play(tmp_path, names)
    assert r.returncode == 0 and changed(r.stdout) == 0, r.stdout[-3000:]
    # a KVM domain with invtsc really starts on this machine
    dom = conn.lookupByName(domains["kvm"])  # type: ignore[attr-defined]
    dom.create()
    try:
        assert dom.isActive()
    finally:
        dom.destroy()
    # a TCG domain cannot have invtsc: libvirt refuses to start it, saying why
    import libvirt

    with pytest.raises(libvirt.libvirtError, match="invariant TSC|invtsc"):
        conn.lookupByName(domains["qemu"]).create()  # type: ignore[attr-defined]


def test_restart_policy(conn: object, domains: dict, tmp_path: Path) -> None:
    # none (the default): a running domain is reported as pending and left running
    tcg = conn.lookupByName(domains["qemu"])  # type: ignore[attr-defined]
    tcg.create()
    kvm = conn.lookupByName(domains["kvm"])  # type: ignore[attr-defined]
    kvm.create()
    try:
        r = play(tmp_path, [domains["qemu"]])
        assert r.returncode == 0, r.stdout[-3000:]
        assert f"restart {domains['qemu']} to apply invtsc" in r.stdout and tcg.isActive()
        # graceful: shutdown + start; this domain has no OS to answer ACPI, so it times out, saying so
        r = play(tmp_path, [domains["kvm"]], restart="graceful", timeout=3)
        assert r.returncode != 0 and "did not shut down within 3 s" in r.stdout and "ACPI" in r.stdout
        assert kvm.isActive()
    finally:
        for d in (tcg, kvm):
            if d.isActive():
                d.destroy()


def test_bad_input(conn: object, domains: dict, tmp_path: Path) -> None:
    r = play(tmp_path, ["no-such-domain-xyz"])
    assert r.returncode != 0 and "unknown libvirt domain(s) ['no-such-domain-xyz']" in r.stdout
    r = play(tmp_path, [domains["qemu"]], "-e", "tsalign_libvirt_uri=qemu+unix:///system?socket=/nonexistent")
    assert r.returncode != 0 and "libvirt not reachable" in r.stdout and "libvirtd running" in r.stdout
