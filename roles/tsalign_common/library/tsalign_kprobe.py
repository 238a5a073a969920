#!/usr/bin/python
"""Ansible module: the kprobe on a kvm function fetching vcpu->arch.tsc_offset (tsalign.kernel.kprobe)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tsalign_kprobe
short_description: Register tsalign's kprobe reading each vCPU's arch.tsc_offset
description:
  - Computes offsetof(struct kvm_vcpu, arch.tsc_offset) from the host's own BTF, chooses a traceable
    function whose first argument is C(struct kvm_vcpu *), and registers
    C(p:tsalign/<fn> <fn> tsc_offset=+0x<off>(%di):u64 vcpu_id=+0x<off>(%di):s32) in tracefs kprobe_events, idempotently.
  - Where the kernel has no kprobe_events it reports C(status=unavailable) and does not fail.
options:
  state:
    description: present registers, absent unregisters.
    type: str
    choices: [present, absent]
    default: present
  function:
    description: Probe this function instead of the chosen one.
    type: str
  definition:
    description:
      - The kprobe line the controller's kernel table (C(tsalign kernels)) rendered for this host's kernel
        build; registered as given (validated) where the node has no route of its own (no BTF, no debug
        info). Where the node computes offsets itself, they must equal the table's.
    type: str
  tsalign_lib:
    description: Directory holding the tsalign package on the node.
    type: path
    default: /opt/tsalign/lib
author: tsalign developers
"""

EXAMPLES = r"""
- name: Register the tsc_offset kprobe where the kernel allows it
  tsalign_kprobe:
    state: present
"""

RETURN = r"""
offsets_route:
  description: Where the member offsets came from (btf, split-btf, or dwarf from the kernel's debug package).
  returned: always
  type: str
offsets_source:
  description: The BTF or debug file read.
  returned: always
  type: str
kprobe:
  description: The kprobe_events line.
  returned: always
  type: str
status:
  description: registered, unregistered, unavailable (with reason), or planned (check mode).
  returned: always
  type: str
reason:
  description: Why the kprobe route is unavailable.
  returned: when status is unavailable
  type: str
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tsalign_loader import TSALIGN_LIB_SPEC, use_tsalign


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "function": {"type": "str"},
            "definition": {"type": "str"},
            **TSALIGN_LIB_SPEC,
        },
        supports_check_mode=True,
    )
    use_tsalign(module)
    from tsalign.errors import TsalignError, Unavailable
    from tsalign.kernel import kprobe
    from tsalign.node.checks import Context, kprobe_plan
    from tsalign.node.fs import Root
    ctx = Context(Root(), "host")
    given = module.params["definition"]
    try:
        plan = kprobe_plan(ctx, module.params["function"])
    except TsalignError as e:
        if not given:
            module.fail_json(msg=f"cannot plan the kprobe: {e}")
        plan = None
    if given:
        try:
            fn, member, vcpu_id = kprobe.parse_definition(given)
        except TsalignError as e:
            module.fail_json(msg=str(e))
        if plan is not None and (plan["member_offset"], plan["vcpu_id_offset"]) != (member, vcpu_id):
            module.fail_json(msg=f"the kernel table's offsets ({member}, {vcpu_id}) differ from this node's own "
                                 f"({plan['member_offset']}, {plan['vcpu_id_offset']} by {plan['offsets_route']}): "
                                 "re-run precheck.yml and tsalign kernels")
        plan = {"kprobe": kprobe.render(fn, member, vcpu_id), "function": fn, "member_offset": member,
                "offsets_route": "kernel table" if plan is None else plan["offsets_route"],
                "offsets_source": "the controller's kernel table" if plan is None else plan["offsets_source"],
                "event": kprobe.event_name(fn)}
    out = {"kprobe": plan["kprobe"], "function": plan["function"], "member_offset": plan["member_offset"],
           "offsets_route": plan["offsets_route"], "offsets_source": plan["offsets_source"]}
    try:
        events = kprobe.events_file(ctx.tracefs)
    except Unavailable as e:
        module.exit_json(changed=False, status="unavailable", reason=str(e), **out)
    if module.check_mode:
        with open(events, encoding="utf-8") as f:
            present = any(line.split()[0].endswith(plan["event"]) for line in f if line.strip())
        changed = present != (module.params["state"] == "present")
        module.exit_json(changed=changed, status="planned", **out)
    try:
        if module.params["state"] == "present":
            changed = kprobe.register(ctx.tracefs, plan["kprobe"])
            status = "registered"
        else:
            changed = kprobe.unregister(ctx.tracefs, plan["function"])
            status = "unregistered"
    except (TsalignError, OSError) as e:
        module.fail_json(msg=f"kprobe_events write failed: {e}")
    module.exit_json(changed=changed, status=status, **out)


if __name__ == "__main__":
    main()
