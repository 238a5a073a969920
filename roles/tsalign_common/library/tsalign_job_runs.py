#!/usr/bin/python
"""Ansible module: lay out a capture job's run directories on the controller in one call (capture.yml)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tsalign_job_runs
short_description: Unpack each guest's bundle, link its host's and name its run, for every guest of a capture job
description:
  - For each run directory given, unpacks C(guest.tar) into C(guest/), links C(host) to its host's bundle
    directory (a relative link, so the job's directory can move as a whole) and writes C(run.json).
  - One call for the whole job (a loop of unarchive, file and copy tasks cost ~0.6 s a guest and task).
  - A bundle member that is not a plain file or directory inside C(guest/) is refused, naming it.
options:
  runs:
    description: One entry per guest, each with C(dir) (the run directory, holding C(guest.tar)), C(host) (the host
      bundle's directory) and C(run) (the content of C(run.json)).
    type: list
    elements: dict
    required: true
author: tsalign developers
"""

EXAMPLES = r"""
- name: Lay out the job's run directories
  tsalign_job_runs:
    runs:
      - {dir: /srv/capture/web-01-RUN, host: /srv/capture/hosts-RUN/kvm-01, run: {node: kvm-01, vm: web-01, run: RUN}}
"""

RETURN = r"""
unpacked:
  description: The run directories whose bundle was unpacked (again: it differed from what was there).
  returned: always
  type: list
  elements: str
"""

import json
import os
import shutil
import tarfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule


def _members(tar: tarfile.TarFile, tar_path: str) -> list[tarfile.TarInfo]:
    """The bundle's members, each a plain file or directory with a relative path inside the bundle."""
    out = []
    for m in tar.getmembers():
        parts = m.name.split("/")
        if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in parts:
            raise ValueError(f"{tar_path}: member {m.name!r} is not a plain file or directory inside the bundle")
        out.append(m)
    return out


def _same(dest: str, members: list[tarfile.TarInfo]) -> bool:
    """Whether ``dest`` already holds every file of the bundle with its size (a re-run of the job)."""
    for m in members:
        p = os.path.join(dest, m.name)
        if m.isfile() and not (os.path.isfile(p) and os.path.getsize(p) == m.size):
            return False
    return os.path.isdir(dest)


def lay_out(run_dir: str, host: str, run: dict[str, Any], check: bool) -> tuple[bool, bool]:
    """(changed, unpacked) for one run directory."""
    changed = unpacked = False
    tar_path, dest = os.path.join(run_dir, "guest.tar"), os.path.join(run_dir, "guest")
    with tarfile.open(tar_path) as tar:
        members = _members(tar, tar_path)
        if not _same(dest, members):
            changed = unpacked = True
            if not check:
                tmp = dest + ".unpacking"
                shutil.rmtree(tmp, ignore_errors=True)
                os.makedirs(tmp)
                for m in members:
                    tar.extract(m, tmp, set_attrs=False)
                shutil.rmtree(dest, ignore_errors=True)
                os.rename(tmp, dest)
    link, target = os.path.join(run_dir, "host"), os.path.relpath(host, run_dir)
    if not (os.path.islink(link) and os.readlink(link) == target):
        changed = True
        if not check:
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(target, link)
    text = json.dumps(run, indent=4, sort_keys=True) + "\n"
    path = os.path.join(run_dir, "run.json")
    try:
        with open(path, encoding="utf-8") as f:
            same = f.read() == text
    except OSError:
        same = False
    if not same:
        changed = True
        if not check:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
    return changed, unpacked


def main() -> None:
    module = AnsibleModule(argument_spec={"runs": {"type": "list", "elements": "dict", "required": True}},
                           supports_check_mode=True)
    changed, unpacked = False, []
    for r in module.params["runs"]:
        if not (isinstance(r.get("dir"), str) and isinstance(r.get("host"), str) and isinstance(r.get("run"), dict)):
            module.fail_json(msg=f"each run needs dir and host (paths) and run (a mapping); given {r!r}")
        if not os.path.isdir(r["host"]):
            module.fail_json(msg=f"{r['host']}: no host bundle directory (for {r['dir']})")
        try:
            c, u = lay_out(r["dir"], r["host"], r["run"], module.check_mode)
        except (OSError, tarfile.TarError, ValueError) as e:
            module.fail_json(msg=f"{r['dir']}: {e}")
        changed |= c
        if u:
            unpacked.append(r["dir"])
    module.exit_json(changed=changed, unpacked=unpacked)


if __name__ == "__main__":
    main()
