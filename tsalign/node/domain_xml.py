"""Edit a libvirt domain's own XML: require ``invtsc`` in ``<cpu>`` and optionally remove the
kvmclock timer in ``<clock>``. Everything else (uuid, devices, metadata, comments) is kept.
Pure functions over XML text (standard library only)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ..errors import InvalidParameter

__all__ = ["XmlPlan", "check_stored", "plan_domain_xml"]


@dataclass
class XmlPlan:
    before: str
    after: str
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _parse(xml: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(xml, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
    except ET.ParseError as e:
        raise InvalidParameter(what, xml[:80], f"well-formed domain XML ({e})") from None


def plan_domain_xml(xml: str, invtsc: bool = True, kvmclock_off: bool = False,
                    cpu_mode_if_missing: str | None = "host-passthrough") -> XmlPlan:
    """The domain XML with ``<feature policy='require' name='invtsc'/>`` in ``<cpu>`` (and
    ``<timer name='kvmclock' present='no'/>`` in ``<clock>`` when ``kvmclock_off``)."""
    root = _parse(xml, "domain XML")
    if root.tag != "domain":
        raise InvalidParameter("domain XML", root.tag, "a <domain> document (virsh dumpxml --inactive)")
    changes: list[str] = []
    if invtsc:
        cpu = root.find("cpu")
        if cpu is None:
            if cpu_mode_if_missing is None:
                raise InvalidParameter("domain XML", "no <cpu>", "a domain with a <cpu> element (or allow adding one)")
            cpu = ET.SubElement(root, "cpu", {"mode": cpu_mode_if_missing})
            changes.append(f"added <cpu mode='{cpu_mode_if_missing}'>")
        feats = [f for f in cpu.findall("feature") if f.get("name") == "invtsc"]
        if not feats:
            ET.SubElement(cpu, "feature", {"policy": "require", "name": "invtsc"})
            changes.append("added <feature policy='require' name='invtsc'/> to <cpu>")
        else:
            for f in feats[1:]:
                cpu.remove(f)
                changes.append("removed a duplicate invtsc feature")
            if feats[0].get("policy") != "require":
                changes.append(f"invtsc policy {feats[0].get('policy')!r} -> 'require'")
                feats[0].set("policy", "require")
    if kvmclock_off:
        clock = root.find("clock")
        if clock is None:
            clock = ET.SubElement(root, "clock", {"offset": "utc"})
            changes.append("added <clock offset='utc'>")
        timers = [t for t in clock.findall("timer") if t.get("name") == "kvmclock"]
        if not timers:
            ET.SubElement(clock, "timer", {"name": "kvmclock", "present": "no"})
            changes.append("added <timer name='kvmclock' present='no'/> to <clock>")
        elif timers[0].get("present") != "no":
            timers[0].set("present", "no")
            changes.append("kvmclock timer present -> 'no'")
    after = ET.tostring(root, encoding="unicode") if changes else xml
    return XmlPlan(xml, after, changes)


def check_stored(stored_xml: str, invtsc: bool = True, kvmclock_off: bool = False) -> list[str]:
    """What the XML libvirt stored lacks of the intended settings (empty: all there)."""
    root = _parse(stored_xml, "stored domain XML")
    missing = []
    if invtsc and not any(f.get("name") == "invtsc" and f.get("policy") == "require" for f in root.findall("cpu/feature")):
        missing.append("cpu feature invtsc (policy require)")
    if kvmclock_off and not any(t.get("name") == "kvmclock" and t.get("present") == "no" for t in root.findall("clock/timer")):
        missing.append("clock timer kvmclock present='no'")
    return missing
