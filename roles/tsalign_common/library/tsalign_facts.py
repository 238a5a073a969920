#!/usr/bin/python
"""Ansible module: tsalign's node prechecks as facts (a thin wrapper over tsalign.node.checks)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tsalign_facts
short_description: Run tsalign's node prechecks and return them as facts
description:
  - Runs the same checks as C(tsalign precheck) (clocksource, TSC flags, no-kvmclock, sched_clock,
    perf TSC conversion, tracefs, debugfs, kprobe_events, KVM tracepoints, BTF, the offset of
    kvm_vcpu.arch.tsc_offset, the kprobe function, VMs and their per-vCPU TSC offsets).
  - The tsalign node code must be on the node (role C(tsalign_common) installs it).
options:
  role:
    description: host, guest, or auto (host when /dev/kvm exists).
    type: str
    choices: [host, guest, auto]
    default: auto
  mount:
    description: Mount tracefs and debugfs when absent (skipped in check mode, reported as planned).
    type: bool
    default: false
  tsalign_lib:
    description: Directory holding the tsalign package on the node.
    type: path
    default: /opt/tsalign/lib
author: tsalign developers
"""

EXAMPLES = r"""
- name: Precheck this node
  tsalign_facts:
    role: host
    mount: true
- name: Show the verdict
  ansible.builtin.debug:
    var: ansible_facts.tsalign.verdict
"""

RETURN = r"""
ansible_facts:
  description: C(tsalign) holds the report (verdict, role, kernel, tsc_khz, checks).
  returned: always
  type: dict
verdict:
  description: pass, warn or fail (the words of tsalign.verdicts).
  returned: always
  type: str
mounted:
  description: File systems mounted by this run (or planned, in check mode).
  returned: always
  type: list
  elements: str
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tsalign_loader import TSALIGN_LIB_SPEC, use_tsalign


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "role": {"type": "str", "choices": ["host", "guest", "auto"], "default": "auto"},
            "mount": {"type": "bool", "default": False},
            **TSALIGN_LIB_SPEC,
        },
        supports_check_mode=True,
    )
    use_tsalign(module)
    from tsalign.node import mounts
    from tsalign.node.checks import run_checks
    from tsalign.node.fs import Root
    root = Root()
    absent = [fs for fs, find in (("tracefs", mounts.tracefs_dir), ("debugfs", mounts.debugfs_dir)) if find(root) is None]
    do_mount = module.params["mount"] and not module.check_mode
    report = run_checks(root, module.params["role"], mount=do_mount)
    planned = absent if module.params["mount"] else []
    doc = report.to_dict()
    module.exit_json(changed=bool(planned), verdict=doc["verdict"], mounted=planned, ansible_facts={"tsalign": doc})


if __name__ == "__main__":
    main()
