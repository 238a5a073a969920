#!/usr/bin/python
"""Ansible module: require invtsc (and optionally drop kvmclock) in libvirt domains, editing each
domain's own XML (tsalign.node.domain_xml) through libvirt-python."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tsalign_libvirt_cpu
short_description: Give libvirt domains an invariant TSC (invtsc) and optionally no kvmclock
description:
  - For each selected domain, reads its inactive XML, adds C(<feature policy='require' name='invtsc'/>)
    to C(<cpu>) (and C(<timer name='kvmclock' present='no'/>) to C(<clock>) when asked), keeps the uuid
    and every other element, redefines it, and checks that the XML libvirt stored has the settings.
  - Running domains only see the change after a restart. C(restart=none) reports them as pending;
    C(restart=graceful) shuts each down (ACPI), waits, and starts it again, one after the other.
requirements: [libvirt-python]
options:
  domains:
    description: Domain names; empty means all defined domains.
    type: list
    elements: str
    default: []
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  invtsc:
    description: Require the invtsc CPU feature.
    type: bool
    default: true
  kvmclock_off:
    description: Also hide kvmclock from the guest (C(<timer name='kvmclock' present='no'/>)).
    type: bool
    default: false
  restart:
    description: What to do with running domains whose definition changed.
    type: str
    choices: [none, graceful]
    default: none
  shutdown_timeout:
    description: Seconds to wait for a graceful shutdown.
    type: int
    default: 120
  tsalign_lib:
    description: Directory holding the tsalign package on the node.
    type: path
    default: /opt/tsalign/lib
author: tsalign developers
"""

EXAMPLES = r"""
- name: invtsc for two guests, restart them one by one
  tsalign_libvirt_cpu:
    domains: [web1, db1]
    restart: graceful
"""

RETURN = r"""
domains:
  description: Per domain - changed, changes, restart_pending, restarted.
  returned: always
  type: dict
restart_pending:
  description: Running domains that need a restart to see the change.
  returned: always
  type: list
  elements: str
diff:
  description: Domain XML before/after (all changed domains concatenated).
  returned: when changed
  type: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tsalign_loader import TSALIGN_LIB_SPEC, use_tsalign

VIR_DOMAIN_XML_INACTIVE = 2


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "domains": {"type": "list", "elements": "str", "default": []},
            "uri": {"type": "str", "default": "qemu:///system"},
            "invtsc": {"type": "bool", "default": True},
            "kvmclock_off": {"type": "bool", "default": False},
            "restart": {"type": "str", "choices": ["none", "graceful"], "default": "none"},
            "shutdown_timeout": {"type": "int", "default": 120},
            **TSALIGN_LIB_SPEC,
        },
        supports_check_mode=True,
    )
    p = module.params
    use_tsalign(module)
    from tsalign.errors import TsalignError
    from tsalign.node.domain_xml import check_stored, plan_domain_xml
    try:
        import libvirt
    except ImportError:
        module.fail_json(msg="libvirt-python is not installed on this host (pip install libvirt-python, "
                             "or apt-get install python3-libvirt)")
    try:
        conn = libvirt.open(p["uri"])
    except libvirt.libvirtError as e:
        module.fail_json(msg=f"libvirt not reachable at {p['uri']}: {e}; is libvirtd running?")
    try:
        names = p["domains"] or sorted(d.name() for d in conn.listAllDomains())
        known = {d.name() for d in conn.listAllDomains()}
        unknown = [n for n in names if n not in known]
        if unknown:
            module.fail_json(msg=f"unknown libvirt domain(s) {unknown} at {p['uri']} (defined: {sorted(known)})")
        report, diffs, pending = {}, {"before": "", "after": ""}, []
        for name in names:
            dom = conn.lookupByName(name)
            xml = dom.XMLDesc(VIR_DOMAIN_XML_INACTIVE)
            try:
                plan = plan_domain_xml(xml, p["invtsc"], p["kvmclock_off"])
            except TsalignError as e:
                module.fail_json(msg=f"domain {name}: {e}")
            entry = {"changed": plan.changed, "changes": plan.changes, "restart_pending": False, "restarted": False}
            if plan.changed:
                diffs["before"] += f"<!-- {name} -->\n{plan.before}\n"
                diffs["after"] += f"<!-- {name} -->\n{plan.after}\n"
                if not module.check_mode:
                    conn.defineXML(plan.after)
                    missing = check_stored(conn.lookupByName(name).XMLDesc(VIR_DOMAIN_XML_INACTIVE),
                                           p["invtsc"], p["kvmclock_off"])
                    if missing:
                        module.fail_json(msg=f"domain {name}: libvirt stored a definition without {missing}")
                if dom.isActive():
                    entry["restart_pending"] = True
            report[name] = entry
        for name, entry in report.items():
            if not entry["restart_pending"]:
                continue
            if p["restart"] == "graceful" and not module.check_mode:
                dom = conn.lookupByName(name)
                dom.shutdown()
                deadline = time.monotonic() + p["shutdown_timeout"]
                while dom.isActive() and time.monotonic() < deadline:
                    time.sleep(0.5)
                if dom.isActive():
                    module.fail_json(msg=f"domain {name} did not shut down within {p['shutdown_timeout']} s "
                                         "(does the guest handle ACPI power button?)", domains=report)
                dom.create()
                entry["restarted"], entry["restart_pending"] = True, False
            else:
                pending.append(name)
    finally:
        conn.close()
    changed = any(e["changed"] for e in report.values())
    result = {"changed": changed, "domains": report, "restart_pending": pending}
    if changed:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
