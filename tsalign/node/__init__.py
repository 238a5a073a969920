"""Read-only probes of one machine (KVM host or guest), each with a verdict and a fix.

Standard library only, Python >= 3.9: this package also runs on managed nodes through Ansible.
Every probe reads through a :class:`~tsalign.node.fs.Root`, so recorded trees of other machines
can be checked with ``--root``.
"""
