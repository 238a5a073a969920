"""Shared by the tsalign modules: where the tsalign node code lives on the node, and importing it.
(Role module_utils: Ansible ships it with each module as ansible.module_utils.tsalign_loader.)"""

from __future__ import annotations

import sys

TSALIGN_LIB_SPEC = {"tsalign_lib": {"type": "path", "default": "/opt/tsalign/lib"}}


def use_tsalign(module):  # type: ignore[no-untyped-def]
    """Put the node's tsalign package on sys.path, or fail the module saying how to install it."""
    lib = module.params["tsalign_lib"]
    sys.path.insert(0, lib)
    try:
        import tsalign  # noqa: F401
    except ImportError as e:
        module.fail_json(msg=f"tsalign node code not found in {lib} ({e}): apply the tsalign_common role first")
