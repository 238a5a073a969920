#!/usr/bin/python
"""Ansible module: put kernel parameters on the guest's boot command line (tsalign.node.grub)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tsalign_grub_cmdline
short_description: Add (or remove) kernel command line parameters the distribution's way
description:
  - Debian/Ubuntu and SUSE - edits C(GRUB_CMDLINE_LINUX) in /etc/default/grub (validated through the
    shell before it replaces the old file, backup kept), then runs update-grub or grub2-mkconfig.
  - RHEL/Fedora/Rocky/TencentOS - runs C(grubby --update-kernel=ALL --args/--remove-args).
  - Never reboots; returns C(reboot_required) when /proc/cmdline lacks what the boot config now has.
options:
  add:
    description: Parameters that must be present (C(key=value) replaces the same key).
    type: list
    elements: str
    default: [no-kvmclock]
  remove:
    description: Parameters (by key) that must be absent.
    type: list
    elements: str
    default: []
  update_bootloader:
    description: Regenerate the boot configuration after an edit (false only for chroot test targets).
    type: bool
    default: true
  method:
    description: Force the method instead of detecting it from /etc/os-release.
    type: str
    choices: [auto, debian, grubby, suse]
    default: auto
  tsalign_lib:
    description: Directory holding the tsalign package on the node.
    type: path
    default: /opt/tsalign/lib
author: tsalign developers
"""

EXAMPLES = r"""
- name: Boot the guest without kvmclock
  tsalign_grub_cmdline:
    add: [no-kvmclock, tsc=reliable]
  register: cmdline
- name: Reboot when allowed
  ansible.builtin.reboot:
  when: cmdline.reboot_required and tsalign_guest_reboot_ok
"""

RETURN = r"""
method:
  description: debian, grubby or suse, and the distribution seen.
  returned: always
  type: str
before:
  description: The configured kernel parameters before.
  returned: always
  type: list
  elements: str
after:
  description: The configured kernel parameters after (planned, in check mode).
  returned: always
  type: list
  elements: str
reboot_required:
  description: The running kernel's /proc/cmdline lacks the parameters asked for.
  returned: always
  type: bool
backup:
  description: Backup of /etc/default/grub when it was replaced.
  returned: when changed on debian/suse
  type: str
diff:
  description: before/after of the kernel command line.
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tsalign_loader import TSALIGN_LIB_SPEC, use_tsalign


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "add": {"type": "list", "elements": "str", "default": ["no-kvmclock"]},
            "remove": {"type": "list", "elements": "str", "default": []},
            "update_bootloader": {"type": "bool", "default": True},
            "method": {"type": "str", "choices": ["auto", "debian", "grubby", "suse"], "default": "auto"},
            **TSALIGN_LIB_SPEC,
        },
        supports_check_mode=True,
    )
    use_tsalign(module)
    from tsalign.errors import TsalignError
    from tsalign.node import grub
    from tsalign.node.fs import Root
    add, remove = module.params["add"], module.params["remove"]
    running = (Root().read("/proc/cmdline") or "").split()
    result = {"changed": False, "backup": None}
    try:
        method = grub.detect_method(Root())
        name = method.name if module.params["method"] == "auto" else module.params["method"]
        if name in ("debian", "suse"):
            path = grub.DEFAULT_GRUB
            if not os.path.exists(path):
                module.fail_json(msg=f"{path} does not exist on this {method.distro} host: install grub "
                                     "(apt-get install grub2-common) or create it; nothing was changed")
            with open(path, encoding="utf-8") as f:
                plan = grub.edit_default_grub(f.read(), add, remove)
            before, after = plan.before, plan.after
            if plan.changed and not module.check_mode:
                result["backup"] = grub.apply_default_grub(plan, path)
                if module.params["update_bootloader"]:
                    cmd = ["update-grub"] if name == "debian" else ["grub2-mkconfig", "-o", "/boot/grub2/grub.cfg"]
                    cmd[0] = module.get_bin_path(cmd[0], required=True)
                    module.run_command(cmd, check_rc=True)
            result["changed"] = plan.changed
        else:
            grubby = module.get_bin_path("grubby", required=True)
            _rc, out, _err = module.run_command([grubby, "--info=ALL"], check_rc=True)
            kernels = grub.grubby_args(out)
            before = sorted({w for args in kernels.values() for w in args})
            want = {k: grub.plan_cmdline(v, add, remove) for k, v in kernels.items()}
            after = sorted({w for args in want.values() for w in args})
            result["changed"] = any(want[k] != kernels[k] for k in kernels)
            if result["changed"] and not module.check_mode:
                if add:
                    module.run_command([grubby, "--update-kernel=ALL", "--args=" + " ".join(add)], check_rc=True)
                if remove:
                    module.run_command([grubby, "--update-kernel=ALL", "--remove-args=" + " ".join(remove)],
                                       check_rc=True)
    except TsalignError as e:
        module.fail_json(msg=str(e))
    keys_removed = {r.split("=", 1)[0] for r in remove}
    reboot = any(p not in running for p in add) or any(w.split("=", 1)[0] in keys_removed for w in running)
    module.exit_json(
        method=f"{name} ({method.distro})", before=before, after=after, reboot_required=reboot,
        running=running, diff={"before": "kernel command line: " + " ".join(before) + "\n",
                               "after": "kernel command line: " + " ".join(after) + "\n"},
        **result)


if __name__ == "__main__":
    main()
