"""The libvirt role against a real libvirtd: invtsc added to real domain definitions, uuid and
unrelated elements kept, idempotent, check/diff, restart policy, bad input; a KVM domain with
invtsc really starts here."""

from __future__ import annotations

import glob
import json
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
    return libvirtd.domain_xml(name, kind, str(uuid.uuid4()))


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


def test_libvirt_molecule_scenario() -> None:
    """check/diff changes nothing; converge; idempotence; testinfra reads what libvirt stored."""
    need(os.geteuid() == 0 and shutil.which("libvirtd"), "needs root and libvirt-daemon-system (make test)")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"}

    def mol(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(BIN / "molecule"), args[0], "-s", "libvirt", *args[1:]],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        if check:
            assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        return r

    mol("destroy")
    try:
        mol("create")
        state = max(glob.glob(os.path.expanduser("~/.ansible/tmp/molecule.*.libvirt/libvirt.json")), key=os.path.getmtime)
        names = json.loads(Path(state).read_text())["domains"]
        import libvirt

        conn = libvirt.open(URI)
        before = {n: conn.lookupByName(n).XMLDesc(2) for n in names}
        r = mol("converge", "--", "--check", "--diff")
        assert 'name="invtsc"' in r.stdout and "kvmclock" in r.stdout  # the planned XML is shown
        assert {n: conn.lookupByName(n).XMLDesc(2) for n in names} == before  # and nothing changed
        conn.close()
        mol("converge")
        mol("idempotence")
        r = mol("verify")
        assert "4 passed" in r.stdout + r.stderr and not re.search(r"\d+ (skipped|failed|error)", r.stdout + r.stderr)
    finally:
        mol("destroy", check=False)


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
