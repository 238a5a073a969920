"""testinfra (local backend) checks of the domains libvirt stored after the role ran."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import testinfra


def _state() -> dict:
    with open(os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "libvirt.json"), encoding="utf-8") as f:
        return json.load(f)


def _xml(name: str) -> ET.Element:
    host = testinfra.get_host("local://")
    return ET.fromstring(host.check_output(f"virsh -c qemu:///system dumpxml --inactive {name}"))


def test_invtsc_required_and_kvmclock_hidden() -> None:
    for name in _state()["domains"]:
        x = _xml(name)
        assert any(f.get("name") == "invtsc" and f.get("policy") == "require" for f in x.findall("cpu/feature"))
        assert any(t.get("name") == "kvmclock" and t.get("present") == "no" for t in x.findall("clock/timer"))


def test_uuid_and_unrelated_elements_kept() -> None:
    for name, uuid in _state()["domains"].items():
        x = _xml(name)
        assert x.findtext("uuid") == uuid
        assert x.findtext("description") == "tsalign test domain: keep me"
        assert x.find("devices/serial") is not None


def test_kvm_domain_with_invtsc_starts() -> None:
    host = testinfra.get_host("local://")
    name = next(n for n in _state()["domains"] if "-kvm-" in n)
    host.check_output(f"virsh -c qemu:///system start {name}")
    try:
        assert "running" in host.check_output(f"virsh -c qemu:///system domstate {name}")
    finally:
        host.run(f"virsh -c qemu:///system destroy {name}")


def test_tcg_domain_with_invtsc_is_refused_with_the_reason() -> None:
    host = testinfra.get_host("local://")
    name = next(n for n in _state()["domains"] if "-qemu-" in n)
    r = host.run(f"virsh -c qemu:///system start {name}")
    assert r.rc != 0 and "invariant TSC" in r.stderr
